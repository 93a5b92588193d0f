"""The served routes, listed once: each endpoint module (``app.py``, ``gallery_api.py``) owns its
``Endpoint``s; Starlette's routes, the metrics' route labels and ``/openapi.json`` are all
derived from the same list, so they cannot drift apart."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, compile_path

_CONVERTER = re.compile(r"{(\w+):\w+}")


@dataclass(frozen=True)
class Operation:
    """What ``/openapi.json`` says of one endpoint (``openapi.py`` renders it)."""

    summary: str
    request: type[BaseModel] | None = None  # the JSON body it validates with
    streams: bool = False  # answers text/event-stream when the body asks to
    response: dict | None = None  # the 200 body's JSON Schema; None: an object
    errors: tuple[str, ...] = ("401",)  # error statuses it answers (besides 401 for a missing key)
    public: bool = False  # served without an API key
    media_type: str = "application/json"  # of the 200 response


@dataclass(frozen=True)
class Endpoint:
    path: str  # a Starlette path template, e.g. "/models/{id:path}"
    handler: Callable[[Request], Awaitable[Response]]
    operation: Operation
    methods: tuple[str, ...] = ("GET",)
    versioned: bool = True  # served under /v1 (its documented path) and also without it

    @property
    def template(self) -> str:
        """The path as OpenAPI and the metrics write it: ``/models/{id}``."""
        return _CONVERTER.sub(r"{\1}", self.path)

    def served_paths(self) -> tuple[str, ...]:
        return (f"/v1{self.path}", self.path) if self.versioned else (self.path,)

    def documented_path(self) -> str:
        return f"/v1{self.template}" if self.versioned else self.template


def starlette_routes(endpoints: Iterable[Endpoint]) -> list[Route]:
    """In the order given: an earlier path wins where two match (``/models/apply`` before
    ``/models/{id}``)."""
    return [Route(path, endpoint.handler, methods=list(endpoint.methods))
            for endpoint in endpoints for path in endpoint.served_paths()]


class RouteLabels:
    """A request path → its endpoint's template (``/models/{id}``), ``other`` when no endpoint
    serves it: the metrics' route label, bounded by the route table."""

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        self._patterns = [(compile_path(path)[0], endpoint.template)
                          for endpoint in endpoints for path in endpoint.served_paths()]

    def __call__(self, path: str) -> str:
        for pattern, template in self._patterns:
            if pattern.match(path):
                return template
        return "other"
