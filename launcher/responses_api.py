"""OpenAI's Responses API (``POST /v1/responses``; ``GET``/``DELETE /v1/responses/{id}``, its
``input_items`` and ``cancel``), the API OpenAI's Agents SDK and Codex speak by default.

A thin adapter: ``input`` items (messages, ``function_call``, ``function_call_output``) with
``instructions`` are rebuilt as a chat completion request and run on the shared chat path
(``serving.chat_job``); the answer becomes output items (``reasoning``, ``message``,
``function_call``), whole or as the typed event stream. Responses are kept (``store``, the
default) in a bounded in-memory store, so that ``previous_response_id`` continues a
conversation: the stored turn's input and output come before the new input.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .errors import OpenAIError
from .generation import Job
from .generation import usage as chat_usage
from .protocol import ChatCompletionRequest, RequestBody, parse_body, validate
from .routes import Endpoint, Operation
from .serving import chat_choice, chat_job, chunk_stream, complete, read_request_body, sse_response
from .state import server_state

MAX_STORED = 256  # responses kept for previous_response_id and GET; the oldest go first
MAX_STORED_CHARS = 64 * 1024 * 1024  # and at most this much of their JSON in all
_HOSTED_TOOLS = ("web_search", "web_search_preview", "file_search", "computer_use_preview", "code_interpreter",
                 "image_generation", "mcp", "local_shell", "shell", "apply_patch")


class TextFormat(RequestBody):
    type: str
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextConfig(RequestBody):
    format: TextFormat | None = None


class ReasoningConfig(RequestBody):
    effort: str | None = Field(default=None, max_length=32)
    summary: str | None = None


class ResponsesRequest(RequestBody):
    model: str | None = None
    input: str | list[dict[str, Any]] = Field(min_length=1)
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool = True
    text: TextConfig | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = Field(default=None, max_length=128)
    reasoning: ReasoningConfig | None = None
    metadata: dict[str, str] | None = None
    background: bool = False
    user: str | None = None


# --- the store -------------------------------------------------------------------------------


@dataclass
class Stored:
    response: dict[str, Any]
    items: list[dict[str, Any]]  # the conversation up to this response's input, as input items
    size: int


@dataclass
class ResponseStore:
    """Responses by id, least recently stored first out, bounded in count and in size."""

    entries: OrderedDict[str, Stored] = field(default_factory=OrderedDict)
    chars: int = 0

    def put(self, response: dict[str, Any], items: list[dict[str, Any]]) -> None:
        size = len(json.dumps(response)) + len(json.dumps(items))
        self.entries[response["id"]] = Stored(response, items, size)
        self.chars += size
        while self.entries and (len(self.entries) > MAX_STORED or self.chars > MAX_STORED_CHARS):
            _, gone = self.entries.popitem(last=False)
            self.chars -= gone.size

    def get(self, response_id: str) -> Stored:
        stored = self.entries.get(response_id)
        if stored is None:
            raise OpenAIError(404, f"no response with id {response_id!r} (responses are kept in memory, the most "
                                   f"recent {MAX_STORED}, until the server restarts)", param="response_id",
                              code="not_found")
        return stored

    def delete(self, response_id: str) -> None:
        self.chars -= self.get(response_id).size
        del self.entries[response_id]


def _store(request: Request) -> ResponseStore:
    state = server_state(request)
    if state.responses is None:
        state.responses = ResponseStore()
    return state.responses


# --- a request as a chat request -------------------------------------------------------------


def _input_items(body: ResponsesRequest) -> list[dict[str, Any]]:
    return [{"type": "message", "role": "user", "content": body.input}] if isinstance(body.input, str) else body.input


def _text(content: Any, where: str) -> str:
    """A message's content: a string, or text parts (``input_text``, ``output_text``)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise OpenAIError(400, f"{where}: content must be a string or a list of parts", param=where)
    texts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("input_text", "output_text", "text", "refusal"):
            raise OpenAIError(400, f"{where}: content parts of type {kind!r} are not supported (text only)",
                              param=where)
        texts.append(str(part.get("text", part.get("refusal", ""))))
    return "".join(texts)


