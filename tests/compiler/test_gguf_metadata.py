"""GGUF headers are read without trusting their lengths and counts (#17: hostile headers)."""

from __future__ import annotations

import struct
import time

import pytest

from modelyard.compiler.gguf_metadata import read_gguf_metadata


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _header(kv_count: int) -> bytes:
    return b"GGUF" + struct.pack("<I", 3) + struct.pack("<Q", 0) + struct.pack("<Q", kv_count)


@pytest.mark.parametrize("body", [
    _header(3) + _string("general.architecture") + struct.pack("<I", 8) + struct.pack("<Q", 2**63) + b"x" * 10,
    _header(3) + _string("tokenizer.ggml.tokens") + struct.pack("<I", 9) + struct.pack("<IQ", 8, 2**62) + b"\0" * 64,
    _header(2**62) + b"\0" * 64,
], ids=["string-length-2^63", "array-count-2^62", "kv-count-2^62"])
def test_a_hostile_header_is_not_a_readable_gguf_and_is_refused_at_once(tmp_path, body) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(body)
    started = time.monotonic()
    assert read_gguf_metadata(str(path)) is None
    assert time.monotonic() - started < 2


def test_a_small_valid_header_reads(tmp_path) -> None:
    body = (_header(2) + _string("general.architecture") + struct.pack("<I", 8) + _string("llama")
            + _string("llama.context_length") + struct.pack("<I", 4) + struct.pack("<I", 2048))
    path = tmp_path / "m.gguf"
    path.write_bytes(body)
    metadata = read_gguf_metadata(str(path))
    assert metadata is not None and (metadata.architecture, metadata.context_length) == ("llama", 2048)
