"""Bounds on what a request may ask the grammar engines to enforce, checked before a worker sees it.

llama.cpp turns a JSON Schema (through llama-cpp-python's converter) or a GBNF grammar into
grammar rules, expanding every repetition count into rules of its own: ``maxLength: 100000``
overflowed the worker's stack (SIGSEGV), ``maxLength: 1e9`` grew it to 20 GB, and a schema nested
hundreds deep recursed past Python's limit. Past these bounds a request is a 400 naming the
bound, and the model's worker, serving everyone else, never sees it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import OpenAIError
from .gbnf import LITERALS, nul_match

MAX_REPEAT = 4096  # the largest repetition count: string lengths, array and object sizes, GBNF {m,n}
MAX_DEPTH = 64  # how deeply a schema may nest
MAX_SCHEMA_CHARS = 256 * 1024  # a schema's JSON text
MAX_GRAMMAR_CHARS = 64 * 1024  # a GBNF grammar's text
COUNT_KEYWORDS = ("maxLength", "minLength", "maxItems", "minItems", "maxProperties", "minProperties", "minContains",
                  "maxContains")

_REPEAT = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


def check_json_schema(schema: Any, param: str, *, counts: bool = True) -> None:
    """400 (``param``) for a schema past the bounds (with ``counts`` false: only its depth, before
    anything recursive reads it); the schema itself is not changed."""
    if schema is None:
        return
    # Depth first, without recursion (a schema nested past Python's own limit is one of the
    # inputs), and before anything that recurses, such as measuring its JSON text.
    stack: list[tuple[Any, int, str]] = [(schema, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        if depth > MAX_DEPTH:
            raise OpenAIError(400, f"{param}: the JSON Schema nests more than {MAX_DEPTH} levels deep", param=param)
        if isinstance(node, dict):
            for keyword in COUNT_KEYWORDS if counts else ():
                value = node.get(keyword)
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                if not 0 <= value <= MAX_REPEAT:
                    raise OpenAIError(400, f"{param}: {keyword} {value} at {path or '/'} is outside 0..{MAX_REPEAT}, "
                                           "the sizes a grammar here enforces", param=param)
            stack += [(value, depth + 1, f"{path}/{key}") for key, value in node.items()]
        elif isinstance(node, list):
            stack += [(value, depth + 1, f"{path}/{index}") for index, value in enumerate(node)]
    if counts and len(json.dumps(schema)) > MAX_SCHEMA_CHARS:
        raise OpenAIError(400, f"{param}: the JSON Schema is longer than {MAX_SCHEMA_CHARS} characters", param=param)


def check_grammar(grammar: str | None, param: str = "grammar") -> None:
    """400 for a GBNF grammar past the bounds (its length, its repetition counts) or one that
    can match the NUL character."""
    if grammar is None:
        return
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise OpenAIError(400, f"{param}: the grammar is longer than {MAX_GRAMMAR_CHARS} characters", param=param)
    if (where := nul_match(grammar)) is not None:
        raise OpenAIError(400, f"{param}: {where} can match the NUL character, which llama.cpp cannot sample "
                               "(it aborts the model's process)", param=param)
    for match in _REPEAT.finditer(LITERALS.sub('""', grammar)):
        if any(n and (len(n) > 9 or int(n) > MAX_REPEAT) for n in match.groups()):
            raise OpenAIError(400, f"{param}: the repetition {match.group(0)} counts past {MAX_REPEAT}", param=param)
