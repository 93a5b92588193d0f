"""The OpenAI-compatible Starlette app. ``create_app(plan, pool=...)``: tests pass a fake pool.

Routes (``ENDPOINTS``, at the end): ``/v1/chat/completions``, ``/v1/completions``, ``/v1/edits``,
``/v1/embeddings``, ``/v1/models[/{id}]``, each also without ``/v1``; ``/healthz``, ``/readyz``,
``/metrics``, ``/openapi.json``. The other API surfaces (``anthropic_api``, ``responses_api``,
``ollama_api``) bring their own routes; all of them run on the shared path in ``serving.py``.
The handlers share one ``state.ServerState`` (``app.state.server``).
"""

from __future__ import annotations

import asyncio
import base64
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
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from modelyard.compiler import backends
from modelyard.compiler.gallery import GalleryError
from modelyard.compiler.plan import LaunchPlan, ModelPlan

from . import anthropic_api, ollama_api, responses_api, web_console
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
    Job,
    Pool,
    completion_logprobs,
    usage,
)
from .installer import Installer
from .loose_models import LooseModels
from .messages import Failure
from .metrics import Metrics, MetricsMiddleware
from .openapi import MODEL, MODEL_LIST, openapi_document
from .prompts import (
    CHARS_PER_TOKEN_BOUND,
    check_prompt_size,
    completion_prompt,
    edit_prompt,
)
from .protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    EditRequest,
    EmbeddingRequest,
    TokenizeRequest,
    parse_body,
)
from .routes import Endpoint, Operation, RouteLabels, starlette_routes
from .security import ApiKeyMiddleware, ApiKeys, RequestIdMiddleware
from .serving import (
    FINGERPRINT,
    add_model,
    chat_choice,
    chat_job,
    check_grammar_support,
    check_n,
    chunk_stream,
    complete,
    find_model,
    max_tokens_for,
    read_request_body,
    remove_model,
    select_model,
    sse_response,
)
from .state import ServerState, server_state

log = logging.getLogger(__name__)

try:
    _VERSION = importlib.metadata.version("modelyard")
except importlib.metadata.PackageNotFoundError:  # a source tree without an install
    _VERSION = "unknown"


