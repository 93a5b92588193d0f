"""Errors as each API surface shapes them: OpenAI's ``{"error": {"message", "type", "param",
"code"}}`` by default; a surface served under its own path prefix (Anthropic's ``/v1/messages``,
Ollama's ``/api/``) registers its shape with ``error_shape``, and every error on its paths (a bad
body, an unknown route, a missing key, a bug's 500) is answered in it."""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .messages import Failure

log = logging.getLogger(__name__)

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
          404: "invalid_request_error", 405: "invalid_request_error", 408: "invalid_request_error",
          409: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_exceeded",
          500: "server_error", 502: "server_error", 503: "server_error"}

# The one map from a domain failure (``messages.Failure``: the supervisor's, the backends', the
# admission queues') to its HTTP status. A code not listed is the client's fault: 400.
STATUS_OF_FAILURE = {
    "backend_error": 500,  # a bug in a backend: this request failed, the worker lives on
    "worker_crashed": 503,  # the model's worker died (or stalled and was killed) during the request; it restarts
    "model_unavailable": 503,  # loading, restarting, or cooling down after failures
    "server_busy": 503,  # the server's limit of queued generations
    "rate_limit_exceeded": 429,  # the model's own queue is full
}


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.retry_after = status, message, param, code, retry_after

    @classmethod
    def from_failure(cls, failure: Failure) -> OpenAIError:
        """A domain failure as the error the client gets."""
        return cls(STATUS_OF_FAILURE.get(failure.code or "", 400), failure.message, param=failure.param,
                   code=failure.code, retry_after=failure.retry_after)

    def body(self, path: str = "") -> dict:
        """The error body in the shape of the surface that serves ``path``."""
        for prefix, render in _SHAPES.items():
            if path.startswith(prefix):
                return render(self)
        return {"error": {"message": self.message, "type": _TYPES.get(self.status, "server_error"),
                          "param": self.param, "code": self.code}}

    def response(self, path: str = "") -> JSONResponse:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return JSONResponse(self.body(path), status_code=self.status, headers=headers)


ErrorShape = Callable[[OpenAIError], dict]
_SHAPES: dict[str, ErrorShape] = {}  # a path prefix → its surface's error body


def error_shape(*prefixes: str) -> Callable[[ErrorShape], ErrorShape]:
    """Registers how the surface served under ``prefixes`` shapes its errors."""
    def register(render: ErrorShape) -> ErrorShape:
        for prefix in prefixes:
            _SHAPES[prefix] = render
        return render
    return register


async def openai_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OpenAIError)
    return exc.response(request.url.path)


class ClientGone(Exception):
    """The client disconnected before its answer (mid-body, or while its generation ran)."""


async def client_gone_handler(request: Request, exc: Exception) -> Response:
    return Response(status_code=499)  # nginx's "client closed request": nobody reads it; logs and metrics do


async def failure_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Failure)
    return OpenAIError.from_failure(exc).response(request.url.path)


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    message = {404: f"no route {request.method} {request.url.path}",
               405: f"method {request.method} is not allowed on {request.url.path}"}.get(exc.status_code, exc.detail)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return OpenAIError(exc.status_code, message, code=code).response(request.url.path)


class InternalErrors:
    """The last word on a bug in a handler: logged once, inside the request (so with its id), and
    answered with an OpenAI-shaped 500 when no response has started. (Starlette's handler for
    ``Exception`` re-raises after answering, so the server logged each traceback a second time,
    outside the request.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:  # a bug: the client gets a 500, the log gets the traceback
            log.exception("unexpected error on %s %s", scope["method"], scope["path"])
            if not started:
                error = OpenAIError(500, "internal server error; see the server log", code="internal_error")
                response = error.response(scope["path"])
                await response(scope, receive, send)
