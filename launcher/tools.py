"""Function calling: tools in a chat request, the grammar that forces a call, and the call read
back from the model's output (whole, or incrementally while streaming).

A forced call (``tool_choice: required`` or a named function, and legacy ``function_call``)
is generated under a llama.cpp grammar built from this JSON Schema::

    {"name": <one of the tools' names>, "arguments": <that tool's parameters schema>}

so the output always parses and its arguments always fit the tool's schema (for the JSON
Schema keywords llama.cpp's converter enforces: types, properties, required, enum, const,
items, anyOf/oneOf, $ref, minItems/maxItems, minLength/maxLength). ``auto`` generates freely
and reads a call back when the whole output is one; ``none`` never calls. A model whose YAML has
LocalAI's ``function:`` block gets LocalAI's call grammar under ``auto`` instead: a call, or the
no-action function (``answer``) whose ``message`` is the reply (``ToolRequest.with_no_action``).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, replace
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from modelyard.compiler.plan import FunctionParsing
from modelyard.compiler.template_env import GoStruct

from . import tool_formats
from .constraints import check_json_schema
from .errors import OpenAIError
from .gbnf import CallGrammarShape
from .schema_utils import expand_type_lists

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Runaway guards for grammar-constrained arguments: a small model inside a JSON string can go on
# until max_tokens, and a cut-off call does not parse. Bounds the schema leaves open get these
# (shorter strings and lists still satisfy the tool's schema).
MAX_STRING_CHARS = 200
MAX_ARRAY_ITEMS = 16


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]


# LocalAI's no-action function's parameters (chat.go l.331), and the arguments its grammar asks for.
_NO_ACTION_PROPERTIES = {"message": {"type": "string", "description": "The message to reply the user with"}}
_NO_ACTION_ARGUMENTS = {"type": "object", "properties": _NO_ACTION_PROPERTIES, "required": ["message"]}


@dataclass(frozen=True)
class ToolRequest:
    tools: tuple[Tool, ...]
    choice: str  # "none", "auto", "required", or the name of the function to call
    legacy: bool = False  # `functions`/`function_call`: answer with message.function_call
    parsing: FunctionParsing = FunctionParsing()  # the model's (its YAML's `function:` block)
    no_action: str | None = None  # LocalAI's no-action function, offered under its call grammar
    shape: CallGrammarShape | None = None  # the call grammar's prefix and mixed text (llama-cpp)

    def with_no_action(self, name: str, description: str) -> ToolRequest:
        """These tools and LocalAI's no-action function: calling it is answering, with its
        ``message`` (chat.go l.328). Its own name, if a request's tool has it, stays the tool's."""
        if any(t.name == name for t in self.tools):
            return self
        answer = Tool(name, description, {"properties": _NO_ACTION_PROPERTIES})  # as .Functions shows it
        return replace(self, tools=(*self.tools, answer), no_action=name)

    def answer_of(self, calls: list[ToolCall]) -> str | None:
        """The answer, when the model called the no-action function (first, as LocalAI reads it)."""
        if self.no_action is None or not calls or calls[0].name != self.no_action:
            return None
        message = json.loads(calls[0].arguments).get("message")
        return message if isinstance(message, str) else ""

    @property
    def forced(self) -> bool:
        return self.choice not in ("none", "auto")

    @property
    def offered(self) -> tuple[Tool, ...]:
        """The tools the model is told about (none for ``none``: it must not call them)."""
        if self.choice == "none":
            return ()
        if self.forced and self.choice != "required":
            return tuple(t for t in self.tools if t.name == self.choice)
        return self.tools

    def call_schema(self, answer: dict[str, Any] | None = None, parallel: bool = False) -> dict[str, Any]:
        """The JSON Schema a forced call's output must match. Each tool's local definitions
        (``$defs``, ``definitions``: what pydantic's ``model_json_schema()`` writes for nested
        models) move to the root, renamed per tool, since the tool's schema is nested here.

        With ``answer`` (``tool_choice: auto`` with a ``json_schema`` response format: OpenAI
        applies the schema to the final answer only), the output is a call *or* an answer in
        that schema: the union, so the model may still call a tool. ``parallel`` (LocalAI's
        ``grammar.parallel_calls``): a list of calls is allowed too. The keys are the model's
        (``function_name_key``, ``function_arguments_key``)."""
        definitions: dict[str, Any] = {}
        name_key, arguments_key = self.parsing.name_key, self.parsing.arguments_key
        calls = []
        for index, tool in enumerate(self.offered):
            # LocalAI's grammar writes every property of the no-action function (its JSON Schema
            # converter knows no optional ones): the message is required.
            parameters = _NO_ACTION_ARGUMENTS if tool.name == self.no_action else tool.parameters
            arguments = _hoist_definitions(bounded(parameters), f"t{index}_", definitions)
            calls.append({"type": "object", "properties": {name_key: {"const": tool.name}, arguments_key: arguments},
                          "required": [name_key, arguments_key], "additionalProperties": False})
        alternatives = list(calls)
        if parallel:
            call = calls[0] if len(calls) == 1 else {"anyOf": calls}
            alternatives.append({"type": "array", "items": call, "minItems": 1, "maxItems": MAX_ARRAY_ITEMS})
        if answer is not None:
            alternatives.append(_hoist_definitions(answer, "answer_", definitions))
        schema = alternatives[0] if len(alternatives) == 1 else {"anyOf": alternatives}
        return {**schema, "$defs": definitions} if definitions else schema


def parse_tool_request(tools: list[dict[str, Any]] | None, tool_choice: Any, functions: list[dict[str, Any]] | None,
                       function_call: Any) -> ToolRequest | None:
    """Validate the request's tools; None when it has none. Every problem is a 400 naming it."""
    if tools is not None and functions is not None:
        raise OpenAIError(400, "give tools or the legacy functions, not both", param="functions")
    if tools is None and functions is None:
        if tool_choice is not None:
            raise OpenAIError(400, "tool_choice is only allowed when tools are given", param="tool_choice")
        if function_call is not None:
            raise OpenAIError(400, "function_call is only allowed when functions are given", param="function_call")
        return None
    legacy = functions is not None
    param = "functions" if legacy else "tools"
    parsed = []
    for index, item in enumerate(functions if legacy else tools):
        where = f"{param}[{index}]"
        if not legacy:
            if item.get("type", "function") != "function" or not isinstance(item.get("function"), dict):
                raise OpenAIError(400, f"{where}: only tools of type 'function' with a 'function' object are supported",
                                  param=where)
            item, where = item["function"], f"{where}.function"
        parsed.append(_tool(item, where))
    names = [t.name for t in parsed]
    if len(set(names)) != len(names):
        raise OpenAIError(400, f"{param}: two tools have the same name", param=param)
    choice = _choice(function_call if legacy else tool_choice, legacy, names)
    return ToolRequest(tuple(parsed), choice, legacy)


