"""Schema-driven fuzzing of the served API (schemathesis, from /openapi.json), over a fake pool:
whatever a client sends, no 500 and no response that breaks the OpenAI error shape."""

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
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str) and error["message"]
