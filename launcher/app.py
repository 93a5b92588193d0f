"""The OpenAI-compatible Starlette app. ``create_app(plan, pool=...)``: tests pass a fake pool.

Routes: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/edits``, ``/v1/models[/{id}]``,
each also without ``/v1``; ``/healthz`` and ``/readyz``. State lives on ``app.state``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from modelyard.compiler.plan import LaunchPlan, ModelPlan

from .backends.base import GenerationRequest
from .errors import OpenAIError, http_error_handler, openai_error_handler, unexpected_error_handler
from .output import StopFilter, apply_rules, has_rules
from .pool import ModelUnavailable
from .prompts import chat_prompt, completion_prompt, edit_prompt
from .protocol import ChatCompletionRequest, CompletionRequest, EditRequest, Sampling, parse_body

FINGERPRINT = "modelyard-0.1"
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for the legacy completions endpoint


class Pool(Protocol):
    def generate(self, model: str, request: GenerationRequest) -> AsyncIterator[dict[str, Any]]: ...
    async def preload(self) -> None: ...
    async def close(self) -> None: ...


def create_app(plan: LaunchPlan, *, pool: Pool, preload: bool = False) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette):
        if preload:
            await pool.preload()
        app.state.ready = True
        try:
            yield
        finally:
            await pool.close()

    routes = []
    for prefix in ("/v1", ""):
        routes += [
            Route(f"{prefix}/chat/completions", chat_completions, methods=["POST"]),
            Route(f"{prefix}/completions", completions, methods=["POST"]),
            Route(f"{prefix}/edits", edits, methods=["POST"]),
            Route(f"{prefix}/models", list_models, methods=["GET"]),
            Route(f"{prefix}/models/{{model_id:path}}", get_model, methods=["GET"]),
        ]
    routes += [Route("/healthz", healthz), Route("/readyz", readyz)]
    app = Starlette(
        routes=routes, lifespan=lifespan,
        exception_handlers={OpenAIError: openai_error_handler, HTTPException: http_error_handler,
                            Exception: unexpected_error_handler},
    )
    app.state.plan = plan
    app.state.pool = pool
    app.state.ready = False
    return app


# --- health and models -----------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    if not request.app.state.ready:
        return JSONResponse({"status": "starting"}, status_code=503, headers={"Retry-After": "5"})
    return JSONResponse({"status": "ready"})


def _model_card(model: ModelPlan) -> dict[str, Any]:
    return {"id": model.name, "object": "model", "created": 0, "owned_by": "modelyard"}


async def list_models(request: Request) -> Response:
    plan: LaunchPlan = request.app.state.plan
    return JSONResponse({"object": "list", "data": [_model_card(m) for m in plan.models]})


async def get_model(request: Request) -> Response:
    return JSONResponse(_model_card(_find_model(request.app.state.plan, request.path_params["model_id"])))


def _find_model(plan: LaunchPlan, name: str) -> ModelPlan:
    model = plan.model(name)
    if model is None:
        available = ", ".join(m.name for m in plan.models) or "none"
        raise OpenAIError(404, f"model {name!r} not found; available models: {available}",
                          param="model", code="model_not_found")
    return model


def _select_model(request: Request, body: Sampling, usecase: str) -> ModelPlan:
    """Body ``model``; else a model named by the bearer token; else the only model."""
    plan: LaunchPlan = request.app.state.plan
    name = body.model
    if not name:
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if token and plan.model(token) is not None:
            name = token
        elif len(plan.models) == 1:
            name = plan.models[0].name
        else:
            raise OpenAIError(400, "model is required: name one of " + ", ".join(m.name for m in plan.models),
                              param="model", code="missing_model")
    model = _find_model(plan, name)
    if usecase not in model.usecases:
        raise OpenAIError(400, f"model {model.name!r} does not serve {usecase} requests "
                               f"(it serves: {', '.join(model.usecases) or 'nothing'})",
                          param="model", code="unsupported_usecase")
    return model


async def _read_body(request: Request) -> bytes:
    limit: int = request.app.state.plan.server.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise OpenAIError(413, f"request body larger than {limit} bytes", code="request_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise OpenAIError(413, f"request body larger than {limit} bytes", code="request_too_large")
    return bytes(body)


# --- generation ------------------------------------------------------------------------------


@dataclass
class Job:
    """Everything one request needs to run its choices."""

    model: ModelPlan
    prompt: str
    body: Sampling
    max_tokens: int | None
    json_schema: dict[str, Any] | None = None
    json_object: bool = False
    logprobs: int | None = None  # None: off; N: with the N most likely alternatives

    def generation(self, choice: int) -> GenerationRequest:
        s, b = self.model.sampling, self.body
        seed = b.seed if b.seed is not None else s.seed
        return GenerationRequest(
            prompt=self.prompt, max_tokens=self.max_tokens,
            temperature=_pick(b.temperature, s.temperature), top_p=_pick(b.top_p, s.top_p),
            top_k=_pick(b.top_k, s.top_k), min_p=_pick(b.min_p, s.min_p), typical_p=_pick(b.typical_p, s.typical_p),
            repeat_penalty=_pick(b.repeat_penalty, s.repeat_penalty),
            presence_penalty=_pick(b.presence_penalty, s.presence_penalty),
            frequency_penalty=_pick(b.frequency_penalty, s.frequency_penalty),
            seed=None if seed is None else seed + choice,  # n choices with one seed must still differ
            ignore_eos=b.ignore_eos or s.ignore_eos, json_schema=self.json_schema, json_object=self.json_object,
            stop=tuple(self.stops()), logprobs=self.logprobs,
        )

    def stops(self) -> list[str]:
        return [*self.model.output.stopwords, *self.body.stops()]


def _pick(request_value, default):
    return default if request_value is None else request_value


@dataclass
class Piece:
    """Text ready to send, with the logprob entries of the tokens that made it."""

    text: str
    logprobs: list[dict[str, Any]]


@dataclass
class ChoiceResult:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[dict[str, Any]] | None = None
    cached_tokens: int = 0


async def _run_choice(request: Request, job: Job, index: int) -> AsyncIterator[Piece | ChoiceResult]:
    """Pieces of text (stop sequences removed), then one ChoiceResult. Errors before any text raise."""
    pool: Pool = request.app.state.pool
    stops = StopFilter(job.stops())
    buffered = has_rules(job.model.output)  # rules need the whole text: send it at the end
    collected: list[str] = []
    entries: list[dict[str, Any]] = []  # logprobs of tokens whose text is not sent yet
    sent_entries: list[dict[str, Any]] = []
    prompt_tokens = cached_tokens = 0
    deltas = 0  # one per generated token (or a few bytes of one): the count when a stop cuts short

    def emit(text: str) -> Piece | None:
        if not text:
            return None
        collected.append(text)
        if buffered:
            return None
        piece = Piece(text, entries.copy())
        sent_entries.extend(entries)
        entries.clear()
        return piece

    def result(reason: str, completion_tokens: int) -> list[Piece | ChoiceResult]:
        out: list[Piece | ChoiceResult] = []
        if buffered:
            text = apply_rules("".join(collected), job.model.output)
            sent_entries.extend(entries)
            if text:
                out.append(Piece(text, sent_entries.copy()))
        final = ChoiceResult("".join(collected), reason, prompt_tokens, completion_tokens,
                             sent_entries if job.logprobs is not None else None, cached_tokens)
        return [*out, final]

    try:
        events = pool.generate(job.model.name, job.generation(index))
        async for event in events:
            kind = event["type"]
            if kind == "logprob":
                entries.append(event["logprob"])
            elif kind == "delta":
                deltas += event.get("tokens", 1)
                if piece := emit(stops.feed(event["text"])):
                    yield piece
                if stops.stopped:
                    await events.aclose()  # tells the worker to stop generating
                    entries.clear()  # the tokens of the stop sequence itself
                    for item in result("stop", deltas):
                        yield item
                    return
            elif kind == "started":
                prompt_tokens, cached_tokens = event["prompt_tokens"], event.get("cached_tokens", 0)
            elif kind == "done":
                if piece := emit(stops.flush()):
                    yield piece
                reason = "length" if event["finish_reason"] == "length" else "stop"
                for item in result(reason, event["completion_tokens"]):
                    yield item
                return
            elif kind == "error":
                raise OpenAIError(event.get("status", 500), event["message"], param=event.get("param"),
                                  code=event.get("code"))
    except ModelUnavailable as exc:
        raise OpenAIError(503, exc.message, code="model_unavailable", retry_after=exc.retry_after) from None


def _usage(results: list[ChoiceResult]) -> dict[str, Any]:
    prompt = results[0].prompt_tokens if results else 0
    completion = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": results[0].cached_tokens if results else 0}}


async def _collect(request: Request, job: Job) -> list[ChoiceResult]:
    results = []
    for index in range(job.body.n):
        result = None
        pieces = []
        async for item in _run_choice(request, job, index):
            if isinstance(item, ChoiceResult):
                result = item
            else:
                pieces.append(item.text)
        assert result is not None
        result.text = "".join(pieces)  # what was sent: after stop sequences and output rules
        results.append(result)
    return results


def _chat_logprobs(entries: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    return None if entries is None else {"content": entries, "refusal": None}


def _completion_logprobs(entries: list[dict[str, Any]] | None, offset: int = 0) -> dict[str, Any] | None:
    """The legacy completions shape: parallel lists, top alternatives as {token: logprob}."""
    if entries is None:
        return None
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry["token"])
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
            "text_offset": offsets}


def _check_n(request: Request, body: Sampling) -> None:
    max_n = request.app.state.plan.server.max_n
    if body.n > max_n:
        raise OpenAIError(400, f"n must be at most {max_n}", param="n", code="invalid_value")


def _max_tokens(model: ModelPlan, requested: int | None, default: int | None) -> int | None:
    cap = model.sampling.max_tokens if requested is None else requested
    return default if cap is None else cap


async def chat_completions(request: Request) -> Response:
    body = parse_body(await _read_body(request), ChatCompletionRequest)
    _check_n(request, body)
    if body.tools or body.functions:
        raise OpenAIError(400, "tools and functions are not supported yet", param="tools", code="unsupported")
    if body.top_logprobs is not None and not body.logprobs:
        raise OpenAIError(400, "top_logprobs requires logprobs: true", param="top_logprobs", code="invalid_value")
    model = _select_model(request, body, "chat")
    prompt = chat_prompt(model, [(m.role, m.text()) for m in body.messages])
    requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    fmt = body.response_format
    job = Job(model, prompt, body, _max_tokens(model, requested, None),
              json_schema=(fmt.json_schema or {}).get("schema") if fmt and fmt.type == "json_schema" else None,
              json_object=bool(fmt and fmt.type == "json_object"),
              logprobs=(body.top_logprobs or 0) if body.logprobs else None)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    if body.stream:
        return await _stream(request, job, completion_id, chat=True)
    results = await _collect(request, job)
    return JSONResponse({
        "id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model.name,
        "system_fingerprint": FINGERPRINT,
        "choices": [{"index": i, "message": {"role": "assistant", "content": r.text, "refusal": None},
                     "logprobs": _chat_logprobs(r.logprobs), "finish_reason": r.finish_reason}
                    for i, r in enumerate(results)],
        "usage": _usage(results),
    })


async def completions(request: Request) -> Response:
    body = parse_body(await _read_body(request), CompletionRequest)
    _check_n(request, body)
    if isinstance(body.prompt, list):
        if len(body.prompt) != 1:
            raise OpenAIError(400, "prompt lists must hold exactly one prompt", param="prompt", code="unsupported")
        body.prompt = body.prompt[0]
    model = _select_model(request, body, "completion")
    prompt = completion_prompt(model, body.prompt)
    job = Job(model, prompt, body, _max_tokens(model, body.max_tokens, COMPLETIONS_DEFAULT_MAX_TOKENS),
              logprobs=body.logprobs)
    completion_id = f"cmpl-{uuid.uuid4().hex}"
    if body.stream:
        return await _stream(request, job, completion_id, chat=False, echo=body.prompt if body.echo else "")
    results = await _collect(request, job)
    echo = body.prompt if body.echo else ""
    return JSONResponse({
        "id": completion_id, "object": "text_completion", "created": int(time.time()), "model": model.name,
        "system_fingerprint": FINGERPRINT,
        "choices": [{"index": i, "text": echo + r.text, "logprobs": _completion_logprobs(r.logprobs, len(echo)),
                     "finish_reason": r.finish_reason} for i, r in enumerate(results)],
        "usage": _usage(results),
    })


async def edits(request: Request) -> Response:
    body = parse_body(await _read_body(request), EditRequest)
    _check_n(request, body)
    if body.stream:
        raise OpenAIError(400, "edits do not stream", param="stream", code="unsupported")
    model = _select_model(request, body, "edit")
    job = Job(model, edit_prompt(model, body.instruction, body.input), body, _max_tokens(model, None, None))
    results = await _collect(request, job)
    return JSONResponse({"object": "edit", "created": int(time.time()),
                         "choices": [{"text": r.text, "index": i} for i, r in enumerate(results)],
                         "usage": _usage(results)})


# --- streaming -------------------------------------------------------------------------------


async def _stream(request: Request, job: Job, completion_id: str, *, chat: bool, echo: str = "") -> Response:
    created = int(time.time())
    include_usage = bool(job.body.stream_options and job.body.stream_options.include_usage)

    def chunk(choices: list[dict[str, Any]], usage: Any = None) -> dict[str, str]:
        payload: dict[str, Any] = {
            "id": completion_id, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created, "model": job.model.name, "system_fingerprint": FINGERPRINT, "choices": choices,
        }
        if include_usage:
            payload["usage"] = usage
        return {"data": json.dumps(payload, ensure_ascii=False)}

    def piece(index: int, text: str | None, finish: str | None = None, first: bool = False,
              entries: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        wanted = entries if job.logprobs is not None and text is not None and not first else None
        if chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else \
                ({} if text is None else {"content": text})
            return {"index": index, "delta": delta, "logprobs": _chat_logprobs(wanted), "finish_reason": finish}
        return {"index": index, "text": text or "", "logprobs": _completion_logprobs(wanted), "finish_reason": finish}

    choices = [_run_choice(request, job, i) for i in range(job.body.n)]
    # Wait for the first event of the first choice before answering, so that a request the
    # backend refuses (prompt too long, model failing to load) gets a real HTTP error status.
    first = await anext(choices[0])

    async def events() -> AsyncIterator[dict[str, str]]:
        results: list[ChoiceResult] = []
        try:
            for index, items in enumerate(choices):
                if chat:
                    yield chunk([piece(index, None, first=True)])
                if echo:
                    yield chunk([piece(index, echo)])
                pending = [first] if index == 0 else []
                async for item in _chain(pending, items):
                    if isinstance(item, ChoiceResult):
                        results.append(item)
                        yield chunk([piece(index, None, item.finish_reason)])
                    else:
                        yield chunk([piece(index, item.text, entries=item.logprobs)])
            if include_usage:
                yield chunk([], _usage(results))
        except OpenAIError as exc:  # after the first byte: an SSE error event, then [DONE]
            yield {"data": json.dumps(exc.body())}
        finally:
            for items in choices:
                await items.aclose()
        yield {"data": "[DONE]"}

    return EventSourceResponse(events(), sep="\n", ping=15)


async def _chain(first: list, rest: AsyncIterator) -> AsyncIterator:
    for item in first:
        yield item
    async for item in rest:
        yield item
