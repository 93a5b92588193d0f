"""Locations inside a config tree, and how users see them (``qwen.parameters.temperature``)."""

from __future__ import annotations

import re
from typing import Any

Path = tuple[str | int, ...]


def format_path(path: Path) -> str:
    """``('parameters', 'temperature')`` → ``parameters.temperature``; indexes as ``[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._:+@-]*$")


def model_label(model: Any, fallback: str) -> str:
    name = model.get("name") if isinstance(model, dict) else None
    return name if isinstance(name, str) and SAFE_NAME.match(name) else fallback


def display_path(document: Any, path: Path, fallback: str) -> str:
    """Prefix a document path with the model it belongs to.

    A file holds one model (a mapping) or a list of them; users think in model names, so
    ``[1].backend`` in a list becomes ``qwen.backend`` when item 1 is named ``qwen``.
    ``fallback`` names a model without a ``name`` (the file's stem).
    """
    if isinstance(document, list) and path and isinstance(path[0], int):
        item = document[path[0]] if path[0] < len(document) else None
        label = model_label(item, f"{fallback}[{path[0]}]")
        rest = path[1:]
    elif isinstance(document, dict):
        label = model_label(document, fallback)
        rest = path
    else:
        return format_path(path)
    tail = format_path(rest)
    if not tail:
        return label
    return f"{label}{tail}" if tail.startswith("[") else f"{label}.{tail}"
