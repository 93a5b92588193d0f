"""Ollama's API under ``/api`` (``chat``, ``generate``, ``embed``, ``embeddings``, ``tags``, ``show``,
``ps``, ``pull``, ``version``), as LocalAI serves it, for the clients that speak it: Open WebUI,
Continue, Raycast, editors, the ``ollama`` Python package.

A thin adapter over the shared path (``serving``): ``/api/chat`` and ``/api/generate`` are rebuilt
as chat (or, ``raw``, completion) requests; their answers stream as NDJSON lines, the default, or
come whole with ``stream: false``. ``options`` map onto sampling; ``keep_alive`` onto the worker's
idle unload; ``/api/pull`` onto the gallery install. Errors are Ollama's ``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from modelyard.compiler.gguf_metadata import read_gguf_metadata
from modelyard.compiler.plan import ModelPlan
from modelyard.compiler.sources import PACKAGE_SCHEME, resolve_package_uri

from .constraints import check_json_schema
from .errors import OpenAIError, error_shape
from .generation import Job, usage
from .prompts import check_prompt_size
from .protocol import ChatCompletionRequest, CompletionRequest, RequestBody, parse_body, validate
from .routes import Endpoint, Operation
from .serving import (
    chat_choice,
    chat_job,
    check_structured_output,
    chunk_stream,
    complete,
    find_model,
    max_tokens_for,
    ndjson_response,
    read_request_body,
    select_model,
)
from .state import server_state
from .tools import arguments_object

log = logging.getLogger(__name__)

# The Ollama release whose API this follows: clients read /api/version to decide what to send.
OLLAMA_VERSION = "0.12.0"
_NEVER = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)  # expires_at of a model kept loaded


@error_shape("/api/")
def ollama_error(error: OpenAIError) -> dict[str, Any]:
    return {"error": error.message}


class OllamaOptions(RequestBody):
    """The ``options`` modelyard acts on; Ollama's others (``num_gpu``, ``mirostat``, ...) are
    ignored, as Ollama ignores those a runner does not have."""

    num_predict: int | None = Field(default=None, ge=-2)  # -1: no limit, -2: until the context is full
    num_ctx: int | None = Field(default=None, ge=1)
    num_keep: int | None = Field(default=None, ge=-1)
    temperature: float | None = Field(default=None, ge=0)
    top_k: int | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, ge=0, le=1)
    min_p: float | None = Field(default=None, ge=0, le=1)
    typical_p: float | None = Field(default=None, ge=0, le=1)
    repeat_penalty: float | None = Field(default=None, ge=0)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: int | None = None
    stop: list[str] | None = None


class OllamaToolCallFunction(RequestBody):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class OllamaToolCall(RequestBody):
    function: OllamaToolCallFunction


class OllamaChatMessage(RequestBody):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None
    thinking: str | None = None
    tool_calls: list[OllamaToolCall] | None = None
    tool_name: str | None = None


class _Generating(RequestBody):
    model: str | None = None
    format: Literal["", "json"] | dict[str, Any] | None = None
    options: OllamaOptions | None = None
    stream: bool = True
    keep_alive: float | str | None = None
    think: bool | Literal["low", "medium", "high"] | None = None


class OllamaChatBody(_Generating):
    messages: list[OllamaChatMessage] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None


class OllamaGenerateBody(_Generating):
    prompt: str = ""
    system: str | None = None
    raw: bool = False
    suffix: str | None = None
    template: str | None = None
    context: list[int] | None = None
    images: list[str] | None = None


class OllamaEmbedBody(RequestBody):
    model: str | None = None
    input: str | list[str] = Field(min_length=1)
    truncate: bool = True
    dimensions: int | None = Field(default=None, ge=1)
    keep_alive: float | str | None = None


class OllamaEmbeddingsBody(RequestBody):
    model: str | None = None
    prompt: str
    keep_alive: float | str | None = None


class OllamaModelBody(RequestBody):
    model: str | None = None
    name: str | None = None  # the older clients' field

    def named(self) -> str:
        if not (self.model or self.name):
            raise OpenAIError(400, "model is required", param="model")
        return self.model or self.name or ""


class OllamaPullBody(OllamaModelBody):
    stream: bool = True
    insecure: bool = False


# --- requests as the shared path's -----------------------------------------------------------


_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|h|m|s))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def keep_alive_seconds(value: float | str | None) -> float | None:
    """Ollama's ``keep_alive``: seconds as a number, or a Go duration ("5m", "1h30m", "0");
    negative is forever (``math.inf``); None when not given."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        negative = text.startswith("-")
        text = text.removeprefix("-")
        try:
            seconds = float(text)
        except ValueError:
            if not _DURATION.match(text):
                raise OpenAIError(400, f"keep_alive: {value!r} is not a duration (e.g. 300, \"5m\", \"1h\", "
                                       "\"-1\" to stay loaded)", param="keep_alive") from None
            units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
            seconds = sum(float(n) * units[u] for n, u in _DURATION_PART.findall(text))
        value = -seconds if negative else seconds
    return math.inf if value < 0 else float(value)


