"""Anthropic's Messages API (``POST /v1/messages``, ``POST /v1/messages/count_tokens``), as
llama.cpp's server and LocalAI serve it, so that Claude Code and Anthropic's SDKs run on local
models.

A thin adapter: a Messages request is rebuilt as a chat completion request (system, text,
``tool_use`` and ``tool_result`` blocks become OpenAI's messages, tools and tool choice) and runs
on the shared chat path (``serving.chat_job``); the answer, whole or streamed, is turned back
into Anthropic's content blocks and events. Errors on these paths come in Anthropic's shape.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .errors import OpenAIError, error_shape
from .generation import Job
from .protocol import ChatCompletionRequest, RequestBody, parse_body, validate
from .routes import Endpoint, Operation
from .serving import chat_choice, chat_job, chunk_stream, complete, read_request_body, sse_response
from .state import server_state
from .tools import arguments_object

# OpenAI's finish reasons as Anthropic's stop reasons.
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use"}
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 408: "timeout_error", 413: "request_too_large", 429: "rate_limit_error",
                503: "overloaded_error"}


@error_shape("/v1/messages", "/messages")
def anthropic_error(error: OpenAIError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": _ERROR_TYPES.get(error.status, "api_error"), "message": error.message}}


class AnthropicContentBlock(RequestBody):
    type: str
    text: str | None = None
    id: str | None = None  # tool_use
    name: str | None = None
    input: dict[str, Any] | None = None
    tool_use_id: str | None = None  # tool_result
    content: str | list[AnthropicContentBlock] | None = None
    is_error: bool = False
    thinking: str | None = None  # a thinking block sent back in the history


class AnthropicMessage(RequestBody):
    role: Literal["user", "assistant"]
    content: str | list[AnthropicContentBlock]


class AnthropicTool(RequestBody):
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None  # "custom", or a server tool's versioned type (web_search_20250305, ...)


class AnthropicToolChoice(RequestBody):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False


class AnthropicOutputFormat(RequestBody):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class AnthropicOutputConfig(RequestBody):
    effort: str | None = Field(default=None, max_length=32)  # the template's reasoning_effort
    format: AnthropicOutputFormat | None = None  # structured output: the answer is JSON of this schema


class AnthropicMessagesRequest(RequestBody):
    model: str | None = None
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[AnthropicContentBlock] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    stream: bool = False
    tools: list[AnthropicTool] | None = None
    tool_choice: AnthropicToolChoice | None = None
    output_config: AnthropicOutputConfig | None = None


class AnthropicCountTokensRequest(RequestBody):
    model: str | None = None
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[AnthropicContentBlock] | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: AnthropicToolChoice | None = None


def _text(content: str | list[AnthropicContentBlock] | None, where: str) -> str:
    """The text of a string or of text blocks; other blocks (images, documents) are refused."""
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for block in content:
        if block.type != "text":
            raise OpenAIError(400, f"{where}: content blocks of type {block.type!r} are not supported here "
                                   "(text, tool_use and tool_result only)", param=where)
        parts.append(block.text or "")
    return "".join(parts)


def _openai_messages(body: AnthropicMessagesRequest | AnthropicCountTokensRequest) -> list[dict[str, Any]]:
    """Anthropic's turns as OpenAI's messages: a user turn's ``tool_result`` blocks become ``tool``
    messages (before its text, as they answer the turn before), an assistant turn's ``tool_use``
    blocks its ``tool_calls``. Thinking blocks sent back are dropped, as templates expect."""
    messages: list[dict[str, Any]] = []
    if body.system:
        messages.append({"role": "system", "content": _text(body.system, "system")})
    for i, turn in enumerate(body.messages):
        where = f"messages.{i}.content"
        blocks = [AnthropicContentBlock(type="text", text=turn.content)] if isinstance(turn.content, str) else turn.content
        texts, calls = [], []
        for block in blocks:
            if block.type == "text":
                texts.append(block.text or "")
            elif block.type == "tool_use" and turn.role == "assistant":
                if not block.id or not block.name:
                    raise OpenAIError(400, f"{where}: a tool_use block needs an id and a name", param=where)
                calls.append({"id": block.id, "type": "function",
                              "function": {"name": block.name, "arguments": json.dumps(block.input or {})}})
            elif block.type == "tool_result" and turn.role == "user":
                if not block.tool_use_id:
                    raise OpenAIError(400, f"{where}: a tool_result block needs its tool_use_id", param=where)
                result = _text(block.content, where)
                messages.append({"role": "tool", "tool_call_id": block.tool_use_id,
                                 "content": f"Error: {result}" if block.is_error else result})
            elif block.type in ("thinking", "redacted_thinking") and turn.role == "assistant":
                continue
            else:
                raise OpenAIError(400, f"{where}: content blocks of type {block.type!r} are not supported in "
                                       f"{turn.role} turns here", param=where)
        if texts or calls or turn.role == "assistant":
            message: dict[str, Any] = {"role": turn.role, "content": "".join(texts)}
            if calls:
                message["tool_calls"] = calls
            messages.append(message)
    return messages


def _openai_tools(body: AnthropicMessagesRequest | AnthropicCountTokensRequest) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if body.tools:
        server_tools = [t.name for t in body.tools if t.type not in (None, "custom")]
        if server_tools:
            raise OpenAIError(400, f"server tools are not available here: {', '.join(server_tools)} "
                                   "(only tools with an input_schema, which the client runs)", param="tools")
        fields["tools"] = [{"type": "function", "function": {
            "name": t.name, "description": t.description or "",
            "parameters": t.input_schema or {"type": "object", "properties": {}}}} for t in body.tools]
    choice = body.tool_choice
    if choice is not None:
        if choice.type == "tool" and not choice.name:
            raise OpenAIError(400, "tool_choice: type 'tool' needs the tool's name", param="tool_choice")
        fields["tool_choice"] = ({"type": "function", "function": {"name": choice.name}} if choice.type == "tool"
                                 else {"any": "required"}.get(choice.type, choice.type))
        fields["parallel_tool_calls"] = not choice.disable_parallel_tool_use
    return fields


def _chat_request(body: AnthropicMessagesRequest, stream: bool) -> ChatCompletionRequest:
    return validate({
        "model": body.model, "messages": _openai_messages(body), "max_tokens": body.max_tokens,
        "stop": body.stop_sequences, "temperature": body.temperature, "top_p": body.top_p, "top_k": body.top_k,
        "stream": stream, "stream_options": {"include_usage": True} if stream else None, **_openai_tools(body),
        **_output_config(body.output_config),
    }, ChatCompletionRequest)


def _output_config(config: AnthropicOutputConfig | None) -> dict[str, Any]:
    if config is None:
        return {}
    fields: dict[str, Any] = {"reasoning_effort": config.effort}
    if config.format is not None:
        fields["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": config.format.schema_}}
    return fields


def _stop_reason(finish_reason: str, stop: str | None, body: AnthropicMessagesRequest) -> tuple[str, str | None]:
    """Anthropic's (stop_reason, stop_sequence): ``stop_sequence`` only for one of the request's
    own; the model's end-of-turn stops (the YAML's) are ``end_turn``."""
    if stop is not None and stop in (body.stop_sequences or ()):
        return "stop_sequence", stop
    return _STOP_REASONS.get(finish_reason, "end_turn"), None


def _content_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if message.get("reasoning_content"):
        blocks.append({"type": "thinking", "thinking": message["reasoning_content"], "signature": ""})
    if message.get("content"):
        blocks.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or ():
        blocks.append({"type": "tool_use", "id": call["id"], "name": call["function"]["name"],
                       "input": arguments_object(call["function"]["arguments"])})
    return blocks


async def messages(request: Request) -> Response:
    body = parse_body(await read_request_body(request), AnthropicMessagesRequest)
    job = await chat_job(request, _chat_request(body, body.stream))
    message_id = f"msg_{uuid.uuid4().hex}"
    if body.stream:
        return await _stream(request, job, body, message_id)
    [result] = await complete(request, job)
    choice = chat_choice(0, result, job, job.body.parallel_tool_calls)
    stop_reason, stop_sequence = _stop_reason(choice["finish_reason"], result.stop_sequence, body)
    return JSONResponse({
        "id": message_id, "type": "message", "role": "assistant", "model": job.model.name,
        "content": _content_blocks(choice["message"]), "stop_reason": stop_reason, "stop_sequence": stop_sequence,
        "usage": {"input_tokens": result.prompt_tokens, "output_tokens": result.completion_tokens,
                  "cache_read_input_tokens": result.cached_tokens},
    })


async def _stream(request: Request, job: Job, body: AnthropicMessagesRequest, message_id: str) -> Response:
    """Anthropic's event stream: ``message_start``, then per content block ``content_block_start``,
    its deltas (``thinking_delta``, ``text_delta``, ``input_json_delta``), ``content_block_stop``;
    then ``message_delta`` (stop reason, usage) and ``message_stop``; a failure is an ``error``
    event."""
    chunks = await chunk_stream(request, [job], message_id, chat=True, include_usage=True)

    def event(kind: str, **data: Any) -> dict[str, str]:
        return {"event": kind, "data": json.dumps({"type": kind, **data}, ensure_ascii=False)}

    async def events() -> AsyncIterator[dict[str, str]]:
        yield event("message_start", message={
            "id": message_id, "type": "message", "role": "assistant", "model": job.model.name, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}})
        block: tuple[str, int] | None = None  # the open block: (its kind, or a call's index), its index
        count = 0
        finish, stop_sequence = "stop", None
        try:
            async for payload in chunks:
                if "error" in payload:
                    yield event("error", error={"type": "api_error", "message": payload["error"]["message"]})
                    return
                if not payload["choices"]:  # the last chunk: usage
                    u = payload["usage"]
                    reason, stop_sequence = _stop_reason(finish, stop_sequence, body)
                    if block is not None:
                        yield event("content_block_stop", index=block[1])
                    yield event("message_delta", delta={"stop_reason": reason, "stop_sequence": stop_sequence},
                                usage={"input_tokens": u["prompt_tokens"], "output_tokens": u["completion_tokens"]})
                    yield event("message_stop")
                    return
                choice = payload["choices"][0]
                if choice["finish_reason"] is not None:
                    finish, stop_sequence = choice["finish_reason"], choice.get("stop_reason")
                delta = choice["delta"]
                for kind, start, content in _block_deltas(delta):
                    if block is None or block[0] != kind:
                        if block is not None:
                            yield event("content_block_stop", index=block[1])
                            count += 1
                        block = (kind, count)
                        yield event("content_block_start", index=count, content_block=start)
                    if content is not None:
                        yield event("content_block_delta", index=count, delta=content)
        finally:
            await chunks.aclose()

    return sse_response(request, events())


def _block_deltas(delta: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any] | None]]:
    """An OpenAI delta as (block kind, the block's start, its delta) triples; a tool call's kind
    is its index, so each call is its own block."""
    out: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
    if delta.get("reasoning_content"):
        out.append(("thinking", {"type": "thinking", "thinking": "", "signature": ""},
                    {"type": "thinking_delta", "thinking": delta["reasoning_content"]}))
    if delta.get("content"):
        out.append(("text", {"type": "text", "text": ""}, {"type": "text_delta", "text": delta["content"]}))
    for call in delta.get("tool_calls") or ():
        function = call.get("function") or {}
        start = {"type": "tool_use", "id": call.get("id", ""), "name": function.get("name", ""), "input": {}}
        arguments = function.get("arguments")
        out.append((f"call{call['index']}", start,
                    {"type": "input_json_delta", "partial_json": arguments} if arguments else None))
    return out


async def count_tokens(request: Request) -> Response:
    """The prompt's tokens as the model's template renders the request (tools included)."""
    body = parse_body(await read_request_body(request), AnthropicCountTokensRequest)
    chat = validate({"model": body.model, "messages": _openai_messages(body), **_openai_tools(body)},
                    ChatCompletionRequest)
    job = await chat_job(request, chat)
    tokens = await server_state(request).pool.tokenize(job.model.name, job.prompt, None, True)
    return JSONResponse({"input_tokens": len(tokens.tokens)})


_ERRORS = ("400", "404", "413", "429", "503")
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("/messages", messages, Operation("Create a message (Anthropic's Messages API)", AnthropicMessagesRequest,
                                              streams=True, errors=_ERRORS), ("POST",)),
    Endpoint("/messages/count_tokens", count_tokens, Operation(
        "Count a message request's input tokens (Anthropic's Messages API)", AnthropicCountTokensRequest, errors=_ERRORS),
        ("POST",)),
)
