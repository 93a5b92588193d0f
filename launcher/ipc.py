"""The server ↔ worker channel: newline-delimited JSON messages over a Unix socket. What the
messages hold, and their version, is ``launcher/messages.py``'s."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any, BinaryIO

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
