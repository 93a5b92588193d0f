"""API keys, request ids and CORS: ASGI middleware around the app.

Keys are compared with ``hmac.compare_digest`` against every configured key, without stopping at
a match, so the time taken says nothing about how much of a guess was right or which key it
matched. ``/healthz`` and ``/readyz`` stay public for probes. With keys on, the bearer token is
the key and no longer names a model (model selection uses the body's ``model``).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import OpenAIError
from .logs import REQUEST_ID

access_log = logging.getLogger("modelyard.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class ApiKeys:
    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = [key.encode() for key in keys if key]

    def __bool__(self) -> bool:
        return bool(self._keys)

    def accepts(self, presented: str) -> bool:
        candidate = presented.encode()
        matched = False
        for key in self._keys:  # every key, every time: constant time in the guess
            matched |= hmac.compare_digest(key, candidate)
        return matched


def presented_key(headers: dict[bytes, bytes]) -> str:
    authorization = headers.get(b"authorization", b"").decode("latin-1")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return headers.get(b"x-api-key", b"").decode("latin-1").strip()


class ApiKeyMiddleware:
    """401 for a request without one of ``keys``, except on ``public`` paths (the probes)."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, public: frozenset[str]) -> None:
        self.app = app
        self.keys = keys
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        if self.keys.accepts(presented_key(dict(scope["headers"]))):
            await self.app(scope, receive, send)
            return
        error = OpenAIError(401, "invalid or missing API key (send Authorization: Bearer <key>, or x-api-key: <key>)",
                            code="invalid_api_key")
        body = json.dumps(error.body(scope["path"]))
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body.encode()})


class RequestIdMiddleware:
    """Echo the client's ``X-Request-Id`` (or a new one) on the response, tag the request's log
    records with it, and write one access-log line per request (status, duration)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = REQUEST_ID.set(request_id)  # every log record of this request carries it
        started, status = time.monotonic(), 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            # The decoded path may hold %0A and other controls: escaped, it cannot forge a log line.
            path = scope["path"].encode("unicode_escape").decode("ascii")
            access_log.info("%s %s %d %.0f ms", scope["method"], path, status, 1000 * (time.monotonic() - started),
                            extra={"method": scope["method"], "path": path, "status": status,
                                   "duration_ms": round(1000 * (time.monotonic() - started), 1)})
            REQUEST_ID.reset(token)
