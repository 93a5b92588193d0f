"""API keys, request ids and CORS: ASGI middleware around the app.

Keys are compared with ``hmac.compare_digest`` against every configured key, without stopping at
a match, so the time taken says nothing about how much of a guess was right or which key it
matched. ``/healthz`` and ``/readyz`` stay public for probes. With keys on, the bearer token is
the key and no longer names a model (model selection uses the body's ``model``).
"""

from __future__ import annotations

import hmac
import json
import re
import uuid
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
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
    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        if self.keys.accepts(presented_key(dict(scope["headers"]))):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": {"message": "invalid or missing API key (send Authorization: Bearer <key>)",
                                     "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}})
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body.encode()})


class RequestIdMiddleware:
    """Echo the client's ``X-Request-Id`` (or a new one) on the response, for log correlation."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_id)