def _served_name(request: Request, name: str | None) -> str | None:
    """Ollama's names carry a tag (``gemma3:latest``): ``:latest`` names the model without it."""
    if name and name.endswith(":latest") and server_state(request).plan.model(name) is None:
        return name.removesuffix(":latest")
    return name


def _sampling(body: _Generating) -> dict[str, Any]:
    o = body.options or OllamaOptions()
    fields: dict[str, Any] = {
        "model": body.model, "temperature": o.temperature, "top_k": o.top_k, "top_p": o.top_p, "min_p": o.min_p,
        "typical_p": o.typical_p, "repeat_penalty": o.repeat_penalty, "presence_penalty": o.presence_penalty,
        "frequency_penalty": o.frequency_penalty, "seed": o.seed, "stop": o.stop, "n_keep": o.num_keep,
        "stream": body.stream, "stream_options": {"include_usage": True} if body.stream else None,
    }
    if o.num_predict is not None:
        fields["max_tokens"] = max(o.num_predict, 0)  # 0: until a stop or the context's end
    if body.format == "json":
        fields["response_format"] = {"type": "json_object"}
    elif isinstance(body.format, dict):
        fields["response_format"] = {"type": "json_schema", "json_schema": {"name": "format", "schema": body.format}}
    if isinstance(body.think, str):
        fields["reasoning_effort"] = body.think
    elif body.think is not None:  # Qwen3's and others' tokenizer templates switch thinking with it
        fields["chat_template_kwargs"] = {"enable_thinking": body.think}
    return fields


def _openai_messages(messages: list[OllamaChatMessage]) -> list[dict[str, Any]]:
    """Ollama's calls have no ids: each assistant call gets one, and a tool message answers the
    earliest unanswered call of its ``tool_name`` (else the earliest unanswered)."""
    out: list[dict[str, Any]] = []
    unanswered: list[tuple[str, str]] = []  # (id, name)
    for i, m in enumerate(messages):
        if m.images:
            raise OpenAIError(400, f"messages.{i}.images: images are not supported (text models only)",
                              param=f"messages.{i}.images")
        message: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.role == "assistant" and m.tool_calls:
            calls = []
            for j, call in enumerate(m.tool_calls):
                call_id = f"call_{i}_{j}"
                unanswered.append((call_id, call.function.name))
                calls.append({"id": call_id, "type": "function", "function": {
                    "name": call.function.name, "arguments": json.dumps(call.function.arguments)}})
            message["tool_calls"] = calls
        if m.role == "tool":
            match = next((c for c in unanswered if c[1] == m.tool_name), unanswered[0] if unanswered else None)
            if match is not None:
                unanswered.remove(match)
                message["tool_call_id"] = match[0]
            if m.tool_name:
                message["name"] = m.tool_name
        out.append(message)
    return out


async def _fit_num_ctx(request: Request, job: Job, options: OllamaOptions | None) -> Job:
    """``num_ctx`` below the model's context bounds prompt and answer together; above it, the
    model's own context is the bound (a loaded model's context is not resized per request)."""
    num_ctx = options.num_ctx if options else None
    if num_ctx is None or (job.model.context_size is not None and num_ctx >= job.model.context_size):
        return job
    prompt = await server_state(request).pool.tokenize(job.model.name, job.prompt, None, True)
    room = num_ctx - len(prompt.tokens)
    if room <= 0:
        raise OpenAIError(400, f"the prompt is {len(prompt.tokens)} tokens: it does not fit options.num_ctx "
                               f"({num_ctx})", param="options.num_ctx", code="context_length_exceeded")
    job.max_tokens = room if job.max_tokens is None else min(job.max_tokens, room)
    return job


