"""The OpenAI-compatible Starlette app. ``create_app(plan, pool=...)``: tests pass a fake pool.

Routes (``ENDPOINTS``, at the end): ``/v1/chat/completions``, ``/v1/completions``, ``/v1/edits``,
``/v1/embeddings``, ``/v1/models[/{id}]``, each also without ``/v1``; ``/healthz``, ``/readyz``,
``/metrics``, ``/openapi.json``. The handlers share one ``state.ServerState`` (``app.state.server``).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import importlib.metadata
import json
import logging
import math
import os
import struct
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from modelyard.compiler import backends
from modelyard.compiler.gallery import GalleryError
from modelyard.compiler.plan import LaunchPlan, ModelPlan

from .backends import missing_backend_message
from .constraints import check_grammar, check_json_schema
from .errors import (
    ClientGone,
    InternalErrors,
    OpenAIError,
    client_gone_handler,
    failure_handler,
    http_error_handler,
    openai_error_handler,
)
from .gallery_api import GalleryService
from .generation import (
    Admission,
    ChoiceResult,
    Job,
    Piece,
    Pool,
    chat_logprobs,
    choice_streams,
    collect,
    completion_logprobs,
    merge,
    usage,
)
from .installer import Installer
from .loose_models import LooseModels
from .messages import Failure
from .metrics import Metrics, MetricsMiddleware
from .openapi import MODEL, MODEL_LIST, openapi_document
from .prompts import (
    CHARS_PER_TOKEN_BOUND,
    PromptMessage,
    chat_prompt,
    check_prompt_size,
    completion_prompt,
    edit_prompt,
)
from .protocol import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    DetokenizeRequest,
    EditRequest,
    EmbeddingRequest,
    Sampling,
    TokenizeRequest,
    parse_body,
    read_body,
)
from .reasoning import ReasoningStream
from .reasoning import split as split_reasoning
from .routes import Endpoint, Operation, RouteLabels, starlette_routes
from .security import ApiKeyMiddleware, ApiKeys, RequestIdMiddleware
from .state import ServerState, server_state
from .tools import (
    ChoiceDeltas,
    ToolCall,
    assistant_message,
    parse_tool_request,
)

log = logging.getLogger(__name__)

FINGERPRINT = "modelyard-0.1"
try:
    _VERSION = importlib.metadata.version("modelyard")
except importlib.metadata.PackageNotFoundError:  # a source tree without an install
    _VERSION = "unknown"


def create_app(plan: LaunchPlan, *, pool: Pool, preload: bool = False, api_keys: Iterable[str] = (),
               installer: Installer | None = None, install_on_start: Sequence[str] = (),
               on_demand_installs: bool = False, gallery_api: bool = True,
               loose_models: LooseModels | None = None) -> Starlette:
    """The app; ``api_keys`` are the resolved keys (the plan holds only where they come from).

    With an ``installer`` the gallery API is served and installed models join without a
    restart (``gallery_api=False`` keeps the installer for ``install_on_start`` and on-demand
    installs only); ``install_on_start`` entries are installed first (``/readyz``: 503 until then).
    """
    @asynccontextmanager
    async def lifespan(app: Starlette):
        starting = asyncio.create_task(_start(app, preload, install_on_start))
        try:
            yield
        finally:
            starting.cancel()
            await pool.close()

    gallery = None
    if installer is not None:
        gallery = GalleryService(installer, lambda model: _add_model(app, model), lambda name: _remove_model(app, name),
                                 on_demand=on_demand_installs)
    # The gallery's paths come first: /models/{id} would shadow them.
    endpoints = [*(gallery.endpoints() if gallery and gallery_api else ()), *ENDPOINTS]
    keys = ApiKeys(api_keys)
    metrics = Metrics(pool.stats, RouteLabels(endpoints))
    middleware = [Middleware(MetricsMiddleware, metrics=metrics), Middleware(RequestIdMiddleware)]
    if plan.server.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(plan.server.cors_origins),
                                     allow_methods=["GET", "POST"], allow_headers=["*"], expose_headers=["x-request-id"]))
    if keys:
        public = frozenset(path for e in endpoints if e.operation.public for path in e.served_paths())
        middleware.append(Middleware(ApiKeyMiddleware, keys=keys, public=public))
    middleware.append(Middleware(InternalErrors))  # innermost: inside the request id and the metrics
    app = Starlette(
        routes=starlette_routes(endpoints), lifespan=lifespan, middleware=middleware,
        exception_handlers={OpenAIError: openai_error_handler, Failure: failure_handler, ClientGone: client_gone_handler,
                            HTTPException: http_error_handler},
    )
    app.state.server = ServerState(
        plan=plan, pool=pool, admission=Admission(plan.server.max_queue_per_model, plan.server.max_in_flight),
        metrics=metrics, endpoints=tuple(endpoints), gallery=gallery, auth=bool(keys), loose=loose_models)
    return app


async def _start(app: Starlette, preload: bool, install_on_start: Sequence[str]) -> None:
    """Installs asked for at launch, then preloading; ready after both (failures are logged and
    leave the server serving what it has)."""
    gallery: GalleryService | None = app.state.server.gallery
    if gallery is not None and gallery.on_demand:  # read the indexes now, not inside a request
        try:
            await asyncio.to_thread(gallery.installer.galleries.all)
        except GalleryError as exc:
            log.warning("cannot read the galleries for on-demand installs: %s", exc)
    if install_on_start and gallery is not None:
        jobs = [gallery.submit(ref) for ref in install_on_start]
        await asyncio.gather(*(job.done.wait() for job in jobs))
    if preload:
        await app.state.server.pool.preload()
    app.state.server.ready = True


async def _add_model(app: Starlette, model: ModelPlan) -> None:
    plan: LaunchPlan = app.state.server.plan
    if plan.model(model.name) is not None:
        return  # already served (installed earlier, or a YAML of the same name)
    why = missing_backend_message(model.backend)
    if why:
        raise OpenAIError(409, f"{model.name} is installed but cannot be served here: {why}")
    app.state.server.pool.add(model)
    app.state.server.plan = plan.model_copy(update={"models": (*plan.models, model)})


async def _remove_model(app: Starlette, name: str) -> None:
    plan: LaunchPlan = app.state.server.plan
    if plan.model(name) is None:
        return
    app.state.server.plan = plan.model_copy(update={"models": tuple(m for m in plan.models if m.name != name)})
    await app.state.server.pool.remove(name)


# --- health and models -----------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """200 once start-up work is done and no model is failing; else 503 with the reasons (a
    model that failed to load or whose worker keeps dying, and when it is tried again)."""
    if not server_state(request).ready:
        return JSONResponse({"status": "starting"}, status_code=503, headers={"Retry-After": "5"})
    failing = server_state(request).pool.failures()
    if failing:
        retry = max(1, round(min(seconds for _, seconds in failing.values())))
        models = {name: {"error": reason, "retry_in_s": round(seconds, 1)} for name, (reason, seconds) in failing.items()}
        return JSONResponse({"status": "failing", "models": models}, status_code=503,
                            headers={"Retry-After": str(retry)})
    return JSONResponse({"status": "ready"})


async def openapi_endpoint(request: Request) -> Response:
    plan: LaunchPlan = server_state(request).plan
    return JSONResponse(openapi_document(server_state(request).endpoints, tuple(m.name for m in plan.models),
                                         plan.server.max_n))


async def metrics_endpoint(request: Request) -> Response:
    return Response(server_state(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def _model_card(model: ModelPlan) -> dict[str, Any]:
    return {"id": model.name, "object": "model", "created": 0, "owned_by": "modelyard"}


async def list_models(request: Request) -> Response:
    """The served models, then the GGUF files of the models directory no model serves yet (a
    request naming one serves it, as LocalAI lists and serves its loose files)."""
    state = server_state(request)
    cards = [_model_card(m) for m in state.plan.models]
    if state.loose is not None:
        served = {os.path.realpath(m.model) for m in state.plan.models if m.model and m.model_is_local}
        names = {m.name for m in state.plan.models}
        for name in await asyncio.to_thread(state.loose.listed):
            if name not in names and os.path.realpath(state.loose.directory / name) not in served:
                cards.append({"id": name, "object": "model", "created": 0, "owned_by": "modelyard"})
    return JSONResponse({"object": "list", "data": cards})


async def get_model(request: Request) -> Response:
    return JSONResponse(_model_card(_find_model(server_state(request).plan, request.path_params["id"])))


def _find_model(plan: LaunchPlan, name: str, gallery: GalleryService | None = None) -> ModelPlan:
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


async def _select_model(request: Request, body: Sampling, usecase: str) -> ModelPlan:
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
        model = _find_model(plan, name, server_state(request).gallery)
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
            await _add_model(request.app, model)
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


async def _read_body(request: Request) -> bytes:
    return await read_body(request, server_state(request).plan.server.max_body_bytes)


# --- generation ------------------------------------------------------------------------------


def _check_n(request: Request, body: Sampling) -> None:
    max_n = server_state(request).plan.server.max_n
    if body.n > max_n:
        raise OpenAIError(400, f"n must be at most {max_n}", param="n", code="invalid_value")


def _max_tokens(request: Request, model: ModelPlan, requested: int | None) -> int | None:
    """The request's value, else the YAML's; None (and a request's 0, LocalAI's "no limit") means
    until a stop or the end of the context (LocalAI's ``n_predict = -1``, grpc-server.cpp l.233),
    on every endpoint. Never above the server's cap."""
    cap = server_state(request).plan.server.max_tokens_cap
    if cap is not None and requested is not None and requested > cap:
        raise OpenAIError(400, f"max_tokens must be at most {cap} on this server", param="max_tokens",
                          code="invalid_value")
    chosen = model.sampling.max_tokens if requested is None else (requested or None)
    return cap if cap is not None and (chosen is None or chosen > cap) else chosen


class _Ticket:
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


async def _complete(request: Request, *jobs: Job) -> list[ChoiceResult]:
    """All choices, unless the client goes away first: then the generations are cancelled (a
    streamed one stops at its next failed send; this one has no send until the end)."""
    ticket = _Ticket(request, list(jobs))
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


async def chat_completions(request: Request) -> Response:
    body = parse_body(await _read_body(request), ChatCompletionRequest)
    _check_n(request, body)
    if body.top_logprobs is not None and not body.logprobs:
        raise OpenAIError(400, "top_logprobs requires logprobs: true", param="top_logprobs", code="invalid_value")
    tools = parse_tool_request(body.tools, body.tool_choice, body.functions, body.function_call)
    model = await _select_model(request, body, "chat")
    if tools is not None:  # read calls as the model's YAML says (its `function:` block)
        tools = dataclasses.replace(tools, parsing=model.function_parsing)
    messages = [PromptMessage(m.role, m.text(), _calls_of(m), m.tool_call_id, m.name or "") for m in body.messages]
    # Off the event loop: a heavy template must not stall other requests (and /healthz).
    prompt = check_prompt_size(model, await asyncio.to_thread(
        functools.partial(chat_prompt, model, messages, tools, reasoning_effort=body.reasoning_effort,
                          template_kwargs=body.chat_template_kwargs)))
    requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    fmt = body.response_format
    json_schema = (fmt.json_schema or {}).get("schema") if fmt and fmt.type == "json_schema" else None
    if tools is not None and tools.forced:
        if fmt is not None and fmt.type != "text":
            raise OpenAIError(400, "response_format cannot be combined with a required or named tool call",
                              param="response_format")
        json_schema = tools.call_schema()  # the grammar that makes the call always parse
        _check_structured_output(model, "tools")
        check_json_schema(json_schema, param="tools")
    else:
        if fmt is not None and fmt.type != "text":
            _check_structured_output(model, "response_format")
        check_json_schema(json_schema, param="response_format")
        if json_schema is not None and tools is not None and tools.offered:  # auto: a call, or the answer
            json_schema = tools.call_schema(answer=json_schema)
    _check_grammar(model, body.grammar)
    job = Job(model, prompt, body, _max_tokens(request, model, requested), json_schema=json_schema,
              json_object=bool(fmt and fmt.type == "json_object"), grammar=body.grammar,
              logprobs=(body.top_logprobs or 0) if body.logprobs else None, tools=tools,
              schema_param="tools" if tools is not None and tools.forced else "response_format")
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    if body.stream:
        return await _stream(request, [job], completion_id, chat=True)
    results = await _complete(request, job)
    return JSONResponse({
        "id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model.name,
        "system_fingerprint": FINGERPRINT,
        "choices": [_chat_choice(i, r, job, body.parallel_tool_calls) for i, r in enumerate(results)],
        "usage": usage(results, body.n),
    })


def _chat_choice(index: int, result: ChoiceResult, job: Job, parallel: bool) -> dict[str, Any]:
    # The reasoning block first: a tool call is read from what remains (LocalAI's order).
    reasoning, text = split_reasoning(result.text, job.model.reasoning, job.reasoning_opened)
    message, finish_reason = assistant_message(text, result.finish_reason, job.tools, parallel)
    if reasoning:
        message["reasoning_content"] = message["reasoning"] = reasoning  # OpenAI clients' name, LocalAI's
    return {"index": index, "message": message, "logprobs": chat_logprobs(result.logprobs),
            "finish_reason": finish_reason}


def _calls_of(message: ChatMessage) -> tuple[ToolCall, ...]:
    if message.tool_calls:
        return tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in message.tool_calls)
    if message.function_call is not None:  # legacy: one call, no id
        return (ToolCall("", message.function_call.name, message.function_call.arguments),)
    return ()


