"""The few GGUF header facts the compiler uses, read straight from the file's key-value section.

The ``gguf`` package's ``GGUFReader`` builds every field, vocabulary included, in Python: 27 s
for Gemma 3's 262k-token vocabulary on this machine. We need four scalar keys, so this reader
walks the header (spec: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md) and skips
arrays without building them: milliseconds.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass

_MAGIC = b"GGUF"
# value type → struct format of one scalar element
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_LENGTH = struct.Struct("<Q").unpack_from  # a string's byte count
_WANTED_SUFFIXES = ("general.architecture", "general.name", "general.size_label", "general.file_type",
                    "tokenizer.chat_template", ".context_length")
# llama.cpp's llama_ftype: the quantization a GGUF file's weights mostly have (general.file_type).
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
              12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
              19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
              26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
              36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4"}


@dataclass(frozen=True)
class GgufMetadata:
    architecture: str | None = None
    context_length: int | None = None
    chat_template: str | None = None
    name: str | None = None
    size_label: str | None = None  # "270M", "8x7B"
    quantization: str | None = None  # "Q4_K_M" (general.file_type)


class _Malformed(Exception):
    pass


def read_gguf_metadata(path: str) -> GgufMetadata | None:
    """Header facts, or None when the file is not a readable GGUF file."""
    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            values = _read_header(data)
    except (OSError, ValueError, _Malformed, struct.error):
        return None
    architecture = values.get("general.architecture")
    if not isinstance(architecture, str):
        architecture = None
    context = values.get(f"{architecture}.context_length") if architecture else None
    template = values.get("tokenizer.chat_template")
    name = values.get("general.name")
    size_label = values.get("general.size_label")
    file_type = values.get("general.file_type")
    return GgufMetadata(
        architecture=architecture,
        context_length=context if isinstance(context, int) and not isinstance(context, bool) else None,
        chat_template=template if isinstance(template, str) else None,
        name=name if isinstance(name, str) else None,
        size_label=size_label if isinstance(size_label, str) else None,
        quantization=FILE_TYPES.get(file_type) if isinstance(file_type, int) else None,
    )


def _read_header(data: mmap.mmap) -> dict[str, object]:
    if data[:4] != _MAGIC:
        raise _Malformed("not a GGUF file")
    version = struct.unpack_from("<I", data, 4)[0]
    if version < 2:
        raise _Malformed("GGUF v1 is not supported")
    kv_count = struct.unpack_from("<Q", data, 16)[0]
    offset = 24
    values: dict[str, object] = {}
    for _ in range(kv_count):
        key, offset = _string(data, offset)
        value_type = struct.unpack_from("<I", data, offset)[0]
        offset += 4
        if key.endswith(_WANTED_SUFFIXES) and value_type != _ARRAY:
            values[key], offset = _value(data, offset, value_type)
        else:
            offset = _skip(data, offset, value_type)
    return values


def _string(data: mmap.mmap, offset: int) -> tuple[str, int]:
    length = struct.unpack_from("<Q", data, offset)[0]
    start = offset + 8
    if start + length > len(data):
        raise _Malformed("string runs past the end of the file")
    return data[start:start + length].decode("utf-8", errors="replace"), start + length


def _value(data: mmap.mmap, offset: int, value_type: int) -> tuple[object, int]:
    if value_type == _STRING:
        return _string(data, offset)
    fmt = _SCALARS.get(value_type)
    if fmt is None:
        raise _Malformed(f"unknown value type {value_type}")
    return struct.unpack_from(fmt, data, offset)[0], offset + struct.calcsize(fmt)


def _skip(data: mmap.mmap, offset: int, value_type: int) -> int:
    if value_type == _STRING:
        return offset + 8 + struct.unpack_from("<Q", data, offset)[0]
    if value_type == _ARRAY:
        element_type, count = struct.unpack_from("<IQ", data, offset)
        offset += 12
        if element_type in _SCALARS:
            return offset + count * struct.calcsize(_SCALARS[element_type])
        if element_type == _STRING:  # the vocabulary: 262k strings for Gemma 3, so a tight loop
            for _ in range(count):
                offset += 8 + _LENGTH(data, offset)[0]
            return offset
        for _ in range(count):
            offset = _skip(data, offset, element_type)
        return offset
    fmt = _SCALARS.get(value_type)
    if fmt is None:
        raise _Malformed(f"unknown value type {value_type}")
    return offset + struct.calcsize(fmt)