def _chat_messages(items: list[dict[str, Any]], instructions: str | None) -> list[dict[str, Any]]:
    """Input items as chat messages: consecutive ``function_call`` items are one assistant turn's
    calls (after its text, if the turn had some); ``reasoning`` items are dropped."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    for i, item in enumerate(items):
        where = f"input.{i}"
        if not isinstance(item, dict):
            raise OpenAIError(400, f"{where}: an input item must be an object", param=where)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise OpenAIError(400, f"{where}.role: must be user, assistant, system or developer", param=where)
            messages.append({"role": role, "content": _text(item.get("content", ""), f"{where}.content")})
        elif kind == "function_call":
            if not isinstance(item.get("call_id"), str) or not isinstance(item.get("name"), str):
                raise OpenAIError(400, f"{where}: a function_call needs call_id and name", param=where)
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": str(item.get("arguments", "{}"))}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise OpenAIError(400, f"{where}: a function_call_output needs its call_id", param=where)
            output = item.get("output", "")
            messages.append({"role": "tool", "tool_call_id": item["call_id"],
                             "content": output if isinstance(output, str) else _text(output, f"{where}.output")})
        elif kind == "reasoning":
            continue
        else:
            raise OpenAIError(400, f"{where}: input items of type {kind!r} are not supported here (message, "
                                   "function_call, function_call_output, reasoning)", param=where)
    return messages


def _chat_tools(body: ResponsesRequest) -> dict[str, Any]:
    fields: dict[str, Any] = {"parallel_tool_calls": body.parallel_tool_calls}
    if body.tools:
        hosted = [str(t.get("type")) for t in body.tools if t.get("type") != "function"]
        if hosted:
            known = [t for t in hosted if t.startswith(_HOSTED_TOOLS)]
            raise OpenAIError(400, f"tools of type {', '.join(known or hosted)} are not available here: only "
                                   "function tools, which the client runs", param="tools", code="unsupported")
        fields["tools"] = [{"type": "function", "function": {
            key: t[key] for key in ("name", "description", "parameters") if key in t}} for t in body.tools]
    choice = body.tool_choice
    if isinstance(choice, dict):
        if choice.get("type") != "function" or not choice.get("name"):
            raise OpenAIError(400, "tool_choice: only 'auto', 'none', 'required' or a function tool by name",
                              param="tool_choice")
        fields["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    elif choice is not None:
        fields["tool_choice"] = choice
    return fields


def _response_format(text: TextConfig | None) -> dict[str, Any] | None:
    fmt = text.format if text else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    if fmt.type == "json_schema":
        if fmt.schema_ is None:
            raise OpenAIError(400, "text.format.schema: a json_schema format needs its schema", param="text.format")
        return {"type": "json_schema", "json_schema": {"name": fmt.name or "output", "schema": fmt.schema_}}
    raise OpenAIError(400, f"text.format.type: {fmt.type!r} is not one of text, json_object, json_schema",
                      param="text.format")


# --- answers as output items -----------------------------------------------------------------


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _message_item(item_id: str, text: str) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def _reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {"type": "reasoning", "id": item_id, "summary": [], "content": [{"type": "reasoning_text", "text": text}]}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def _output_items(message: dict[str, Any]) -> list[dict[str, Any]]:
    items = []
    if message.get("reasoning_content"):
        items.append(_reasoning_item(_new_id("rs"), message["reasoning_content"]))
    if message.get("content"):
        items.append(_message_item(_new_id("msg"), message["content"]))
    for call in message.get("tool_calls") or ():
        items.append(_call_item(_new_id("fc"), call["id"], call["function"]["name"], call["function"]["arguments"]))
    return items


def _usage(counts: dict[str, Any]) -> dict[str, Any]:
    return {"input_tokens": counts["prompt_tokens"],
            "input_tokens_details": {"cached_tokens": counts["prompt_tokens_details"]["cached_tokens"],
                                     "cache_write_tokens": 0},
            "output_tokens": counts["completion_tokens"], "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": counts["total_tokens"]}


@dataclass
class _Turn:
    """One request's response object, as it is built and once it is done."""

    body: ResponsesRequest
    job: Job
    items: list[dict[str, Any]]  # the conversation as input items: what previous_response_id continues
    id: str = field(default_factory=lambda: _new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))

    def response(self, status: str, output: list[dict[str, Any]], counts: dict[str, Any] | None = None) -> dict[str, Any]:
        b = self.body
        fmt = b.text.format.model_dump(by_alias=True, exclude_none=True) if b.text and b.text.format else {"type": "text"}
        incomplete = status == "incomplete"
        return {
            "id": self.id, "object": "response", "created_at": self.created_at, "status": status,
            "completed_at": int(time.time()) if status in ("completed", "incomplete") else None,
            "model": self.job.model.name, "output": output, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "instructions": b.instructions, "max_output_tokens": b.max_output_tokens, "metadata": b.metadata or {},
            "parallel_tool_calls": b.parallel_tool_calls, "previous_response_id": b.previous_response_id,
            "temperature": b.temperature, "top_p": b.top_p,
            "tool_choice": b.tool_choice if b.tool_choice is not None else "auto", "tools": b.tools or [],
            "text": {"format": fmt}, "truncation": "disabled", "store": b.store, "background": False,
            "reasoning": b.reasoning.model_dump() if b.reasoning else {"effort": None, "summary": None},
            "usage": _usage(counts) if counts is not None else None, "user": b.user,
        }

    def finish(self, request: Request, output: list[dict[str, Any]], counts: dict[str, Any],
               finish_reason: str) -> dict[str, Any]:
        status = "incomplete" if finish_reason == "length" else "completed"
        response = self.response(status, output, counts)
        if self.body.store:
            _store(request).put(response, self.items + [_as_input(item) for item in output])
        return response


