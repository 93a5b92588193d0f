"""The raw bytes of a Hugging Face tokenizer's tokens, for logprobs' ``bytes``.

A token that holds part of a UTF-8 character (byte-level BPE splits "東" into three tokens)
decodes to "" or U+FFFD on its own, so ``decode(token).encode()`` loses it; OpenAI's ``bytes``
exist to carry exactly those. A token's string in the vocabulary says what its bytes are, in
one of three spellings: byte-level BPE (GPT-2, Llama 3, Qwen: each byte a printable character,
space as "Ġ"), SentencePiece byte fallback ("<0xE6>") and SentencePiece words (space as "▁").
"""

from __future__ import annotations

import functools
import re
from typing import Any

_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@functools.cache
def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's printable stand-in for each byte (``bytes_to_unicode``), inverted."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    stand_ins, extra = {b: b for b in printable}, 0
    for byte in range(256):
        if byte not in stand_ins:
            stand_ins[byte] = 256 + extra
            extra += 1
    return {chr(char): byte for byte, char in stand_ins.items()}


class TokenBytes:
    """``tokenizer``'s tokens as bytes; the spelling is found once, from how it writes " a"."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        probe = tokenizer.convert_ids_to_tokens(tokenizer.encode(" a a", add_special_tokens=False))
        self._byte_level = any(isinstance(token, str) and "Ġ" in token for token in probe)

    def __call__(self, token_id: int) -> list[int]:
        piece = self._tokenizer.convert_ids_to_tokens(token_id)
        if not isinstance(piece, str):  # an id the vocabulary does not have: what it decodes to
            return list(self._tokenizer.decode([token_id]).encode())
        if self._byte_level:
            decoder = _byte_level_decoder()
            if all(char in decoder for char in piece):
                return [decoder[char] for char in piece]
            return list(piece.encode())  # an added token, written as itself
        if match := _BYTE_FALLBACK.fullmatch(piece):
            return [int(match.group(1), 16)]
        return list(piece.replace("▁", " ").encode())