async def _load_or_unload(request: Request, body: _Generating, kind: str) -> Response:
    """A request with nothing to generate loads the model, or with ``keep_alive: 0`` unloads it."""
    chat = validate({"model": _served_name(request, body.model), "messages": [{"role": "user", "content": ""}]},
                    ChatCompletionRequest)
    model = await select_model(request, chat, "chat")
    pool = server_state(request).pool
    if keep_alive_seconds(body.keep_alive) == 0:
        await pool.keep_alive(model.name, 0)
        reason = "unload"
    else:
        await pool.tokenize(model.name, "", None, False)  # starts the worker and waits for it
        reason = "load"
    line: dict[str, Any] = {"model": model.name, "created_at": _now(), "done": True, "done_reason": reason}
    line.update({"message": {"role": "assistant", "content": ""}} if kind == "chat" else {"response": ""})
    return JSONResponse(line)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


# --- chat and generate -----------------------------------------------------------------------


async def chat(request: Request) -> Response:
    body = parse_body(await read_request_body(request), OllamaChatBody)
    body.model = _served_name(request, body.model)
    if not body.messages:
        return await _load_or_unload(request, body, "chat")
    request_fields = {**_sampling(body), "messages": _openai_messages(body.messages)}
    if body.tools:
        request_fields["tools"] = body.tools
    job = await chat_job(request, validate(request_fields, ChatCompletionRequest))
    return await _answer(request, body, job, "chat")


async def generate(request: Request) -> Response:
    body = parse_body(await read_request_body(request), OllamaGenerateBody)
    body.model = _served_name(request, body.model)
    for field in ("suffix", "template", "images", "context"):
        if getattr(body, field):
            why = {"suffix": "fill-in-the-middle is not supported", "template": "a request cannot bring its own "
                   "template (the model's YAML sets it)", "images": "images are not supported (text models only)",
                   "context": "context from an earlier answer is not kept; send the conversation to /api/chat"}[field]
            raise OpenAIError(400, f"{field}: {why}", param=field)
    if not body.prompt:
        return await _load_or_unload(request, body, "generate")
    if body.raw:  # the prompt as it is: no template
        return await _answer(request, body, await _raw_job(request, body), "generate")
    messages = [*([{"role": "system", "content": body.system}] if body.system else []),
                {"role": "user", "content": body.prompt}]
    job = await chat_job(request, validate({**_sampling(body), "messages": messages}, ChatCompletionRequest))
    return await _answer(request, body, job, "generate")


async def _raw_job(request: Request, body: OllamaGenerateBody) -> Job:
    fields = _sampling(body)
    fmt = fields.pop("response_format", None)
    for key in ("reasoning_effort", "chat_template_kwargs"):
        fields.pop(key, None)
    completion = validate({**fields, "prompt": body.prompt}, CompletionRequest)
    model = await select_model(request, completion, "completion")
    schema = fmt["json_schema"]["schema"] if fmt and fmt["type"] == "json_schema" else None
    if fmt is not None:
        check_structured_output(model, "format")
        check_json_schema(schema, param="format")
    return Job(model, check_prompt_size(model, body.prompt), completion,
               max_tokens_for(request, model, completion.max_tokens), json_schema=schema,
               json_object=bool(fmt and fmt["type"] == "json_object"), schema_param="format")


async def _answer(request: Request, body: _Generating, job: Job, kind: str) -> Response:
    job = await _fit_num_ctx(request, job, body.options)
    seconds = keep_alive_seconds(body.keep_alive)
    if seconds is not None:
        await server_state(request).pool.keep_alive(job.model.name, seconds)
    started = time.perf_counter_ns()
    is_chat = isinstance(job.body, ChatCompletionRequest)
    if body.stream:
        return await _stream(request, job, kind, is_chat, started)
    [result] = await complete(request, job)
    if is_chat:
        message = chat_choice(0, result, job, True)["message"]
        finish = "stop" if message.get("tool_calls") else result.finish_reason
    else:
        message, finish = {"content": result.text}, result.finish_reason
    line = {"model": job.model.name, "created_at": _now(), **_output(kind, message), "done": True,
            **_final(finish, usage([result]), started)}
    return JSONResponse(line)


