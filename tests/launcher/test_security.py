"""API keys on every route but the probes, constant-time comparison, request ids, CORS."""

from __future__ import annotations

import hmac

import pytest
from starlette.testclient import TestClient

from modelyard.compiler.plan import LaunchPlan
from modelyard.launcher.app import create_app
from modelyard.launcher.security import ApiKeys
from modelyard.launcher.server import KeySourceError, resolve_api_keys

from .fakes import FakePool, make_plan

KEY = "sk-test-key"
BODY = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
ROUTES = [("GET", "/v1/models", None), ("GET", "/models", None), ("GET", "/v1/models/chat", None),
          ("POST", "/v1/chat/completions", BODY), ("POST", "/v1/completions", {"model": "chat", "prompt": "x"}),
          ("POST", "/v1/edits", {"model": "chat", "instruction": "x"}), ("POST", "/chat/completions", BODY)]


@pytest.fixture
def client():
    plan = make_plan()
    with TestClient(create_app(plan, pool=FakePool(plan), api_keys=[KEY, "sk-other"])) as test_client:
        yield test_client


@pytest.mark.parametrize("method,path,body", ROUTES)
def test_every_route_needs_a_key(client, method, path, body) -> None:
    for headers in ({}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": f"Basic {KEY}"}):
        response = client.request(method, path, json=body, headers=headers)
        assert response.status_code == 401
        assert response.json() == {"error": {
            "message": "invalid or missing API key (send Authorization: Bearer <key>, or x-api-key: <key>)",
            "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
    assert client.request(method, path, json=body, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert client.request(method, path, json=body, headers={"X-Api-Key": "sk-other"}).status_code == 200


def test_probes_are_public(client) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_with_keys_the_bearer_token_no_longer_names_a_model() -> None:
    """Without keys a bearer token may name the model (LocalAI's way); with keys it is the key,
    even when a model has the key's name: the request gets the default model."""
    plan = make_plan()
    with TestClient(create_app(plan, pool=FakePool(plan), api_keys=["plain"])) as keyed:
        response = keyed.post("/v1/chat/completions", json={"messages": BODY["messages"]},
                              headers={"Authorization": "Bearer plain"})
        assert response.status_code == 200 and response.json()["model"] == "chat"
    with TestClient(create_app(plan, pool=FakePool(plan))) as open_client:
        response = open_client.post("/v1/chat/completions", json={"messages": BODY["messages"]},
                                    headers={"Authorization": "Bearer plain"})
        assert response.json()["model"] == "plain"


def test_keys_are_compared_in_constant_time(monkeypatch) -> None:
    calls = []

    def spy(a, b):
        calls.append((a, b))
        return a == b

    monkeypatch.setattr(hmac, "compare_digest", spy)
    keys = ApiKeys(["first", "second", "third"])
    assert keys.accepts("first") and not keys.accepts("nope")
    assert len(calls) == 6  # every key is compared, even after a match


def test_request_id_is_echoed_or_made(client) -> None:
    given = client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = client.get("/healthz", headers={"X-Request-Id": "bad id with spaces"})
    assert len(made.headers["x-request-id"]) == 32


def test_cors_is_off_by_default_and_configurable() -> None:
    plan = make_plan()
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    with TestClient(create_app(plan, pool=FakePool(plan))) as client:
        assert "access-control-allow-origin" not in client.options("/v1/chat/completions", headers=preflight).headers
    open_plan = plan.model_copy(update={"server": plan.server.model_copy(update={"cors_origins": ("https://app.example",)})})
    with TestClient(create_app(open_plan, pool=FakePool(open_plan), api_keys=[KEY])) as client:
        response = client.options("/v1/chat/completions", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "https://app.example"


def test_key_sources(tmp_path) -> None:
    plan = LaunchPlan()
    env_plan = plan.model_copy(update={"server": plan.server.model_copy(update={"api_key_env": "KEYS"})})
    assert resolve_api_keys(env_plan, {"KEYS": "a, b"}) == ["a", "b"]
    for holds_none in ({}, {"KEYS": ""}, {"KEYS": ","}, {"KEYS": " , ,"}):  # configured but no key: never start open
        with pytest.raises(KeySourceError, match=r"\$KEYS, which holds no key"):
            resolve_api_keys(env_plan, holds_none)
    with pytest.raises(KeySourceError, match="other than printable ASCII"):
        resolve_api_keys(env_plan, {"KEYS": "good, clé"})
    (tmp_path / "keys").write_text("# team keys\nk1\n\nk2\n")
    file_plan = plan.model_copy(update={"server": plan.server.model_copy(update={"api_key_file": str(tmp_path / "keys")})})
    assert resolve_api_keys(file_plan, {}) == ["k1", "k2"]
    assert resolve_api_keys(plan, {"KEYS": "ignored"}) == []
