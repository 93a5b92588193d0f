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
  pythonic format), arguments as Python literals (read with ``ast.literal_eval``: nothing runs);
* the XML-like syntaxes of LocalAI's presets (``compiler/xml_tool_formats.py``): Qwen3-Coder's
  ``<tool_call><function=NAME><parameter=KEY>VALUE</parameter></function></tool_call>``, GLM 4.5's
  ``<tool_call>NAME<arg_key>KEY</arg_key><arg_value>VALUE</arg_value></tool_call>``, MiniMax M2's
  ``<minimax:tool_call><invoke name="NAME"><parameter name="KEY">VALUE</parameter></invoke>...``;
  Apriel's ``<tool_calls>[{...}]</tool_calls>`` and Kimi K2's ``<|tool_calls_section_begin|>``.

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

from modelyard.compiler.plan import XmlToolFormat
from modelyard.compiler.xml_tool_formats import PRESETS as XML_PRESETS

Calls = list[tuple[Any, Any]]  # (name, arguments) as written: checked by the caller

_PYTHON_TAG = "<|python_tag|>"
_SCRATCHPAD = re.compile(r"^<scratchpad>.*?</scratchpad>\s*", re.DOTALL)
_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
_FUNCTION_TAG = re.compile(r"<function=([\w.\-]+)>\s*(.*?)\s*</function>", re.DOTALL)
_MISTRAL_ARGS = re.compile(r"([\w.\-]+)\[ARGS\]")
_PYTHONIC_NAME = re.compile(r"^[A-Za-z_][\w.]*$")

_APRIEL = re.compile(r"^<tool_calls>\s*(\[.*\])\s*</tool_calls>$", re.DOTALL)
_KIMI_SECTION = ("<|tool_calls_section_begin|>", "<|tool_calls_section_end|>")
_KIMI_CALL = re.compile(r"<\|tool_call_begin\|>\s*(?:functions\.)?([\w.\-]+?)(?::\d+)?\s*"
                        r"<\|tool_call_argument_begin\|>(.*?)<\|tool_call_end\|>", re.DOTALL)

# What a reply made of calls can start with: the JSON openers, then each tagged syntax.
OPENERS = ("{", "[", "<tool_call>", "<scratchpad>", "<function=", "[TOOL_CALLS]", _PYTHON_TAG,
           "<minimax:tool_call>", "<tool_calls>", _KIMI_SECTION[0],
           *{f.scope_start or f.tool_start for f in XML_PRESETS.values()})


def may_open_calls(start: str, syntax: XmlToolFormat | None = None) -> bool:
    """Whether ``start`` (the reply so far, leading whitespace removed) could begin calls."""
    openers = (*OPENERS, syntax.scope_start or syntax.tool_start) if syntax is not None else OPENERS
    return any(start.startswith(opener) or opener.startswith(start) for opener in openers)


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


def xml_calls(text: str, syntax: XmlToolFormat) -> Calls | None:
    """Calls in an XML-like syntax, when ``text`` is nothing else (whitespace between)."""
    if syntax.scope_start:
        if not (text.startswith(syntax.scope_start) and text.endswith(syntax.scope_end)):
            return None
        text = text.replace(syntax.scope_start, " ").replace(syntax.scope_end, " ")
    sep = re.escape(syntax.tool_sep) if syntax.tool_sep else r"\s*"
    tool = re.compile(re.escape(syntax.tool_start) + r"\s*([\w.\-]+)" + sep + r"(.*?)" + re.escape(syntax.tool_end),
                      re.DOTALL)
    value_sep = re.escape(syntax.key_val_sep) + (r"\s*" + re.escape(syntax.key_val_sep2) if syntax.key_val_sep2 else "")
    argument = re.compile(re.escape(syntax.key_start) + r"(.*?)" + value_sep + r"(.*?)" + re.escape(syntax.val_end),
                          re.DOTALL)
    found = tool.findall(text)
    if not found or tool.sub("", text).strip():
        return None
    calls: Calls = []
    for name, body in found:
        pairs = argument.findall(body)
        if argument.sub("", body).strip():
            return None
        arguments = {}
        for key, raw in pairs:
            arguments[key.strip()] = _xml_value(raw, syntax)
        calls.append((name, arguments))
    return calls


def _xml_value(raw: str, syntax: XmlToolFormat) -> Any:
    value = raw.strip() if syntax.trim_values or syntax.raw_values is not True else raw
    if syntax.raw_values is True:
        return value
    try:
        return _json(value)
    except json.JSONDecodeError:
        if syntax.raw_values is False:
            raise
        return value if syntax.trim_values else raw


def _xml_presets(text: str) -> Calls | None:
    for syntax in XML_PRESETS.values():
        try:
            calls = xml_calls(text, syntax)
        except json.JSONDecodeError:
            continue
        if calls is not None:
            return calls
    return None


def _apriel(text: str) -> Calls | None:
    found = _APRIEL.match(text)
    return _plain_json(found.group(1)) if found else None


def _kimi(text: str) -> Calls | None:
    start, end = _KIMI_SECTION
    if not (text.startswith(start) and text.endswith(end)):
        return None
    body = text[len(start):-len(end)]
    found = _KIMI_CALL.findall(body)
    if not found or _KIMI_CALL.sub("", body).strip():
        return None
    try:
        return [(name, _json(arguments)) for name, arguments in found]
    except json.JSONDecodeError:
        return None


_FORMATS: tuple[Callable[[str], Calls | None], ...] = (
    _plain_json, _tagged, _function_tags, _mistral, _pythonic, _xml_presets, _apriel, _kimi)


def parse(text: str, syntax: XmlToolFormat | None = None) -> Calls | None:
    """The calls ``text`` is made of, in the first syntax that reads all of it (the model's own
    XML ``syntax`` first, when its YAML names one); else None."""
    stripped = text.strip()
    if stripped.startswith(_PYTHON_TAG):
        stripped = stripped.removeprefix(_PYTHON_TAG).strip()
    if syntax is not None:
        try:
            calls = xml_calls(stripped, syntax)
        except json.JSONDecodeError:
            calls = None
        if calls is not None:
            return calls
    for read in _FORMATS:
        calls = read(stripped)
        if calls is not None:
            return calls
    return None