def _check_grammar(model: ModelPlan, grammar: str | None) -> None:
    if grammar is not None and not backends.get(model.backend).grammar:
        raise OpenAIError(400, f"grammar (GBNF) needs a llama-cpp model; {model.name!r} runs on {model.backend}: "
                               "use response_format with a JSON Schema", param="grammar", code="unsupported")
    check_grammar(grammar)


def _check_structured_output(model: ModelPlan, param: str) -> None:
    """Refused here, before the request reaches the worker, when the backend cannot constrain output."""
    if not backends.get(model.backend).structured_output:
        what = "forced tool calls (tool_choice required or a named tool)" if param == "tools" else "response_format"
        raise OpenAIError(400, f"{what} cannot be honoured by {model.name!r}: {model.backend} models do not "
                               "constrain output to a JSON Schema yet", param=param, code="unsupported")


async def completions(request: Request) -> Response:
    body = parse_body(await _read_body(request), CompletionRequest)
    _check_n(request, body)
    prompts = _prompts(body)
    max_n = server_state(request).plan.server.max_n
    if len(prompts) * body.n > max_n:
        raise OpenAIError(400, f"the prompts times n must be at most {max_n} choices", param="prompt",
                          code="invalid_value")
    model = await _select_model(request, body, "completion")
    _check_grammar(model, body.grammar)
    if body.echo and body.logprobs is not None and not backends.get(model.backend).prompt_logprobs:
        raise OpenAIError(400, f"echo with logprobs (the prompt's tokens scored) is not supported by {model.backend} "
                               f"models ({model.name!r}) yet", param="echo", code="unsupported")
    max_tokens = _max_tokens(request, model, body.max_tokens)
    jobs = []
    for given in prompts:
        if isinstance(given, str):
            text = check_prompt_size(model, await asyncio.to_thread(completion_prompt, model, given))
            tokens, echo = None, given if body.echo else ""
        else:
            _check_token_prompt(model, given, body.echo)
            text, tokens, echo = "", given, ""  # the ids are the prompt: no template, no text
        jobs.append(Job(model, text, body, max_tokens, grammar=body.grammar, logprobs=body.logprobs,
                        prompt_tokens=tokens, echo=echo))
    completion_id = f"cmpl-{uuid.uuid4().hex}"
    if body.stream:
        return await _stream(request, jobs, completion_id, chat=False)
    results = await _complete(request, *jobs)
    choices = []
    for index, result in enumerate(results):
        echo = jobs[index // body.n].echo
        entries = result.logprobs
        if entries is not None and result.prompt_logprobs is not None:  # echo: the prompt's tokens come first
            entries, offset = result.prompt_logprobs + entries, 0
        else:
            offset = len(echo)
        choices.append({"index": index, "text": echo + result.text, "finish_reason": result.finish_reason,
                        "logprobs": completion_logprobs(entries, offset)})
    return JSONResponse({
        "id": completion_id, "object": "text_completion", "created": int(time.time()), "model": model.name,
        "system_fingerprint": FINGERPRINT, "choices": choices, "usage": usage(results, body.n),
    })


def _prompts(body: CompletionRequest) -> list[str | tuple[int, ...]]:
    """The request's prompts: one text or token array, or a list of them (each its own ``n``
    choices, OpenAI's ``index = prompt_i * n + j``)."""
    prompt = body.prompt
    listed = prompt if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int) else [prompt]
    prompts: list[str | tuple[int, ...]] = []
    for item in listed:
        if isinstance(item, list):
            if not item:
                raise OpenAIError(400, "prompt is an empty token array", param="prompt", code="invalid_value")
            prompts.append(tuple(item))
        else:
            prompts.append(item)
    return prompts


