"""Connection limits below the app: uvicorn closes idle keep-alive connections, but not one that
never sends a complete request head, and its concurrency limit answers a bare 503 to everyone,
``/healthz`` included, once 1,024 idle sockets fill it. ``guarded_protocol`` is uvicorn's
httptools protocol with:

- a request-head timeout: a connection whose head is not complete ``header_timeout_s`` after it
  opened (or after its first byte of a next request) gets a 408 and is closed (slowloris);
- a limit on the request head's size (``MAX_HEAD_BYTES``, headers included): a larger one is
  answered 431 and the connection closed;
- a limit on open connections per client address and in all, answered at accept with an
  OpenAI-shaped 429 / 503 and ``Retry-After``, so one client cannot lock out the others.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import get_remote_addr

MAX_HEAD_BYTES = 64 * 1024  # request line and headers; uvicorn's h11 protocol allows 16 KiB
_REASONS = {408: "Request Timeout", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
            503: "Service Unavailable"}
_TYPES = {408: "invalid_request_error", 429: "rate_limit_exceeded", 431: "invalid_request_error",
          503: "server_error"}


def _response(status: int, message: str, code: str, retry_after: int | None = None) -> bytes:
    body = json.dumps({"error": {"message": message, "type": _TYPES[status], "param": None, "code": code}}).encode()
    headers = [f"HTTP/1.1 {status} {_REASONS[status]}", "content-type: application/json",
               f"content-length: {len(body)}", "connection: close"]
    if retry_after is not None:
        headers.append(f"retry-after: {retry_after}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1") + body


def guarded_protocol(header_timeout_s: float, max_connections: int, max_per_client: int) -> type:
    """An ``HttpToolsProtocol`` subclass with these limits (its counts belong to one server)."""
    per_client: Counter[str] = Counter()
    open_connections = 0

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _peer: str | None = None
        _head_timer: asyncio.TimerHandle | None = None
        _awaiting_head = True
        _head_bytes = 0  # received since the current request began, while its head is incomplete
        _discarding = False  # refused mid-head: what else arrives is dropped until the socket closes

        def connection_made(self, transport: Any) -> None:
            nonlocal open_connections
            peer = get_remote_addr(transport)
            host = peer[0] if peer else ""
            refusal = None
            if open_connections >= max_connections:
                refusal = _response(503, f"the server holds {max_connections} connections already; retry shortly",
                                    "too_many_connections", retry_after=1)
            elif per_client[host] >= max_per_client:
                refusal = _response(429, f"more than {max_per_client} open connections from {host}; close idle "
                                         "ones or reuse them", "too_many_connections", retry_after=1)
            if refusal is not None:
                self.transport = transport  # connection_lost closes it
                transport.write(refusal)
                transport.close()
                return
            self._peer = host
            per_client[host] += 1
            open_connections += 1
            super().connection_made(transport)
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            nonlocal open_connections
            self._disarm_head_timer()
            if self._peer is not None:
                per_client[self._peer] -= 1
                if not per_client[self._peer]:
                    del per_client[self._peer]
                open_connections -= 1
                self._peer = None
                super().connection_lost(exc)
            else:  # refused at accept: uvicorn never saw it
                self.connections.discard(self)

        def data_received(self, data: bytes) -> None:
            if self._discarding:
                return
            awaiting = self._awaiting_head
            if awaiting and self._head_timer is None:  # the first byte of the next request
                self._arm_head_timer()
            super().data_received(data)  # completes the head (on_headers_complete) if this data ends it
            if awaiting and self._awaiting_head:  # still no complete head: count it (a body never is)
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    # The client is still sending: closing now would reset the connection before it
                    # reads the answer, so the rest is read and dropped for a moment first.
                    self._discarding = True
                    self._disarm_head_timer()
                    self.transport.write(_response(431, f"the request head is larger than {MAX_HEAD_BYTES} bytes",
                                                   "headers_too_large"))
                    self.loop.call_later(1.0, self.transport.close)

        def on_headers_complete(self) -> None:
            self._awaiting_head = False
            self._head_bytes = 0
            self._disarm_head_timer()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            self._awaiting_head = True  # uvicorn's keep-alive timeout covers the idle time until then
            super().on_response_complete()

        def _arm_head_timer(self) -> None:
            self._head_timer = self.loop.call_later(header_timeout_s, self._head_timed_out)

        def _disarm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self._awaiting_head:
                self._refuse(_response(408, f"no complete request head within {header_timeout_s:g} s",
                                       "request_timeout"))

        def _refuse(self, response: bytes) -> None:
            self._disarm_head_timer()
            if not self.transport.is_closing():
                self.transport.write(response)
                self.transport.close()

    return GuardedHttpToolsProtocol