def _as_input(item: dict[str, Any]) -> dict[str, Any]:
    """An output item as the input item that continues from it."""
    if item["type"] == "message":
        return {"type": "message", "role": "assistant", "content": item["content"]}
    return item


async def _turn(request: Request, body: ResponsesRequest) -> _Turn:
    if body.background:
        raise OpenAIError(400, "background responses are not supported here; send background: false",
                          param="background", code="unsupported")
    items = _store(request).get(body.previous_response_id).items if body.previous_response_id else []
    items = items + _input_items(body)
    chat = validate({
        "model": body.model, "messages": _chat_messages(items, body.instructions),
        "max_tokens": body.max_output_tokens, "temperature": body.temperature, "top_p": body.top_p,
        "stream": body.stream, "stream_options": {"include_usage": True} if body.stream else None,
        "response_format": _response_format(body.text),
        "reasoning_effort": body.reasoning.effort if body.reasoning else None, **_chat_tools(body),
    }, ChatCompletionRequest)
    return _Turn(body, await chat_job(request, chat), items)


async def create_response(request: Request) -> Response:
    body = parse_body(await read_request_body(request), ResponsesRequest)
    turn = await _turn(request, body)
    if body.stream:
        return await _stream(request, turn)
    [result] = await complete(request, turn.job)
    message = chat_choice(0, result, turn.job, body.parallel_tool_calls)["message"]
    return JSONResponse(turn.finish(request, _output_items(message), chat_usage([result]), result.finish_reason))


# --- streaming -------------------------------------------------------------------------------


class _Events:
    """The typed events of one streamed response, numbered; the output items as they are built."""

    def __init__(self, turn: _Turn) -> None:
        self.turn = turn
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self.open: tuple[str, Any] | None = None  # ("reasoning" | "message", None) or ("call", the call's index)
        self.calls: dict[int, int] = {}  # a streamed call's index → its output index

    def event(self, kind: str, **data: Any) -> dict[str, str]:
        payload = {"type": kind, "sequence_number": self.sequence, **data}
        self.sequence += 1
        return {"event": kind, "data": json.dumps(payload, ensure_ascii=False)}

    def close(self) -> list[dict[str, str]]:
        """The events that finish the open item."""
        if self.open is None:
            return []
        kind, _ = self.open
        self.open = None
        index = len(self.output) - 1
        item = self.output[index]
        item["status"] = "completed"
        out = []
        if kind == "message":
            text = item["content"][0]["text"]
            out += [self.event("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                               text=text, logprobs=[]),
                    self.event("response.content_part.done", item_id=item["id"], output_index=index, content_index=0,
                               part=item["content"][0])]
        elif kind == "reasoning":
            item.pop("status")
            text = item["content"][0]["text"]
            out += [self.event("response.reasoning_text.done", item_id=item["id"], output_index=index,
                               content_index=0, text=text)]
        else:
            out += [self.event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                               name=item["name"], arguments=item["arguments"])]
        return out + [self.event("response.output_item.done", output_index=index, item=item)]

    def open_item(self, kind: str, key: Any, item: dict[str, Any]) -> list[dict[str, str]]:
        out = self.close()
        self.open = (kind, key)
        self.output.append(item)
        index = len(self.output) - 1
        announced = {**item, "status": "in_progress"} if kind != "reasoning" else {**item, "content": []}
        if kind == "message":
            announced["content"] = []
        out.append(self.event("response.output_item.added", output_index=index, item=announced))
        if kind == "message":
            out.append(self.event("response.content_part.added", item_id=item["id"], output_index=index,
                                  content_index=0, part={"type": "output_text", "text": "", "annotations": [],
                                                         "logprobs": []}))
        return out

    def delta(self, delta: dict[str, Any]) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        if text := delta.get("reasoning_content"):
            if self.open is None or self.open[0] != "reasoning":
                out += self.open_item("reasoning", None, _reasoning_item(_new_id("rs"), ""))
            item = self.output[-1]
            item["content"][0]["text"] += text
            out.append(self.event("response.reasoning_text.delta", item_id=item["id"],
                                  output_index=len(self.output) - 1, content_index=0, delta=text))
        if text := delta.get("content"):
            if self.open is None or self.open[0] != "message":
                out += self.open_item("message", None, _message_item(_new_id("msg"), ""))
            item = self.output[-1]
            item["content"][0]["text"] += text
            out.append(self.event("response.output_text.delta", item_id=item["id"], output_index=len(self.output) - 1,
                                  content_index=0, delta=text, logprobs=[]))
        for call in delta.get("tool_calls") or ():
            function = call.get("function") or {}
            if self.open != ("call", call["index"]):
                out += self.open_item("call", call["index"], _call_item(
                    _new_id("fc"), call.get("id", ""), function.get("name", ""), "", "in_progress"))
            item = self.output[-1]
            if arguments := function.get("arguments"):
                item["arguments"] += arguments
                out.append(self.event("response.function_call_arguments.delta", item_id=item["id"],
                                      output_index=len(self.output) - 1, delta=arguments))
        return out