def _output(kind: str, message: dict[str, Any]) -> dict[str, Any]:
    """An answer (or a streamed piece of one) as Ollama writes it: ``message`` for chat,
    ``response`` for generate; reasoning as ``thinking``; calls with their arguments as objects."""
    thinking = message.get("reasoning_content")
    if kind == "generate":
        return {"response": message.get("content") or "", **({"thinking": thinking} if thinking else {})}
    out: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
    if thinking:
        out["thinking"] = thinking
    if message.get("tool_calls"):
        out["tool_calls"] = [{"function": {"name": c["function"]["name"],
                                           "arguments": arguments_object(c["function"]["arguments"])}}
                             for c in message["tool_calls"]]
    return {"message": out}


def _final(finish: str, counts: dict[str, Any], started: int, first_token: int | None = None) -> dict[str, Any]:
    """The last line's fields: why it ended and the counts; durations in nanoseconds, only those
    measured (eval_duration from the first token, when streamed)."""
    now = time.perf_counter_ns()
    final: dict[str, Any] = {"done_reason": "length" if finish == "length" else "stop",
                             "total_duration": now - started, "load_duration": 0,
                             "prompt_eval_count": counts["prompt_tokens"], "eval_count": counts["completion_tokens"]}
    if first_token is not None:
        final["prompt_eval_duration"] = first_token - started
        final["eval_duration"] = max(1, now - first_token)
    return final


async def _stream(request: Request, job: Job, kind: str, is_chat: bool, started: int) -> Response:
    chunks = await chunk_stream(request, [job], "ollama", chat=is_chat, include_usage=True)

    async def lines() -> AsyncIterator[str]:
        calls: dict[int, dict[str, Any]] = {}  # streamed call fragments, sent whole at the end (Ollama's way)
        first_token: int | None = None
        finish = "stop"
        try:
            async for payload in chunks:
                if "error" in payload:
                    yield json.dumps({"error": payload["error"]["message"]}) + "\n"
                    return
                if not payload["choices"]:  # the last chunk: the usage
                    last: dict[str, Any] = {"model": job.model.name, "created_at": _now()}
                    if calls:
                        last.update(_output(kind, {"tool_calls": [calls[i] for i in sorted(calls)]}))
                    else:
                        last.update(_output(kind, {}))
                    last.update(done=True, **_final(finish, payload["usage"], started, first_token))
                    yield json.dumps(last, ensure_ascii=False) + "\n"
                    return
                choice = payload["choices"][0]
                if choice.get("finish_reason") is not None:
                    finish = "stop" if choice["finish_reason"] in ("tool_calls", "function_call") else choice["finish_reason"]
                delta = choice["delta"] if is_chat else {"content": choice["text"]}
                for call in delta.get("tool_calls") or ():
                    held = calls.setdefault(call["index"], {"function": {"name": "", "arguments": ""}})
                    held["function"]["name"] += (call.get("function") or {}).get("name") or ""
                    held["function"]["arguments"] += (call.get("function") or {}).get("arguments") or ""
                if delta.get("content") or delta.get("reasoning_content"):
                    first_token = first_token or time.perf_counter_ns()
                    piece = {"model": job.model.name, "created_at": _now(), **_output(kind, delta), "done": False}
                    yield json.dumps(piece, ensure_ascii=False) + "\n"
        finally:
            await chunks.aclose()

    return ndjson_response(request, lines())


# --- embeddings ------------------------------------------------------------------------------


async def embed(request: Request) -> Response:
    """``/api/embed``: several inputs, vectors made unit length (as Ollama's are)."""
    body = parse_body(await read_request_body(request), OllamaEmbedBody)
    body.model = _served_name(request, body.model)
    model = await select_model(request, body, "embeddings")
    inputs = [body.input] if isinstance(body.input, str) else body.input
    started = time.perf_counter_ns()
    reply = await server_state(request).pool.embed(model.name, list(inputs))
    vectors = []
    for vector in reply.vectors:
        if body.dimensions is not None:
            vector = vector[:body.dimensions]
        norm = math.sqrt(sum(x * x for x in vector))
        vectors.append([x / norm for x in vector] if norm else vector)
    await _keep(request, model, body.keep_alive)
    return JSONResponse({"model": model.name, "embeddings": vectors, "total_duration": time.perf_counter_ns() - started,
                         "load_duration": 0, "prompt_eval_count": reply.tokens})


