"""The request path every API surface shares (OpenAI's routes in ``app.py``; Anthropic's, Ollama's
and the Responses API in their own modules, as thin adapters over it): picking the model,
admission, a chat request made into a ``Job``, its choices run whole or streamed as OpenAI-shaped
chunks that each surface renders in its own shape.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Message, Send

from modelyard.compiler import backends
from modelyard.compiler.plan import LaunchPlan, ModelPlan, ToolGrammar

from .backends import missing_backend_message
from .constraints import check_grammar, check_json_schema
from .errors import ClientGone, OpenAIError
from .gallery_api import GalleryService
from .gbnf import CallGrammarShape
from .generation import (
    Admission,
    ChoiceResult,
    Job,
    Piece,
    chat_logprobs,
    choice_streams,
    collect,
    completion_logprobs,
    merge,
    usage,
)
from .loose_models import LooseModels
from .messages import Failure
from .prompts import PromptMessage, chat_prompt, check_prompt_size
from .protocol import ChatCompletionRequest, ChatMessage, Sampling, read_body
from .reasoning import ReasoningStream
from .reasoning import split as split_reasoning
from .state import server_state
from .tools import ChoiceDeltas, ToolCall, ToolRequest, assistant_message, parse_tool_request

log = logging.getLogger(__name__)

FINGERPRINT = "modelyard-0.1"


# --- models ----------------------------------------------------------------------------------


async def add_model(app: Starlette, model: ModelPlan) -> None:
    plan: LaunchPlan = app.state.server.plan
    if plan.model(model.name) is not None:
        return  # already served (installed earlier, or a YAML of the same name)
    why = missing_backend_message(model.backend)
    if why:
        raise OpenAIError(409, f"{model.name} is installed but cannot be served here: {why}")
    app.state.server.pool.add(model)
    app.state.server.plan = plan.model_copy(update={"models": (*plan.models, model)})


async def remove_model(app: Starlette, name: str) -> None:
    plan: LaunchPlan = app.state.server.plan
    if plan.model(name) is None:
        return
    app.state.server.plan = plan.model_copy(update={"models": tuple(m for m in plan.models if m.name != name)})
    await app.state.server.pool.remove(name)


def find_model(plan: LaunchPlan, name: str, gallery: GalleryService | None = None) -> ModelPlan:
    model = plan.model(gallery.served_name(name) if gallery is not None else name)
    if model is None and gallery is not None and gallery.on_demand:
        ref = gallery.on_demand_ref(name)
        if ref is not None:
            job = gallery.submit(ref)
            raise OpenAIError(503, f"model {name!r} is being installed ({ref}); progress: /models/jobs/{job.id}",
                              param="model", code="model_installing", retry_after=10)
    if model is None:
        available = ", ".join(m.name for m in plan.models) or "none"
        raise OpenAIError(404, f"model {name!r} not found; available models: {available}",
                          param="model", code="model_not_found")
    return model


async def select_model(request: Request, body: Sampling, usecase: str) -> ModelPlan:
    """Body ``model``; else a model named by the bearer token (only when API keys are off: then
    the token is the key); else LocalAI's default: the first model (in name order) that is for
    this kind of request (its ``known_usecases``, or what its templates imply), else the first
    text model. ``known_usecases`` only picks this default, as in LocalAI: any text model serves
    chat, completion and edit requests when named."""
    plan: LaunchPlan = server_state(request).plan
    name = body.model
    if not name:
        token = "" if server_state(request).auth else request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if token and plan.model(token) is not None:
            name = token
        else:
            name = _default_model(plan, usecase)
    model = plan.model(name)
    if model is None and server_state(request).loose is not None:
        model = await _adopt_loose_file(request, name)
    if model is None:
        model = find_model(plan, name, server_state(request).gallery)
    request.state.model = model.name  # the metrics' model label
    if usecase == "embeddings" and not model.embeddings:
        raise OpenAIError(400, f"model {model.name!r} does not serve embeddings (its YAML needs 'embeddings: true')",
                          param="model", code="unsupported_usecase")
    if usecase != "embeddings" and model.usecases == ("embeddings",):
        raise OpenAIError(400, f"model {model.name!r} serves embeddings only", param="model",
                          code="unsupported_usecase")
    if getattr(body, "logit_bias", None) and not backends.get(model.backend).logit_bias:
        raise OpenAIError(400, f"logit_bias is not supported by {model.backend} models ({model.name!r}) yet",
                          param="logit_bias", code="unsupported")
    return model


async def _adopt_loose_file(request: Request, name: str) -> ModelPlan | None:
    """A GGUF file of the models directory named by a request and not served yet (dropped in
    after launch, or in a subdirectory): compiled as a bare GGUF is at launch, then served under
    that name. A file some model already serves is that model (no second worker for it)."""
    state = server_state(request)
    loose: LooseModels = state.loose
    path = await asyncio.to_thread(loose.path_of, name)
    if path is None:
        return None
    served = next((m for m in state.plan.models if m.model and m.model_is_local
                   and os.path.realpath(m.model) == str(path)), None)
    if served is not None:
        return served
    async with state.adopting:  # one compile and one worker per file, however many ask at once
        if state.plan.model(name) is None:
            model = await asyncio.to_thread(loose.compile, name)
            if model is None:
                raise OpenAIError(400, f"{name!r} is a file of the models directory that modelyard cannot serve "
                                       "(not a readable GGUF model)", param="model", code="model_not_servable")
            await add_model(request.app, model)
            log.info("serving %s, a GGUF file found in the models directory after launch", name)
    return state.plan.model(name)


def _default_model(plan: LaunchPlan, usecase: str) -> str:
    """LocalAI's ``BuildFilteredFirstAvailableDefaultModel`` (core/http/middleware/request.go l.92)."""
    fitting = [m for m in plan.models if usecase in m.usecases]
    if not fitting and usecase != "embeddings":
        fitting = [m for m in plan.models if m.usecases != ("embeddings",)]
    if not fitting:
        raise OpenAIError(400, f"model is required: no model serves {usecase} requests by default; name one of "
                               + (", ".join(m.name for m in plan.models) or "none"), param="model",
                          code="missing_model")
    return fitting[0].name


