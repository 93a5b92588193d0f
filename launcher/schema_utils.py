"""JSON Schema rewrites that keep a schema's meaning but suit grammar converters better."""

from __future__ import annotations

from typing import Any


def expand_type_lists(schema: Any) -> Any:
    """``{"type": ["string", "null"], "maxLength": 9}`` → ``{"anyOf": [{"type": "string",
    "maxLength": 9}, {"type": "null", "maxLength": 9}]}``: the same instances, but converters
    that turn a type list into bare ``{"type": t}`` alternatives (llama-cpp-python's) no longer
    drop the other keywords. A copy; the input is not changed."""
    if isinstance(schema, list):
        return [expand_type_lists(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    node = {key: value if key in ("enum", "const", "default", "examples") else expand_type_lists(value)
            for key, value in schema.items()}
    kinds = node.get("type")
    if isinstance(kinds, list):
        rest = {key: value for key, value in node.items() if key != "type"}
        return {"anyOf": [{**rest, "type": kind} for kind in kinds]}
    return node
