"""The server ↔ worker protocol: newline-delimited JSON messages over a Unix socket.

Version 1. Server → worker: ``generate`` {id, request}, ``embed`` {id, inputs}, ``cancel`` {id},
``shutdown``.
Worker → server: ``ready`` {protocol, n_ctx}, ``load_failed`` {message}, ``started`` {id,
prompt_tokens, cached_tokens}, ``logprob`` {id, logprob} (before the token's text), ``delta``
{id, text} (one generated token's text, or the bytes completing a character), ``done`` {id,
finish_reason, prompt_tokens, completion_tokens}, ``embeddings`` {id, vectors, tokens},
``error`` {id, status, code, message, param}. Every message carries ``type``; unknown types are
ignored (forward compatible).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any, BinaryIO

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a prompt near a large context, JSON-escaped


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def iter_messages(stream: BinaryIO) -> Iterator[dict[str, Any]]:
    """Messages from a blocking binary stream (the worker's side), until the peer goes away."""
    try:
        for line in stream:
            yield json.loads(line)
    except (ConnectionError, OSError):
        return


async def read_message(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message, or None when the peer has gone away."""
    try:
        line = await reader.readline()
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        return None
    if not line:
        return None
    return json.loads(line)