def _check_token_prompt(model: ModelPlan, tokens: tuple[int, ...], echo: bool) -> None:
    """A token-array prompt goes to the model as is: refused where the backend cannot take one or
    it cannot fit."""
    if not backends.get(model.backend).token_prompts:
        raise OpenAIError(400, f"token-array prompts are not supported by {model.backend} models ({model.name!r}) "
                               "yet; send the prompt as text", param="prompt", code="unsupported")
    if echo:
        raise OpenAIError(400, "echo needs a text prompt", param="echo", code="unsupported")
    if model.context_size and len(tokens) >= model.context_size:
        raise OpenAIError(400, f"the prompt is {len(tokens)} tokens, which does not fit the model's "
                               f"{model.context_size}-token context", param="prompt", code="context_length_exceeded")


async def edits(request: Request) -> Response:
    """One choice per ``input`` (a string or a list of them, as LocalAI loops over them in
    edit.go), each ``n`` times, in OpenAI's ``index = input_i * n + j`` order."""
    body = parse_body(await _read_body(request), EditRequest)
    _check_n(request, body)
    if body.stream:
        raise OpenAIError(400, "edits do not stream", param="stream", code="unsupported")
    inputs = [body.input] if isinstance(body.input, str) else body.input
    max_n = server_state(request).plan.server.max_n
    if len(inputs) * body.n > max_n:
        raise OpenAIError(400, f"the inputs times n must be at most {max_n} choices", param="input",
                          code="invalid_value")
    model = await _select_model(request, body, "edit")
    max_tokens = _max_tokens(request, model, body.max_tokens)
    # The YAML's grammar reaches edits only: LocalAI's chat and completion handlers replace it
    # with the request's, even an empty one (chat.go l.319, completion.go l.111).
    jobs = [Job(model, check_prompt_size(model, await asyncio.to_thread(edit_prompt, model, body.instruction, text)),
                body, max_tokens, grammar=model.grammar) for text in inputs]
    results = await _complete(request, *jobs)
    return JSONResponse({"id": f"edit-{uuid.uuid4().hex}", "object": "edit", "created": int(time.time()),
                         "model": model.name, "choices": [{"text": r.text, "index": i} for i, r in enumerate(results)],
                         "usage": usage(results, body.n)})


