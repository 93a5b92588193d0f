"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}`` for every failure."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

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

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": _TYPES.get(self.status, "server_error"),
                          "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


async def openai_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OpenAIError)
    return exc.response()


async def failure_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Failure)
    return OpenAIError.from_failure(exc).response()


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    message = {404: f"no route {request.method} {request.url.path}",
               405: f"method {request.method} is not allowed on {request.url.path}"}.get(exc.status_code, exc.detail)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return OpenAIError(exc.status_code, message, code=code).response()


async def unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return OpenAIError(500, "internal server error; see the server log", code="internal_error").response()