async def embeddings(request: Request) -> Response:
    """``/api/embeddings``, the older route: one prompt, the vector as the model gives it."""
    body = parse_body(await read_request_body(request), OllamaEmbeddingsBody)
    body.model = _served_name(request, body.model)
    model = await select_model(request, body, "embeddings")
    reply = await server_state(request).pool.embed(model.name, [body.prompt])
    await _keep(request, model, body.keep_alive)
    return JSONResponse({"embedding": reply.vectors[0]})


async def _keep(request: Request, model: ModelPlan, keep_alive: float | str | None) -> None:
    seconds = keep_alive_seconds(keep_alive)
    if seconds is not None:
        await server_state(request).pool.keep_alive(model.name, seconds)


# --- models ----------------------------------------------------------------------------------


def _file_facts(model: ModelPlan) -> dict[str, Any]:
    """Size, modification time, a digest and the GGUF header's details of a model's local file."""
    path = model.model if model.model and model.model_is_local else None
    if path is not None and path.startswith(PACKAGE_SCHEME):  # as the worker finds it
        path = resolve_package_uri(path)
    try:
        stat = os.stat(path) if path else None
    except OSError:
        stat = None
    metadata = read_gguf_metadata(path) if path and stat and path.endswith(".gguf") else None
    modified = datetime.fromtimestamp(stat.st_mtime, timezone.utc) if stat else datetime.now(timezone.utc)
    # Ollama's digest is its manifest's; ours names the file's identity (path, size, time), not its bytes.
    digest = hashlib.sha256(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode() if stat
                            else model.name.encode()).hexdigest()
    family = metadata.architecture if metadata else None
    return {
        "size": stat.st_size if stat else 0, "modified_at": modified.isoformat().replace("+00:00", "Z"),
        "digest": digest, "details": {
            "parent_model": "", "format": "gguf" if metadata else model.backend,
            "family": family or "", "families": [family] if family else None,
            "parameter_size": (metadata.size_label if metadata else None) or "",
            "quantization_level": (metadata.quantization if metadata else None) or ""},
        "metadata": metadata,
    }


async def tags(request: Request) -> Response:
    models = server_state(request).plan.models
    facts = await asyncio.to_thread(lambda: [_file_facts(m) for m in models])
    return JSONResponse({"models": [
        {"name": m.name, "model": m.name, "modified_at": f["modified_at"], "size": f["size"], "digest": f["digest"],
         "details": f["details"]} for m, f in zip(models, facts, strict=True)]})


async def show(request: Request) -> Response:
    body = parse_body(await read_request_body(request), OllamaModelBody)
    state = server_state(request)
    model = find_model(state.plan, _served_name(request, body.named()) or "", state.gallery)
    facts = await asyncio.to_thread(_file_facts, model)
    metadata = facts["metadata"]
    info: dict[str, Any] = {"general.architecture": facts["details"]["family"] or model.backend}
    if metadata is not None and metadata.name:
        info["general.name"] = metadata.name
    context = model.context_size or (metadata.context_length if metadata else None)
    if context:
        info[f"{info['general.architecture']}.context_length"] = context
    template = model.templates.chat or model.templates.chat_message or model.templates.tokenizer_template
    capabilities = [*(["completion", "tools"] if model.usecases != ("embeddings",) else []),
                    *(["embedding"] if model.embeddings else [])]
    return JSONResponse({
        "modelfile": f"# modelyard serves {model.name} from {model.source}\nFROM {model.model or ''}\n",
        "parameters": _parameters(model), "template": template.original or template.source if template else "",
        "details": facts["details"], "model_info": info, "capabilities": capabilities,
        "modified_at": facts["modified_at"]})