async def embeddings(request: Request) -> Response:
    body = parse_body(await _read_body(request), EmbeddingRequest)
    model = await _select_model(request, body, "embeddings")
    inputs = body.inputs()
    reply = await server_state(request).pool.embed(model.name, inputs)
    data = []
    for index, vector in enumerate(reply.vectors):
        if body.dimensions is not None:
            if body.dimensions > len(vector):
                raise OpenAIError(400, f"dimensions must be at most {len(vector)} for model {model.name!r}",
                                  param="dimensions", code="invalid_value")
            vector = _unit(vector[:body.dimensions])  # shortened, then made unit length again
        encoded: Any = vector
        if body.encoding_format == "base64":  # little-endian float32, as OpenAI encodes it
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    return JSONResponse({"object": "list", "data": data, "model": model.name,
                         "usage": {"prompt_tokens": reply.tokens, "total_tokens": reply.tokens}})


async def tokenize(request: Request) -> Response:
    """The model's own token ids for a text (LocalAI's ``/v1/tokenize``, llama.cpp's ``/tokenize``)."""
    body = parse_body(await _read_body(request), TokenizeRequest)
    model = await _select_model(request, body, "completion")
    if len(body.content) > (model.context_size or 4096) * CHARS_PER_TOKEN_BOUND:
        raise OpenAIError(400, "content is longer than the model's context could ever hold", param="content",
                          code="context_length_exceeded")
    answer = await server_state(request).pool.tokenize(model.name, body.content, None, body.add_special,
                                                       pieces=body.with_pieces)
    if answer.pieces is None:
        return JSONResponse({"tokens": answer.tokens})
    return JSONResponse({"tokens": [{"id": t, "piece": p} for t, p in zip(answer.tokens, answer.pieces, strict=True)]})


