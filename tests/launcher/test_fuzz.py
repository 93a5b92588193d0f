"""Schema-driven fuzzing of the served API (schemathesis, from /openapi.json), over a fake pool:
whatever a client sends, no 500 and no response that breaks its surface's error shape (OpenAI's,
Anthropic's on /v1/messages, Ollama's on /api)."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402

from modelyard.launcher.app import create_app  # noqa: E402

from .fakes import FakePool, make_plan  # noqa: E402

PLAN = make_plan()
APP = create_app(PLAN, pool=FakePool(PLAN))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case) -> None:
    response = case.call()
    assert response.status_code < 500, response.text
    if response.status_code < 400:
        return
    body = response.json()
    path = case.formatted_path
    if path.startswith("/api/"):  # Ollama's
        assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"]
    elif path.startswith("/v1/messages"):  # Anthropic's
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"} and body["error"]["message"]
    else:
        error = body["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str) and error["message"]
