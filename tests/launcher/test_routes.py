"""One route table: every served route is documented in /openapi.json, and the metrics label
each request with its endpoint's template."""

from __future__ import annotations

import re

from starlette.routing import Route
from starlette.testclient import TestClient

from modelyard.launcher.app import create_app
from modelyard.launcher.galleries import Galleries
from modelyard.launcher.installer import Installer

from .fakes import FakePool, make_plan


def _app(tmp_path):
    plan = make_plan()
    installer = Installer(tmp_path / "models", Galleries([], {}), {})
    return create_app(plan, pool=FakePool(plan), installer=installer)


def test_every_served_route_is_in_openapi_with_its_methods(tmp_path) -> None:
    app = _app(tmp_path)
    with TestClient(app) as client:
        paths = client.get("/openapi.json").json()["paths"]
    served = [route for route in app.routes if isinstance(route, Route)]
    assert len(served) >= 20
    for route in served:
        template = re.sub(r"{(\w+):\w+}", r"{\1}", route.path)
        documented = paths.get(template) or paths.get(f"/v1{template}")  # /v1 paths are also served bare
        assert documented is not None, f"{route.path} is served but not in /openapi.json"
        assert set(route.methods) - {"HEAD"} <= {m.upper() for m in documented if m != "parameters"}, route.path
    for path in ("/v1/embeddings", "/models/apply", "/metrics", "/readyz"):
        assert path in paths
    assert paths["/healthz"]["get"]["security"] == []  # the probes need no key


def test_metrics_label_requests_by_their_endpoint(tmp_path) -> None:
    with TestClient(_app(tmp_path)) as client:
        client.get("/models/jobs/0123")
        client.get("/v1/models/chat")
        client.get("/no/such/path")
        text = client.get("/metrics").text
    assert 'route="/models/jobs/{uuid}",status="404"' in text
    assert 'model="",route="/models/{id}",status="200"' in text
    assert 'route="other",status="404"' in text
