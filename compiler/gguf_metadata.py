"""The few GGUF header facts the compiler uses, read with the ``gguf`` package (no llama.cpp)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GgufMetadata:
    architecture: str | None = None
    context_length: int | None = None
    chat_template: str | None = None
    name: str | None = None


def read_gguf_metadata(path: str) -> GgufMetadata | None:
    """Header facts, or None when the file is not a readable GGUF file."""
    try:
        from gguf import GGUFReader  # imported lazily: numpy-backed, only needed for GGUF files
    except ImportError:
        return None
    try:
        reader = GGUFReader(path, "r")
    except Exception:  # noqa: BLE001 - any parse failure means "not a usable GGUF file"
        return None
    fields = {name: field for name, field in reader.fields.items()}

    def value(key: str):
        field = fields.get(key)
        if field is None or not field.data:
            return None
        try:
            return field.contents()
        except Exception:  # noqa: BLE001 - a malformed field is treated as absent
            return None

    architecture = value("general.architecture")
    context = value(f"{architecture}.context_length") if isinstance(architecture, str) else None
    template = value("tokenizer.chat_template")
    name = value("general.name")
    return GgufMetadata(
        architecture=architecture if isinstance(architecture, str) else None,
        context_length=int(context) if isinstance(context, int) else None,
        chat_template=template if isinstance(template, str) else None,
        name=name if isinstance(name, str) else None,
    )
