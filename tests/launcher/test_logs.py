"""Structured logs: every request gets an access line carrying its request id."""

from __future__ import annotations

import json
import logging

from starlette.testclient import TestClient

from modelyard.launcher.app import create_app
from modelyard.launcher.logs import JsonFormatter, RequestIdFilter

from .fakes import FakePool, make_plan


def test_access_lines_carry_the_request_id_and_format_as_json(caplog) -> None:
    plan = make_plan()
    caplog.set_level(logging.INFO, logger="modelyard.access")
    with TestClient(create_app(plan, pool=FakePool(plan))) as client:
        given = client.post("/v1/completions", json={"model": "plain", "prompt": "x"},
                            headers={"X-Request-Id": "trace-42"})
        made = client.get("/v1/models/nope")
    assert given.headers["x-request-id"] == "trace-42" and len(made.headers["x-request-id"]) == 32
    records = [r for r in caplog.records if r.name == "modelyard.access"]
    assert [(r.method, r.path, r.status) for r in records] == [("POST", "/v1/completions", 200),
                                                                ("GET", "/v1/models/nope", 404)]
    record = records[0]
    RequestIdFilter().filter(record)  # outside a request, the filter finds no id
    assert record.request_id == "-"
    record.request_id = "trace-42"  # as the handler's filter set it while the request ran
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "trace-42" and line["status"] == 200 and line["level"] == "info"
    assert line["logger"] == "modelyard.access" and line["message"].startswith("POST /v1/completions 200")
    assert isinstance(line["duration_ms"], float)


def test_records_made_inside_a_request_get_its_id(caplog) -> None:
    plan = make_plan()
    caplog.set_level(logging.INFO, logger="modelyard.access")
    seen: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.request_id)

    handler = Capture()
    handler.addFilter(RequestIdFilter())
    logging.getLogger("modelyard.access").addHandler(handler)
    try:
        with TestClient(create_app(plan, pool=FakePool(plan))) as client:
            client.get("/v1/models", headers={"X-Request-Id": "abc-1"})
    finally:
        logging.getLogger("modelyard.access").removeHandler(handler)
    assert seen == ["abc-1"]


def test_workers_are_handed_the_servers_log_level_and_format() -> None:
    from modelyard.launcher.logs import configure_logging, current_settings

    root = logging.getLogger()
    saved = (root.level, root.handlers[:])
    try:
        configure_logging("warning", "json")
        assert current_settings() == (logging.WARNING, "json")
        configure_logging("debug", "text")
        assert current_settings() == (logging.DEBUG, "text")
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]


def test_a_newline_in_the_path_cannot_forge_an_access_line(caplog) -> None:
    plan = make_plan()
    caplog.set_level(logging.INFO, logger="modelyard.access")
    with TestClient(create_app(plan, pool=FakePool(plan))) as client:
        client.get("/v1/models/x%0A2026-01-01 INFO forged")
    [record] = [r for r in caplog.records if r.name == "modelyard.access"]
    assert "\n" not in record.getMessage() and record.path == "/v1/models/x\\n2026-01-01 INFO forged"