def _tool(item: dict[str, Any], where: str) -> Tool:
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise OpenAIError(400, f"{where}.name must be 1-64 letters, digits, '_' or '-'", param=f"{where}.name")
    parameters = item.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(parameters, dict):
        raise OpenAIError(400, f"{where}.parameters must be a JSON Schema object", param=f"{where}.parameters")
    check_json_schema(parameters, f"{where}.parameters", counts=False)  # jsonschema recurses: depth first
    try:
        Draft202012Validator.check_schema(parameters)
    except SchemaError as exc:
        at = "/".join(str(p) for p in exc.path) or "the top level"
        raise OpenAIError(400, f"{where}.parameters is not a valid JSON Schema ({exc.validator} at {at}: "
                               f"{exc.message})", param=f"{where}.parameters") from None
    description = item.get("description") or ""
    return Tool(name, str(description), parameters)


def _choice(value: Any, legacy: bool, names: list[str]) -> str:
    param = "function_call" if legacy else "tool_choice"
    if value is None:
        return "auto"
    if value in ("none", "auto") or (value == "required" and not legacy):
        return value
    if isinstance(value, dict):
        name = value.get("name") if legacy else (value.get("function") or {}).get("name")
        if not legacy and value.get("type") != "function":
            raise OpenAIError(400, f"{param}.type must be 'function'", param=param)
        if name in names:
            return name
        raise OpenAIError(400, f"{param} names function {name!r}, which is not among the tools "
                               f"({', '.join(names)})", param=param)
    allowed = "'none', 'auto'" + ("" if legacy else ", 'required'") + " or a function"
    raise OpenAIError(400, f"{param} must be {allowed}", param=param)