async def detokenize(request: Request) -> Response:
    """The text of token ids (LocalAI's ``/v1/detokenize``, llama.cpp's ``/detokenize``)."""
    body = parse_body(await _read_body(request), DetokenizeRequest)
    model = await _select_model(request, body, "completion")
    answer = await server_state(request).pool.tokenize(model.name, None, body.tokens, False)
    return JSONResponse({"content": answer.text})


async def model_capabilities(request: Request) -> Response:
    """LocalAI's ``/v1/models/capabilities``: each model with what it is for and its modalities."""
    models = server_state(request).plan.models
    return JSONResponse({"object": "list", "data": [
        {"id": m.name, "object": "model", "capabilities": list(m.usecases), "input_modalities": ["text"],
         "output_modalities": ["text"] if m.usecases != ("embeddings",) else ["embeddings"]} for m in models]})


async def version(request: Request) -> Response:
    return JSONResponse({"version": _VERSION, "name": "modelyard"})


def _unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else vector


# --- streaming -------------------------------------------------------------------------------


async def _stream(request: Request, jobs: list[Job], completion_id: str, *, chat: bool) -> Response:
    job = jobs[0]  # the settings every job of a request shares (model, body)
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

    ticket = _Ticket(request, jobs)
    # The choices decode at once; their chunks interleave, each naming its choice's index.
    choices = merge(choice_streams(request, jobs))
    # Wait for the first item before answering, so that a request the backend refuses (prompt
    # too long, model failing to load) gets a real HTTP error status.
    try:
        first = await anext(choices)
    except BaseException:
        ticket.release()
        await choices.aclose()
        raise

    async def events() -> AsyncIterator[dict[str, str]]:
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
                    yield chunk([chat_piece(index, {}, finish_reason)])
                elif tools is None:
                    yield chunk([piece(index, item.text, entries=item.logprobs)])
                elif not item.text:  # logprobs of tokens that made no text
                    yield chunk([chat_piece(index, {"content": ""}, entries=item.logprobs)])
                else:
                    for delta in chat_deltas(index, item.text):
                        yield chunk([chat_piece(index, delta, entries=item.logprobs)])
            if include_usage:
                yield chunk([], usage([results[i] for i in sorted(results)], job.body.n))
        except (OpenAIError, Failure) as exc:  # after the first byte: an SSE error event, then [DONE]
            error = exc if isinstance(exc, OpenAIError) else OpenAIError.from_failure(exc)
            yield {"data": json.dumps(error.body())}
        finally:
            await choices.aclose()
            ticket.release()
        yield {"data": "[DONE]"}

    # A client that stops reading must not hold a generation slot: after stream_send_timeout_s
    # without progress the send fails, the generator's finally cancels the generation. On
    # SIGTERM a running stream may finish within the drain time (sse-starlette would otherwise
    # cut every stream at once), a second short of it so the workers still stop cleanly.
    server = server_state(request).plan.server
    return EventSourceResponse(events(), sep="\n", ping=15, send_timeout=server.stream_send_timeout_s,
                               shutdown_grace_period=max(0, server.drain_timeout_s - 1))


