"""The web console's files and the plan endpoint it reads, over the fake backend (the browser
tests are tests/e2e/test_console.py)."""

from __future__ import annotations

from starlette.testclient import TestClient

from modelyard.launcher.app import create_app

from .fakes import FakePool, make_plan


def _client(**options) -> TestClient:
    plan = make_plan()
    return TestClient(create_app(plan, pool=FakePool(plan), **options))


def test_the_console_is_public_and_everything_it_reads_needs_the_key() -> None:
    client = _client(api_keys=["s3cret"])
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert '<script src="/console/console.js" defer></script>' in page.text
    assert client.get("/console/console.js").headers["content-type"] == "text/javascript; charset=utf-8"
    assert client.get("/console/console.css").status_code == 200
    for path in ("/v1/models", "/v1/models/chat/plan", "/metrics", "/models/available", "/console/../app.py"):
        assert client.get(path).status_code == 401, path


def test_a_models_plan_says_where_each_value_came_from() -> None:
    client = _client()
    plan = client.get("/v1/models/chat/plan").json()
    assert plan["model"]["backend"] == "llama-cpp" and plan["model"]["name"] == "chat"
    assert plan["origins"]["output.stopwords"] == "models/m.yaml:5:14"
    assert client.get("/v1/models/nope/plan").json()["error"]["code"] == "model_not_found"


def test_no_console_serves_no_page_and_the_document_says_what_each_page_is() -> None:
    assert _client(console=False).get("/").status_code == 404
    document = _client().get("/openapi.json").json()
    assert list(document["paths"]["/"]["get"]["responses"]["200"]["content"]) == ["text/html"]
    assert document["paths"]["/"]["get"]["security"] == []
