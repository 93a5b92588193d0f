"""The ways models write tool calls, as LocalAI's gallery templates ask for them.

A reply is read as calls only when it is entirely calls in one of these syntaxes (what a
template asks the model to write), never when a call merely appears inside prose:

* JSON: ``{"name": ..., "arguments": {...}}`` or a list of them (``parameters`` for
  ``arguments`` too: Llama 3.x's JSON tool format), optionally after ``<|python_tag|>``;
* ``<tool_call>{...}</tool_call>`` blocks (Hermes, Qwen), optionally after Hermes 2 Pro's
  ``<scratchpad>...</scratchpad>``;
* ``<function=NAME>{...}</function>`` (``llama3.1-instruct``, 168 gallery entries; LocalAI's AIO
  ``response_regex``), one or more;
* ``[TOOL_CALLS] [{...}]`` (``mistral-0.3``) and Mistral's newer ``[TOOL_CALLS]NAME[ARGS]{...}``;
* pythonic ``[name(key=value, ...)]`` (LocalAI's AIO ``gpt-4`` function template, Llama 3.2's
  pythonic format), arguments as Python literals (read with ``ast.literal_eval``: nothing runs).

``parse`` gives ``(name, arguments)`` pairs; checking them against the offered tools is the
caller's (``tools.parse_calls``). ``may_open_calls`` says whether text seen so far could still
become calls, so a stream holds it back until it knows.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from typing import Any

Calls = list[tuple[Any, Any]]  # (name, arguments) as written: checked by the caller

_PYTHON_TAG = "<|python_tag|>"
_SCRATCHPAD = re.compile(r"^<scratchpad>.*?</scratchpad>\s*", re.DOTALL)
_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
_FUNCTION_TAG = re.compile(r"<function=([\w.\-]+)>\s*(.*?)\s*</function>", re.DOTALL)
_MISTRAL_ARGS = re.compile(r"([\w.\-]+)\[ARGS\]")
_PYTHONIC_NAME = re.compile(r"^[A-Za-z_][\w.]*$")

# What a reply made of calls can start with: the JSON openers, then each tagged syntax.
OPENERS = ("{", "[", "<tool_call>", "<scratchpad>", "<function=", "[TOOL_CALLS]", _PYTHON_TAG)


def may_open_calls(start: str) -> bool:
    """Whether ``start`` (the reply so far, leading whitespace removed) could begin calls."""
    return any(start.startswith(opener) or opener.startswith(start) for opener in OPENERS)


def _json(text: str) -> Any:
    return json.loads(text, strict=False)  # raw control characters: the caller re-encodes


def json_objects(text: str) -> list[dict[str, Any]]:
    """The JSON objects ``text`` holds: one, a list of them, or several in a row (LocalAI's
    ``ParseJSON``, which also skips what is not JSON between them)."""
    decoder, found, index = json.JSONDecoder(strict=False), [], 0
    while index < len(text):
        start = min((i for i in (text.find("{", index), text.find("[", index)) if i >= 0), default=-1)
        if start < 0:
            break
        try:
            value, index = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            index = start + 1
            continue
        found += [item for item in (value if isinstance(value, list) else [value]) if isinstance(item, dict)]
    return found


def _from_objects(value: Any) -> Calls | None:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, dict) for item in items):
        return None
    return [(item.get("name"), item.get("arguments", item.get("parameters"))) for item in items]


def _plain_json(text: str) -> Calls | None:
    if not text.startswith(("{", "[")):
        return None
    try:
        return _from_objects(_json(text))
    except json.JSONDecodeError:
        return None


def _tagged(text: str) -> Calls | None:
    text = _SCRATCHPAD.sub("", text, count=1)
    if not text.startswith("<tool_call>"):
        return None
    bodies = _TAGGED.findall(text)
    if not bodies or _TAGGED.sub("", text).strip():
        return None
    calls: Calls = []
    for body in bodies:
        try:
            found = _from_objects(_json(body))
        except json.JSONDecodeError:
            return None
        if found is None:
            return None
        calls += found
    return calls


def _function_tags(text: str) -> Calls | None:
    if not text.startswith("<function="):
        return None
    found = _FUNCTION_TAG.findall(text)
    if not found or _FUNCTION_TAG.sub("", text).strip():
        return None
    try:
        return [(name, _json(body) if body else {}) for name, body in found]
    except json.JSONDecodeError:
        return None


def _mistral(text: str) -> Calls | None:
    if not text.startswith("[TOOL_CALLS]"):
        return None
    rest = text.removeprefix("[TOOL_CALLS]").strip()
    if rest.startswith(("{", "[")):
        return _plain_json(rest)
    calls: Calls = []  # [TOOL_CALLS]name[ARGS]{...}, repeated (Mistral's v11 tokenizer)
    decoder = json.JSONDecoder(strict=False)
    while rest:
        head = _MISTRAL_ARGS.match(rest)
        if head is None:
            return None
        try:
            arguments, end = decoder.raw_decode(rest, head.end())
        except json.JSONDecodeError:
            return None
        calls.append((head.group(1), arguments))
        rest = rest[end:].strip().removeprefix("[TOOL_CALLS]").strip()
    return calls or None


def _pythonic(text: str) -> Calls | None:
    """``[f(a=1), g(b="x")]``: a list of calls with keyword arguments that are literals."""
    if not (text.startswith("[") and text.endswith("]")):
        return None
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if not isinstance(tree.body, ast.List) or not tree.body.elts:
        return None
    calls: Calls = []
    for node in tree.body.elts:
        if not isinstance(node, ast.Call) or node.args:
            return None
        name = ast.unparse(node.func)
        if not _PYTHONIC_NAME.match(name):
            return None
        try:
            arguments = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg is not None}
        except (ValueError, TypeError, SyntaxError, RecursionError):
            return None
        if len(arguments) != len(node.keywords):
            return None  # **kwargs
        calls.append((name, arguments))
    return calls


_FORMATS: tuple[Callable[[str], Calls | None], ...] = (_plain_json, _tagged, _function_tags, _mistral, _pythonic)


def parse(text: str) -> Calls | None:
    """The calls ``text`` is made of, in the first syntax that reads all of it; else None."""
    stripped = text.strip()
    if stripped.startswith(_PYTHON_TAG):
        stripped = stripped.removeprefix(_PYTHON_TAG).strip()
    for read in _FORMATS:
        calls = read(stripped)
        if calls is not None:
            return calls
    return None