# --- admission and whole answers -------------------------------------------------------------


async def read_request_body(request: Request) -> bytes:
    return await read_body(request, server_state(request).plan.server.max_body_bytes)


def check_n(request: Request, body: Sampling) -> None:
    max_n = server_state(request).plan.server.max_n
    if body.n > max_n:
        raise OpenAIError(400, f"n must be at most {max_n}", param="n", code="invalid_value")


def max_tokens_for(request: Request, model: ModelPlan, requested: int | None) -> int | None:
    """The request's value, else the YAML's; None (and a request's 0, LocalAI's "no limit") means
    until a stop or the end of the context (LocalAI's ``n_predict = -1``, grpc-server.cpp l.233),
    on every endpoint. Never above the server's cap."""
    cap = server_state(request).plan.server.max_tokens_cap
    if cap is not None and requested is not None and requested > cap:
        raise OpenAIError(400, f"max_tokens must be at most {cap} on this server", param="max_tokens",
                          code="invalid_value")
    chosen = model.sampling.max_tokens if requested is None else (requested or None)
    return cap if cap is not None and (chosen is None or chosen > cap) else chosen


class Ticket:
    """A place in the admission counts, given back exactly once."""

    def __init__(self, request: Request, jobs: list[Job]) -> None:
        self.admission: Admission = server_state(request).admission
        self.model, self.n = jobs[0].model.name, sum(job.body.n for job in jobs)
        self.admission.enter(self.model, self.n)
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.admission.leave(self.model, self.n)