def _parameters(model: ModelPlan) -> str:
    """The YAML's sampling defaults, written as a Modelfile's PARAMETER lines are shown."""
    s = model.sampling
    lines = [f"{name} {value}" for name, value in (
        ("temperature", s.temperature), ("top_k", s.top_k), ("top_p", s.top_p), ("min_p", s.min_p),
        ("repeat_penalty", s.repeat_penalty), ("seed", s.seed), ("num_predict", s.max_tokens),
        ("num_ctx", model.context_size)) if value is not None]
    lines += [f"stop {json.dumps(stop)}" for stop in model.output.stopwords]
    return "\n".join(lines)


async def ps(request: Request) -> Response:
    state = server_state(request)
    loaded = state.pool.loaded()
    now = datetime.now(timezone.utc)
    running = [m for m in state.plan.models if m.name in loaded]
    facts = await asyncio.to_thread(lambda: [_file_facts(m) for m in running])
    return JSONResponse({"models": [
        {"name": m.name, "model": m.name, "size": f["size"], "digest": f["digest"], "details": f["details"],
         "expires_at": (_NEVER if loaded[m.name] is None else now + timedelta(seconds=loaded[m.name]))
         .isoformat().replace("+00:00", "Z"), "size_vram": 0, "context_length": m.context_size}
        for m, f in zip(running, facts, strict=True)]})


async def pull(request: Request) -> Response:
    """A gallery install, its progress as Ollama's status lines (or one answer, ``stream: false``)."""
    body = parse_body(await read_request_body(request), OllamaPullBody)
    gallery = server_state(request).gallery
    if gallery is None:
        raise OpenAIError(400, "this server installs no models (it was launched without a gallery)", param="model")
    job = gallery.submit(body.named())
    if not body.stream:
        await job.done.wait()
        if job.state == "failed":
            raise OpenAIError(400, f"pulling {body.named()}: {job.error}", param="model")
        return JSONResponse({"status": "success"})

    async def lines() -> AsyncIterator[str]:
        yield json.dumps({"status": "pulling manifest"}) + "\n"
        last: tuple[Any, ...] = ()
        while True:
            finished = job.done.is_set()
            p = job.progress
            now = (p.file_name, p.file_done, p.file_total)
            if p.file_name and now != last:
                last = now
                yield json.dumps({"status": f"pulling {p.file_name}", "digest": p.file_name,
                                  "total": p.file_total or 0, "completed": p.file_done}) + "\n"
            if finished:
                break
            try:
                await asyncio.wait_for(job.done.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
        if job.state == "failed":
            yield json.dumps({"error": f"pulling {body.named()}: {job.error}"}) + "\n"
            return
        yield json.dumps({"status": "verifying sha256 digest"}) + "\n"
        yield json.dumps({"status": "writing manifest"}) + "\n"
        yield json.dumps({"status": "success"}) + "\n"

    return ndjson_response(request, lines())


async def version(request: Request) -> Response:
    return JSONResponse({"version": OLLAMA_VERSION})


_ERRORS = ("400", "404", "413", "429", "503")
ENDPOINTS: tuple[Endpoint, ...] = tuple(Endpoint(path, handler, operation, methods, versioned=False) for
                                        path, handler, operation, methods in (
    ("/api/chat", chat, Operation("Chat (Ollama's API; NDJSON stream unless stream is false)", OllamaChatBody,
                                  errors=_ERRORS), ("POST",)),
    ("/api/generate", generate, Operation("Generate from a prompt (Ollama's API)", OllamaGenerateBody, errors=_ERRORS),
     ("POST",)),
    ("/api/embed", embed, Operation("Embeddings of one or more inputs (Ollama's API)", OllamaEmbedBody, errors=_ERRORS),
     ("POST",)),
    ("/api/embeddings", embeddings, Operation("The embedding of a prompt (Ollama's older API)", OllamaEmbeddingsBody,
                                              errors=_ERRORS), ("POST",)),
    ("/api/tags", tags, Operation("The served models (Ollama's API)"), ("GET",)),
    ("/api/show", show, Operation("A model's details (Ollama's API)", OllamaModelBody, errors=("400", "404")), ("POST",)),
    ("/api/ps", ps, Operation("The models loaded now (Ollama's API)"), ("GET",)),
    ("/api/pull", pull, Operation("Install a gallery entry, with progress (Ollama's API)", OllamaPullBody,
                                  errors=("400", "429")), ("POST",)),
    ("/api/version", version, Operation("The Ollama API version served"), ("GET",)),
))