async def _chain(first: list, rest: AsyncIterator) -> AsyncIterator:
    for item in first:
        yield item
    async for item in rest:
        yield item


# --- the route table -------------------------------------------------------------------------

_GENERATION_ERRORS = ("400", "404", "413", "429", "503")
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("/chat/completions", chat_completions, Operation(
        "Create a chat completion", ChatCompletionRequest, streams=True, errors=_GENERATION_ERRORS), ("POST",)),
    Endpoint("/completions", completions, Operation(
        "Create a completion (legacy)", CompletionRequest, streams=True, errors=_GENERATION_ERRORS), ("POST",)),
    Endpoint("/edits", edits, Operation("Create an edit (legacy)", EditRequest, errors=_GENERATION_ERRORS), ("POST",)),
    Endpoint("/embeddings", embeddings, Operation("Create embeddings", EmbeddingRequest, errors=_GENERATION_ERRORS),
             ("POST",)),
    Endpoint("/models", list_models, Operation("List models", response=MODEL_LIST)),
    Endpoint("/tokenize", tokenize, Operation("Tokenize a text with a model's tokenizer", TokenizeRequest,
                                              errors=_GENERATION_ERRORS), ("POST",)),
    Endpoint("/detokenize", detokenize, Operation("Turn token ids back into text", DetokenizeRequest,
                                                  errors=_GENERATION_ERRORS), ("POST",)),
    Endpoint("/models/capabilities", model_capabilities, Operation("Models with their capabilities")),
    Endpoint("/version", version, Operation("The server's version"), versioned=False),
    Endpoint("/models/{id:path}", get_model, Operation("Describe a model", response=MODEL, errors=("404",))),
    Endpoint("/healthz", healthz, Operation("Liveness", public=True), versioned=False),
    Endpoint("/readyz", readyz, Operation("Readiness: 503 while starting or while a model is failing",
                                          errors=("503",), public=True), versioned=False),
    Endpoint("/metrics", metrics_endpoint, Operation("Prometheus metrics", response={"type": "string"}),
             versioned=False),
    Endpoint("/openapi.json", openapi_endpoint, Operation("This document"), versioned=False),
)