async def complete(request: Request, *jobs: Job) -> list[ChoiceResult]:
    """All choices, unless the client goes away first: then the generations are cancelled (a
    streamed one stops at its next failed send; this one has no send until the end)."""
    ticket = Ticket(request, list(jobs))
    work = asyncio.ensure_future(collect(request, list(jobs)))
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((work, watch), return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            work.cancel()  # closing the choices cancels their generations in the worker
            await asyncio.gather(work, return_exceptions=True)
            log.info("client went away; its generation was cancelled")
            raise ClientGone()
        return work.result()
    finally:
        watch.cancel()
        ticket.release()


async def _disconnected(request: Request) -> None:
    """Returns once the client has disconnected (its body is read by then, so the next ASGI
    message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass

# --- chat ------------------------------------------------------------------------------------


async def chat_job(request: Request, body: ChatCompletionRequest) -> Job:
    """A chat request checked and made into the job that runs it: model, prompt through its
    template, tools, structured output, grammar and token limit. Every chat-shaped surface
    (Chat Completions, Messages, Ollama's chat, Responses) builds its request into this one."""
    check_n(request, body)
    if body.top_logprobs is not None and not body.logprobs:
        raise OpenAIError(400, "top_logprobs requires logprobs: true", param="top_logprobs", code="invalid_value")
    tools = parse_tool_request(body.tools, body.tool_choice, body.functions, body.function_call)
    model = await select_model(request, body, "chat")
    # Off the event loop: a heavy template must not stall other requests (and /healthz).
    chat = await asyncio.to_thread(prepare_chat, model, body, tools)
    fmt = body.response_format
    requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    return Job(model, chat.prompt, body, max_tokens_for(request, model, requested), json_schema=chat.json_schema,
               json_object=bool(fmt and fmt.type == "json_object"), grammar=body.grammar,
               logprobs=(body.top_logprobs or 0) if body.logprobs else None, tools=chat.tools,
               schema_param="tools" if chat.tools is not None and chat.tools.forced else "response_format")


@dataclasses.dataclass(frozen=True)
class PreparedChat:
    prompt: str
    tools: ToolRequest | None  # as the model reads calls, with its no-action function when constrained
    json_schema: dict[str, Any] | None  # what the generation is constrained to


def prepare_chat(model: ModelPlan, body: ChatCompletionRequest, tools: ToolRequest | None) -> PreparedChat:
    """The prompt and the constraint for a chat request to ``model``, from the request alone:
    what LocalAI's chat endpoint builds before it calls the backend (chat.go l.164-386; the
    Go differential in tests/launcher/test_localai_prompt_differential.py holds the two
    together)."""
    if tools is not None:  # read calls as the model's YAML says (its `function:` block)
        tools = dataclasses.replace(tools, parsing=model.function_parsing)
    fmt = body.response_format
    json_schema = (fmt.json_schema or {}).get("schema") if fmt and fmt.type == "json_schema" else None
    grammar = model.tool_grammar
    if tools is not None and tools.choice == "auto" and grammar.enabled and (fmt is None or fmt.type == "text") \
            and body.grammar is None and backends.get(model.backend).structured_output:
        # LocalAI's call grammar: a call, or the no-action function whose message is the answer
        # (a request's own GBNF grammar wins: LocalAI lets the call grammar replace it, chat.go l.355).
        if grammar.no_action is not None:
            tools = tools.with_no_action(grammar.no_action, grammar.no_action_description)
        tools = dataclasses.replace(tools, shape=_call_shape(grammar, mixed=grammar.mixed_mode))
        json_schema = tools.call_schema(parallel=grammar.parallel_calls)
        check_json_schema(json_schema, param="tools")
    elif tools is not None and tools.forced:
        if fmt is not None and fmt.type != "text":
            raise OpenAIError(400, "response_format cannot be combined with a required or named tool call",
                              param="response_format")
        if grammar.enabled:  # the YAML's prefix; never text instead of the call the client asks for
            tools = dataclasses.replace(tools, shape=_call_shape(grammar, mixed=False))
        json_schema = tools.call_schema()  # the grammar that makes the call always parse
        check_structured_output(model, "tools")
        check_json_schema(json_schema, param="tools")
    else:
        if fmt is not None and fmt.type != "text":
            check_structured_output(model, "response_format")
        check_json_schema(json_schema, param="response_format")
        if json_schema is not None and tools is not None and tools.offered:  # auto: a call, or the answer
            json_schema = tools.call_schema(answer=json_schema)
    check_grammar_support(model, body.grammar)
    messages = [PromptMessage(m.role, m.text(), _calls_of(m), m.tool_call_id, m.name or "") for m in body.messages]
    constrained = json_schema is not None or body.grammar is not None or bool(fmt and fmt.type == "json_object")
    prompt = chat_prompt(model, messages, tools, reasoning_effort=body.reasoning_effort,
                         template_kwargs=body.chat_template_kwargs, constrained=constrained)
    return PreparedChat(check_prompt_size(model, prompt), tools, json_schema)


def _call_shape(grammar: ToolGrammar, mixed: bool) -> CallGrammarShape | None:
    shape = CallGrammarShape(prefix=grammar.prefix, mixed=mixed, text_or_call=grammar.no_mixed_free_string,
                             text_after=grammar.expect_strings_after_json)
    return None if shape.plain else shape


def chat_choice(index: int, result: ChoiceResult, job: Job, parallel: bool) -> dict[str, Any]:
    # The reasoning block first: a tool call is read from what remains (LocalAI's order).
    reasoning, text = split_reasoning(result.text, job.model.reasoning, job.reasoning_opened)
    message, finish_reason = assistant_message(text, result.finish_reason, job.tools, parallel)
    if reasoning:
        message["reasoning_content"] = message["reasoning"] = reasoning  # OpenAI clients' name, LocalAI's
    return {"index": index, "message": message, "logprobs": chat_logprobs(result.logprobs),
            "finish_reason": finish_reason, "stop_reason": result.stop_sequence}


def _calls_of(message: ChatMessage) -> tuple[ToolCall, ...]:
    if message.tool_calls:
        return tuple(ToolCall(c.id, c.function.name, c.function.arguments, c.index) for c in message.tool_calls)
    if message.function_call is not None:  # legacy: one call, no id
        return (ToolCall("", message.function_call.name, message.function_call.arguments),)
    return ()


def check_grammar_support(model: ModelPlan, grammar: str | None) -> None:
    if grammar is not None and not backends.get(model.backend).grammar:
        raise OpenAIError(400, f"grammar (GBNF) needs a llama-cpp model; {model.name!r} runs on {model.backend}: "
                               "use response_format with a JSON Schema", param="grammar", code="unsupported")
    check_grammar(grammar)


def check_structured_output(model: ModelPlan, param: str) -> None:
    """Refused here, before the request reaches the worker, when the backend cannot constrain output."""
    if not backends.get(model.backend).structured_output:
        what = "forced tool calls (tool_choice required or a named tool)" if param == "tools" else "response_format"
        raise OpenAIError(400, f"{what} cannot be honoured by {model.name!r}: {model.backend} models do not "
                               "constrain output to a JSON Schema yet", param=param, code="unsupported")


# --- streaming -------------------------------------------------------------------------------


async def chunk_stream(request: Request, jobs: list[Job], completion_id: str, *, chat: bool,
                       include_usage: bool = False) -> AsyncIterator[dict[str, Any]]:
    """A streamed request's chunks, in OpenAI's shapes (``chat.completion.chunk`` or
    ``text_completion``); with ``include_usage`` a last chunk with no choices carries the usage.
    It waits for the first token before it returns, so that a request the backend refuses
    (prompt too long, model failing to load) raises here, while an HTTP error status can still
    be sent; a failure after that is the last item, ``{"error": {...}}``."""
    job = jobs[0]  # the settings every job of a request shares (model, body)
    created = int(time.time())

    def chunk(choices: list[dict[str, Any]], usage: Any = None) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "id": completion_id, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created, "model": job.model.name, "system_fingerprint": FINGERPRINT, "choices": choices,
        }
        if include_usage:
            payload["usage"] = usage
        return payload

    offsets: dict[int, int] = {}  # per choice: the characters sent so far (echo included), for text_offset

    def piece(index: int, text: str | None, finish: str | None = None,
              entries: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        wanted = entries if job.logprobs is not None and text is not None else None
        logprobs = completion_logprobs(wanted, offsets.get(index, 0))
        offsets[index] = offsets.get(index, 0) + len(text or "")
        return {"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": finish}

    def chat_piece(index: int, delta: dict[str, Any], finish: str | None = None,
                   entries: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        wanted = entries if job.logprobs is not None and "content" in delta else None
        return {"index": index, "delta": delta, "logprobs": chat_logprobs(wanted), "finish_reason": finish}

    ticket = Ticket(request, jobs)
    # The choices decode at once; their chunks interleave, each naming its choice's index.
    choices = merge(choice_streams(request, jobs))
    try:
        first = await anext(choices)
    except BaseException:
        ticket.release()
        await choices.aclose()
        raise

    async def chunks() -> AsyncIterator[dict[str, Any]]:
        results: dict[int, ChoiceResult] = {}
        deltas: dict[int, ChoiceDeltas | None] = {}
        thinking: dict[int, ReasoningStream] = {}  # chat: reasoning blocks split off as they stream

        def chat_deltas(index: int, text: str, final: bool = False) -> list[dict[str, Any]]:
            reasoning, content = thinking[index].feed(text, final)
            out = [{"reasoning_content": reasoning, "reasoning": reasoning}] if reasoning else []
            tools = deltas[index]
            assert tools is not None
            return out + tools.text(content) if content else out

        try:
            async for index, item in _chain([first], choices):
                if index not in deltas:  # this choice's first chunk
                    deltas[index] = ChoiceDeltas(job.tools, job.body.parallel_tool_calls) if chat else None
                    if chat:
                        thinking[index] = ReasoningStream(job.model.reasoning, job.reasoning_opened)
                        yield chunk([chat_piece(index, {"role": "assistant", "content": ""})])
                    if echo := jobs[index // job.body.n].echo:
                        scored = isinstance(item, Piece) and item.echo  # echo with logprobs: its entries
                        yield chunk([piece(index, echo, entries=item.logprobs if scored else None)])
                        if scored:
                            continue
                tools = deltas[index]
                if isinstance(item, ChoiceResult):
                    results[index] = item
                    if tools is None:
                        yield chunk([piece(index, None, item.finish_reason)])
                        continue
                    for delta in chat_deltas(index, "", final=True):  # held-back text: no tag after all
                        yield chunk([chat_piece(index, delta)])
                    last, finish_reason = tools.finish(item.finish_reason)
                    for delta in last:
                        yield chunk([chat_piece(index, delta)])
                    # vLLM's stop_reason: the stop sequence that ended the choice (Messages' stop_sequence)
                    yield chunk([{**chat_piece(index, {}, finish_reason), "stop_reason": item.stop_sequence}])
                elif tools is None:
                    yield chunk([piece(index, item.text, entries=item.logprobs)])
                elif not item.text:  # logprobs of tokens that made no text
                    yield chunk([chat_piece(index, {"content": ""}, entries=item.logprobs)])
                else:
                    for delta in chat_deltas(index, item.text):
                        yield chunk([chat_piece(index, delta, entries=item.logprobs)])
            if include_usage:
                yield chunk([], usage([results[i] for i in sorted(results)], job.body.n))
        except (OpenAIError, Failure) as exc:  # after the first byte: the stream's last item
            error = exc if isinstance(exc, OpenAIError) else OpenAIError.from_failure(exc)
            yield error.body()
        finally:
            await choices.aclose()
            ticket.release()

    return chunks()


async def _chain(first: list, rest: AsyncIterator) -> AsyncIterator:
    for item in first:
        yield item
    async for item in rest:
        yield item


def sse_response(request: Request, events: AsyncIterator[dict[str, str]]) -> EventSourceResponse:
    """Server-sent events as every streaming surface sends them.

    A client that stops reading must not hold a generation slot: after stream_send_timeout_s
    without progress the send fails and the generators' ``finally`` cancels the generation. On
    SIGTERM a running stream may finish within the drain time (sse-starlette would otherwise cut
    every stream at once), a second short of it so the workers still stop cleanly."""
    server = server_state(request).plan.server
    return EventSourceResponse(events, sep="\n", ping=15, send_timeout=server.stream_send_timeout_s,
                               shutdown_grace_period=max(0, server.drain_timeout_s - 1))


class NdjsonResponse(StreamingResponse):
    """Newline-delimited JSON (Ollama's streams) with the SSE surfaces' guarantee: a client that
    takes no bytes for ``send_timeout`` s is dropped, and closing the lines cancels its generation."""

    def __init__(self, lines: AsyncIterator[str], send_timeout: float) -> None:
        super().__init__(lines, media_type="application/x-ndjson")
        self.send_timeout = send_timeout

    async def stream_response(self, send: Send) -> None:
        async def timed(message: Message) -> None:
            with anyio.fail_after(self.send_timeout):
                await send(message)

        try:
            await super().stream_response(timed)
        except TimeoutError:
            log.info("an NDJSON client took nothing for %.0f s; its generation was cancelled", self.send_timeout)
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]  # the lines' generator


def ndjson_response(request: Request, lines: AsyncIterator[str]) -> NdjsonResponse:
    return NdjsonResponse(lines, server_state(request).plan.server.stream_send_timeout_s)