def create_app(plan: LaunchPlan, *, pool: Pool, preload: bool = False, api_keys: Iterable[str] = (),
               installer: Installer | None = None, install_on_start: Sequence[str] = (),
               on_demand_installs: bool = False, gallery_api: bool = True,
               loose_models: LooseModels | None = None, console: bool = True) -> Starlette:
    """The app; ``api_keys`` are the resolved keys (the plan holds only where they come from).
    ``console``: the web console at ``/``.

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
        gallery = GalleryService(installer, lambda model: add_model(app, model), lambda name: remove_model(app, name),
                                 on_demand=on_demand_installs)
    # The gallery's paths come first: /models/{id} would shadow them.
    endpoints = [*(gallery.endpoints() if gallery and gallery_api else ()), *ENDPOINTS, *anthropic_api.ENDPOINTS,
                 *responses_api.ENDPOINTS, *ollama_api.ENDPOINTS, *(web_console.ENDPOINTS if console else ())]
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
    return JSONResponse(_model_card(find_model(server_state(request).plan, request.path_params["id"])))


async def get_model_plan(request: Request) -> Response:
    """The model's compiled plan (backend, context, slots, templates...) and where each value
    came from, as ``modelyard compile --explain`` prints them."""
    model = find_model(server_state(request).plan, request.path_params["id"])
    return JSONResponse({"model": model.model_dump(mode="json", exclude={"origins"}), "origins": model.origins})


# --- generation ------------------------------------------------------------------------------


async def chat_completions(request: Request) -> Response:
    body = parse_body(await read_request_body(request), ChatCompletionRequest)
    job = await chat_job(request, body)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    if body.stream:
        return await _stream(request, [job], completion_id, chat=True)
    results = await complete(request, job)
    return JSONResponse({
        "id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": job.model.name,
        "system_fingerprint": FINGERPRINT,
        "choices": [chat_choice(i, r, job, body.parallel_tool_calls) for i, r in enumerate(results)],
        "usage": usage(results, body.n),
    })


async def completions(request: Request) -> Response:
    body = parse_body(await read_request_body(request), CompletionRequest)
    check_n(request, body)
    prompts = _prompts(body)
    max_n = server_state(request).plan.server.max_n
    if len(prompts) * body.n > max_n:
        raise OpenAIError(400, f"the prompts times n must be at most {max_n} choices", param="prompt",
                          code="invalid_value")
    model = await select_model(request, body, "completion")
    check_grammar_support(model, body.grammar)
    if body.echo and body.logprobs is not None and not backends.get(model.backend).prompt_logprobs:
        raise OpenAIError(400, f"echo with logprobs (the prompt's tokens scored) is not supported by {model.backend} "
                               f"models ({model.name!r}) yet", param="echo", code="unsupported")
    max_tokens = max_tokens_for(request, model, body.max_tokens)
    jobs = []
    for given in prompts:
        if isinstance(given, str):
            text = check_prompt_size(model, await asyncio.to_thread(completion_prompt, model, given,
                                                                    body.reasoning_effort))
            tokens, echo = None, given if body.echo else ""
        else:
            _check_token_prompt(model, given, body.echo)
            text, tokens, echo = "", given, ""  # the ids are the prompt: no template, no text
        jobs.append(Job(model, text, body, max_tokens, grammar=body.grammar, logprobs=body.logprobs,
                        prompt_tokens=tokens, echo=echo))
    completion_id = f"cmpl-{uuid.uuid4().hex}"
    if body.stream:
        return await _stream(request, jobs, completion_id, chat=False)
    results = await complete(request, *jobs)
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
    body = parse_body(await read_request_body(request), EditRequest)
    check_n(request, body)
    if body.stream:
        raise OpenAIError(400, "edits do not stream", param="stream", code="unsupported")
    inputs = [body.input] if isinstance(body.input, str) else body.input
    max_n = server_state(request).plan.server.max_n
    if len(inputs) * body.n > max_n:
        raise OpenAIError(400, f"the inputs times n must be at most {max_n} choices", param="input",
                          code="invalid_value")
    model = await select_model(request, body, "edit")
    max_tokens = max_tokens_for(request, model, body.max_tokens)
    # The YAML's grammar reaches edits only: LocalAI's chat and completion handlers replace it
    # with the request's, even an empty one (chat.go l.319, completion.go l.111).
    jobs = [Job(model, check_prompt_size(model, await asyncio.to_thread(edit_prompt, model, body.instruction, text,
                                                                        body.reasoning_effort)),
                body, max_tokens, grammar=model.grammar) for text in inputs]
    results = await complete(request, *jobs)
    return JSONResponse({"id": f"edit-{uuid.uuid4().hex}", "object": "edit", "created": int(time.time()),
                         "model": model.name, "choices": [{"text": r.text, "index": i} for i, r in enumerate(results)],
                         "usage": usage(results, body.n)})


async def embeddings(request: Request) -> Response:
    body = parse_body(await read_request_body(request), EmbeddingRequest)
    model = await select_model(request, body, "embeddings")
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
    body = parse_body(await read_request_body(request), TokenizeRequest)
    model = await select_model(request, body, "completion")
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
    body = parse_body(await read_request_body(request), DetokenizeRequest)
    model = await select_model(request, body, "completion")
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
    body = jobs[0].body
    chunks = await chunk_stream(request, jobs, completion_id, chat=chat,
                                include_usage=bool(body.stream_options and body.stream_options.include_usage))

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            async for payload in chunks:  # an error, after the first byte, is an SSE event too
                yield {"data": json.dumps(payload, ensure_ascii=False)}
        finally:
            await chunks.aclose()
        yield {"data": "[DONE]"}

    return sse_response(request, events())


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
    Endpoint("/models/{id:path}/plan", get_model_plan, Operation("A model's compiled plan and the origin of each value",
                                                                 errors=("404",))),
    Endpoint("/models/{id:path}", get_model, Operation("Describe a model", response=MODEL, errors=("404",))),
    Endpoint("/healthz", healthz, Operation("Liveness", public=True), versioned=False),
    Endpoint("/readyz", readyz, Operation("Readiness: 503 while starting or while a model is failing",
                                          errors=("503",), public=True), versioned=False),
    Endpoint("/metrics", metrics_endpoint, Operation("Prometheus metrics", response={"type": "string"}),
             versioned=False),
    Endpoint("/openapi.json", openapi_endpoint, Operation("This document"), versioned=False),
)