async def _stream(request: Request, turn: _Turn) -> Response:
    """``response.created``, ``response.in_progress``; per output item ``output_item.added``, its
    deltas and ``.done`` events, ``output_item.done``; then ``response.completed`` (or
    ``response.incomplete`` at max_output_tokens); a failure is ``response.failed``."""
    chunks = await chunk_stream(request, [turn.job], turn.id, chat=True, include_usage=True)
    events = _Events(turn)

    async def sse() -> AsyncIterator[dict[str, str]]:
        started = turn.response("in_progress", [])
        yield events.event("response.created", response=started)
        yield events.event("response.in_progress", response=started)
        finish = "stop"
        try:
            async for payload in chunks:
                if "error" in payload:
                    failed = turn.response("failed", events.output)
                    failed["error"] = {"code": "server_error", "message": payload["error"]["message"]}
                    yield events.event("response.failed", response=failed)
                    return
                if not payload["choices"]:  # the last chunk: the usage
                    for event in events.close():
                        yield event
                    done = turn.finish(request, events.output, payload["usage"], finish)
                    yield events.event(f"response.{done['status']}", response=done)
                    return
                choice = payload["choices"][0]
                finish = choice.get("finish_reason") or finish
                for event in events.delta(choice["delta"]):
                    yield event
        finally:
            await chunks.aclose()

    return sse_response(request, sse())


# --- stored responses ------------------------------------------------------------------------


async def get_response(request: Request) -> Response:
    return JSONResponse(_store(request).get(request.path_params["id"]).response)


async def delete_response(request: Request) -> Response:
    _store(request).delete(request.path_params["id"])
    return JSONResponse({"id": request.path_params["id"], "object": "response", "deleted": True})


async def input_items(request: Request) -> Response:
    """The items the response answered (its input, after those of the responses it continues)."""
    stored = _store(request).get(request.path_params["id"])
    output = len(stored.response["output"])
    items = stored.items[:len(stored.items) - output]
    listed = [{"id": item.get("id") or f"item_{i}", **item} for i, item in enumerate(items)]
    return JSONResponse({"object": "list", "data": listed, "has_more": False,
                         "first_id": listed[0]["id"] if listed else None,
                         "last_id": listed[-1]["id"] if listed else None})


async def cancel_response(request: Request) -> Response:
    _store(request).get(request.path_params["id"])
    raise OpenAIError(400, "only background responses can be cancelled, and this server runs none: a response "
                           "is done when its request returns (close a stream to stop its generation)",
                      param="response_id", code="not_cancellable")


_ERRORS = ("400", "404", "413", "429", "503")
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("/responses", create_response, Operation("Create a response (OpenAI's Responses API)", ResponsesRequest,
                                                      streams=True, errors=_ERRORS), ("POST",)),
    Endpoint("/responses/{id}/input_items", input_items, Operation("A stored response's input items",
                                                                   errors=("404",))),
    Endpoint("/responses/{id}/cancel", cancel_response, Operation("Cancel a background response",
                                                                  errors=("400", "404")), ("POST",)),
    Endpoint("/responses/{id}", get_response, Operation("A stored response", errors=("404",))),
    Endpoint("/responses/{id}", delete_response, Operation("Delete a stored response", errors=("404",)),
             ("DELETE",)),
)