def _hoist_definitions(schema: Any, prefix: str, into: dict[str, Any]) -> Any:
    """``schema`` without its own ``$defs``/``definitions``, which go into ``into`` as
    ``prefix + name``; its local refs (``#/$defs/X``, ``#/definitions/X``, ``#``) are rewritten to
    match. Other refs are left for the grammar builder to refuse."""
    if not isinstance(schema, dict):
        return schema
    schema = dict(schema)
    own = {**schema.pop("definitions", {}), **schema.pop("$defs", {})}
    root_name = f"{prefix}root"

    def fix_ref(node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        if isinstance(ref, str):
            if ref == "#":
                node["$ref"] = f"#/$defs/{root_name}"
                into.setdefault(root_name, None)  # filled below, once the root is rewritten
            for local in ("#/$defs/", "#/definitions/"):
                if ref.startswith(local):
                    node["$ref"] = f"#/$defs/{prefix}{ref[len(local):]}"
        return node

    def rewrite(node: Any) -> Any:
        return _each_subschema(node, fix_ref)

    for name, definition in own.items():
        into[prefix + name] = rewrite(definition)
    rewritten = rewrite(schema)
    if root_name in into:
        into[root_name] = rewritten
    return rewritten


_DATA_KEYWORDS = ("enum", "const", "default", "examples")  # what they hold is data, not schemas


def _each_subschema(schema: Any, change: Any) -> Any:
    """A copy of ``schema`` with ``change`` applied to each of its (sub-)schema mappings, the
    innermost first; values under data keywords are left as they are."""
    def visit(node: Any) -> Any:
        if isinstance(node, list):
            return [visit(item) for item in node]
        if not isinstance(node, dict):
            return node
        return change({key: visit(value) if key not in _DATA_KEYWORDS else value for key, value in node.items()})

    return visit(schema)


def bounded(schema: Any) -> Any:
    """A copy of ``schema`` with the runaway guards added where it sets no bound itself."""
    def guard(node: dict[str, Any]) -> dict[str, Any]:
        if node.get("type") == "string" and not ({"maxLength", "enum", "const", "pattern", "format"} & node.keys()):
            node["maxLength"] = max(MAX_STRING_CHARS, node.get("minLength", 0))
        if node.get("type") == "array" and "maxItems" not in node and "items" in node:
            node["maxItems"] = max(MAX_ARRAY_ITEMS, node.get("minItems", 0))
        if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False  # only the declared arguments
        return node

    return _each_subschema(expand_type_lists(schema), guard)  # ["string", "null"]: one bounded alternative per type


# --- reading calls back ----------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON text, as OpenAI sends it
    index: int = 0  # a request's call: its `index` (LocalAI's schema.ToolCall reads 0 when absent)

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def arguments_object(arguments: str) -> dict[str, Any]:
    """A call's arguments (OpenAI's JSON text) as the object other APIs send (Anthropic's
    ``input``, Ollama's ``arguments``): ``{}`` when they are not JSON, ``{"value": ...}`` when not
    an object."""
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def parse_calls(text: str, tools: ToolRequest) -> list[ToolCall] | None:
    """The calls ``text`` holds when it is entirely calls to offered tools, in any syntax the
    gallery's templates ask for (``tool_formats.py``), or where the model's ``function:``
    settings find them (``response_regex``, ``json_regex_match``); None when it is content."""
    shape = tools.shape
    if shape is not None and shape.prefix.strip() and text.lstrip().startswith(shape.prefix.strip()):
        text = text.lstrip()[len(shape.prefix.strip()):]  # the grammar's prefix, before the calls
    found = _configured_calls(text, tools.parsing)
    if found is None:
        found = tool_formats.parse(text, tools.parsing.xml_format)
    if found is None and shape is not None and shape.mixed:
        # LocalAI's mixed grammar: text, then calls (and text again): the calls among it (ParseJSON).
        objects = [o for o in tool_formats.json_objects(text) if tools.parsing.name_key in o]
        found = [(o.get(tools.parsing.name_key), o.get(tools.parsing.arguments_key)) for o in objects] or None
    if found is None:
        return None
    offered = {t.name: t for t in tools.offered}
    calls = []
    for name, arguments in found:
        if not isinstance(name, str) or name not in offered:
            return None
        if isinstance(arguments, str):  # some models write the arguments as a JSON text
            try:
                arguments = json.loads(arguments, strict=False)
            except json.JSONDecodeError:
                return None
        # A call only when its arguments fit the tool: an answer that happens to hold a tool's
        # name ({"name": "get_weather", "country": "France"}) is content, never a call with
        # arguments made up.
        if not isinstance(arguments, dict) or not _fits(arguments, offered[name]):
            return None
        calls.append(ToolCall(new_call_id(), name, json.dumps(arguments, ensure_ascii=False)))
    return calls or None


def _configured_calls(text: str, parsing: FunctionParsing) -> tool_formats.Calls | None:
    """LocalAI's ``ParseFunctionCall`` (pkg/functions/parse.go l.931) for the YAML's settings:
    ``replace_function_results`` first; then each ``json_regex_match`` (the first with matches:
    their first groups are the calls' JSON), or every ``response_regex`` match (its ``name`` and
    ``arguments`` groups; ``argument_regex`` reads arguments that are not JSON)."""
    if not (parsing.response_regex or parsing.json_regex_match):
        return None
    text = _replaced(text, parsing.replace_function_results)
    calls: tool_formats.Calls = []
    bodies: list[str] = []
    for pattern in parsing.json_regex_match:
        bodies = [m.group(1) for m in re.finditer(pattern, text) if m.groups()]
        if bodies:
            break
    if parsing.json_regex_match and not bodies and not parsing.response_regex:
        bodies = [text]  # LocalAI then reads the whole (replaced) reply as JSON
    for body in bodies:
        objects = tool_formats.json_objects(body.strip())
        calls += [(o.get(parsing.name_key), o.get(parsing.arguments_key)) for o in objects]
    for pattern in parsing.response_regex:
        for match in re.finditer(pattern, text):
            groups = match.groupdict()
            if not groups.get(parsing.name_key):
                break
            calls.append((groups[parsing.name_key], _arguments(groups.get(parsing.arguments_key) or "", parsing)))
    return calls or None


def _arguments(text: str, parsing: FunctionParsing) -> Any:
    """A ``response_regex`` match's arguments: JSON, or key/value pairs ``argument_regex`` reads
    (LocalAI's ``ParseFunctionCallArgs``: every value a string)."""
    if not parsing.argument_regex:
        return text
    pairs: dict[str, str] = {}
    for pattern in parsing.argument_regex:
        for match in re.finditer(pattern, text):
            groups = match.groupdict()
            if parsing.argument_key in groups and parsing.argument_value in groups:
                pairs[groups[parsing.argument_key]] = groups[parsing.argument_value]
    return pairs


def _replaced(text: str, rules: tuple[tuple[str, str], ...]) -> str:
    for pattern, replacement in rules:
        try:
            text = re.sub(pattern, replacement, text)
        except (re.error, IndexError):  # a group the pattern lacks: Go would insert nothing
            continue
    return text


def cleaned_content(text: str, parsing: FunctionParsing) -> str:
    """A tool request's reply that holds no call, under ``replace_llm_results`` (LocalAI's
    ``CleanupLLMResult``)."""
    return _replaced(text, parsing.replace_llm_results)


def captured_content(text: str, parsing: FunctionParsing) -> str | None:
    """The text sent beside calls: the first ``capture_llm_results`` match's first group, trimmed
    (LocalAI's ``ParseTextContent``); None without one."""
    for pattern in parsing.capture_llm_results:
        match = re.search(pattern, text)
        if match is not None and match.groups() and (match.group(1) or "").strip():
            return match.group(1).strip()
    return None


def _fits(arguments: dict[str, Any], tool: Tool) -> bool:
    try:
        return Draft202012Validator(tool.parameters).is_valid(arguments)
    except (SchemaError, RecursionError, ValueError):  # checked on the way in; a guard, not a path
        return False


_CALL_HEAD = re.compile(r'^\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*', re.DOTALL)
_TAIL = re.compile(r"\s*\}?\s*$")


class CallStream:
    """Reads a forced call as it is generated (the grammar fixes its shape: name first, then
    arguments) and yields OpenAI's stream fragments: the name once known, then the arguments
    text as it arrives. The outer object's closing brace is held back until the end. Raw control
    characters inside strings (some grammar engines let them through) are escaped on the way, so
    the arguments a client joins are always valid JSON."""

    def __init__(self) -> None:
        self.buffer = ""
        self.name: str | None = None
        self.sent = 0  # characters of the raw arguments text already sent
        self.escaped = ""  # what was sent, escaped
        self._in_string = self._after_backslash = False

    def feed(self, text: str) -> list[tuple[str, str]]:
        """New ("name", NAME) / ("arguments", FRAGMENT) events for ``text``."""
        self.buffer += text
        events = []
        if self.name is None:
            head = _CALL_HEAD.match(self.buffer)
            if head is None:
                return []
            self.name = json.loads(f'"{head.group(1)}"', strict=False)
            self.buffer = self.buffer[head.end():]
            events.append(("name", self.name))
        safe = len(self.buffer) - len(_TAIL.search(self.buffer).group(0))
        if safe > self.sent:
            events.append(("arguments", self._send(self.buffer[self.sent:safe])))
            self.sent = safe
        return events

    def finish(self) -> list[tuple[str, str]]:
        """The last fragment: everything but the outer object's closing brace."""
        if self.name is None:
            return []
        end = self.buffer.rstrip()
        end = end[:-1].rstrip() if end.endswith("}") else end
        rest = end[self.sent:]
        self.sent = len(end)
        return [("arguments", self._send(rest))] if rest else []

    @property
    def arguments(self) -> str:
        return self.escaped

    def _send(self, raw: str) -> str:
        out = []
        for char in raw:
            if self._in_string:
                if self._after_backslash:
                    self._after_backslash = False
                elif char == "\\":
                    self._after_backslash = True
                elif char == '"':
                    self._in_string = False
                elif char < " ":
                    char = json.dumps(char)[1:-1]  # \n, \t, \u001b ...
            elif char == '"':
                self._in_string = True
            out.append(char)
        fragment = "".join(out)
        self.escaped += fragment
        return fragment


# --- prompts ---------------------------------------------------------------------------------


def tools_system_prompt(tools: ToolRequest) -> str:
    """How the model learns of the tools when its templates have no place for them."""
    listing = "\n".join(json.dumps({"name": t.name, "description": t.description, "parameters": t.parameters},
                                   ensure_ascii=False) for t in tools.offered)
    return ("You can call these functions:\n" + listing + "\nTo call one, reply with only a JSON object: "
            '{"name": <function name>, "arguments": <an object of its arguments>}.')


def template_functions(tools: ToolRequest) -> list[GoStruct]:
    """``.Functions`` as LocalAI's ``functions.Function`` structs (toJson in its field order)."""
    return [GoStruct(("Name", "name", t.name), ("Description", "description", t.description),
                     ("Strict", "strict", False), ("Parameters", "parameters", t.parameters))
            for t in tools.offered]


# --- answers ---------------------------------------------------------------------------------


def assistant_message(text: str, finish_reason: str, tools: ToolRequest | None,
                      parallel: bool = True) -> tuple[dict[str, Any], str]:
    """The non-streamed ``message`` and ``finish_reason`` for one choice's output."""
    calls = parse_calls(text, tools) if tools is not None and tools.choice != "none" else None
    if not calls:
        content = cleaned_content(text, tools.parsing) if tools is not None else text
        return {"role": "assistant", "content": content, "refusal": None}, finish_reason
    answer = tools.answer_of(calls)
    if answer is not None:  # the no-action function: its message is the answer
        return {"role": "assistant", "content": answer, "refusal": None}, "stop"
    calls = [c for c in calls if c.name != tools.no_action]
    calls = calls if parallel else calls[:1]
    content = captured_content(text, tools.parsing)
    if tools.legacy:
        call = calls[0]
        return ({"role": "assistant", "content": content, "refusal": None,
                 "function_call": {"name": call.name, "arguments": call.arguments}}, "function_call")
    return ({"role": "assistant", "content": content, "refusal": None,
             "tool_calls": [c.to_openai() for c in calls]}, "tool_calls")


class ChoiceDeltas:
    """The streamed ``delta`` objects for one choice, tool calls included.

    Plain content streams as it comes. A forced call streams as OpenAI does: one fragment with
    ``id``, ``type`` and ``function.name``, then ``arguments`` fragments. Under ``auto``, output
    that opens as calls can (``{``, ``[``, ``<tool_call>``, ``<function=``, ``[TOOL_CALLS]``...)
    is held until it ends, then sent as calls if it is some, else as content: call text never
    leaks into ``content``.
    """

    def __init__(self, tools: ToolRequest | None, parallel: bool = True) -> None:
        self.tools = tools
        self.parallel = parallel
        self.mode = "content" if tools is None or tools.choice == "none" else "forced" if tools.forced else "auto"
        self.call = CallStream()
        self.call_id = new_call_id()
        self.held = ""
        shape = tools.shape if tools is not None else None
        self.prefix = shape.prefix if shape is not None else ""  # what the call grammar writes first
        self.hold_all = shape is not None and shape.mixed  # text and calls mixed: known at the end only

    def text(self, text: str) -> list[dict[str, Any]]:
        if self.mode == "content":
            return [{"content": text}]
        if self.mode == "forced":
            if self.prefix:  # the grammar writes it whole before the call
                cut = min(len(self.prefix), len(text))
                self.prefix, text = self.prefix[cut:], text[cut:]
            return [self._call_delta(0, kind, value) for kind, value in self.call.feed(text)]
        self.held += text  # auto: content, or a call?
        start = self.held.lstrip()
        opening = self.prefix.strip()
        if opening and (opening.startswith(start) or start.startswith(opening)) or self.hold_all:
            return []
        if start and not tool_formats.may_open_calls(start, self.tools.parsing.xml_format):
            self.mode, held, self.held = "content", self.held, ""
            return [{"content": held}]
        return []

    def finish(self, finish_reason: str) -> tuple[list[dict[str, Any]], str]:
        """The last deltas and the choice's finish_reason."""
        if self.mode == "forced":
            deltas = [self._call_delta(0, kind, value) for kind, value in self.call.finish()]
            complete = self.call.name is not None and _is_json(self.call.arguments)
            return deltas, self._call_finish() if complete else "length" if finish_reason == "length" else finish_reason
        if self.mode == "auto" and self.held:
            calls = parse_calls(self.held, self.tools)
            answer = self.tools.answer_of(calls) if calls else None
            if answer is not None:
                return [{"content": answer}], "stop"
            calls = [c for c in calls or () if c.name != self.tools.no_action]
            if calls:
                calls = calls if self.parallel else calls[:1]
                if self.tools.legacy:
                    calls = calls[:1]
                deltas = []
                for index, call in enumerate(calls):
                    self.call_id = call.id
                    deltas += [self._call_delta(index, "name", call.name),
                               self._call_delta(index, "arguments", call.arguments)]
                return deltas, self._call_finish()
            return [{"content": self.held}], finish_reason
        return [], finish_reason

    def _call_finish(self) -> str:
        return "function_call" if self.tools.legacy else "tool_calls"

    def _call_delta(self, index: int, kind: str, value: str) -> dict[str, Any]:
        if self.tools.legacy:
            return {"function_call": {"name": value, "arguments": ""} if kind == "name" else {"arguments": value}}
        if kind == "name":
            return {"tool_calls": [{"index": index, "id": self.call_id, "type": "function",
                                    "function": {"name": value, "arguments": ""}}]}
        return {"tool_calls": [{"index": index, "function": {"arguments": value}}]}


def _is_json(text: str) -> bool:
    try:
        json.loads(text, strict=False)
    except json.JSONDecodeError:
        return False
    return True
