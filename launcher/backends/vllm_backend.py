"""vLLM: its async engine (continuous batching, paged KV cache) inside the worker process.

``engine_arguments`` and ``sampling_arguments`` are the whole mapping from the plan and the
request to vLLM's ``AsyncEngineArgs`` and ``SamplingParams``; they are plain functions so the
CPU test suite covers them without vLLM (which needs CUDA). The engine runs on its own asyncio
loop in a thread; ``generate`` (called from the worker's threads) submits a request to it and
reads the cumulative outputs back as deltas. A cancelled request is aborted in the engine.

Distributed serving is vLLM's own: ``tensor_parallel_size`` and ``pipeline_parallel_size``
with ``distributed_executor_backend`` (``mp`` on one machine, ``ray`` across machines, where
the Ray cluster is started beforehand and this worker runs on its head node).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import uuid
from collections.abc import Iterator
from typing import Any

from modelyard.compiler.plan import ModelPlan

from .base import Finish, GenerationRequest, GeneratorBackend, Logprob, RequestError, Started

log = logging.getLogger(__name__)

CONCURRENCY = 64  # requests handed to the engine at once; it schedules them itself
_DONE = object()


def engine_arguments(model: ModelPlan) -> dict[str, Any]:
    """``AsyncEngineArgs`` keyword arguments for ``model``. ``engine_args`` from the YAML pass
    through; the compiler refuses ones that repeat a key the YAML has its own field for."""
    settings = model.vllm
    assert settings is not None and model.model is not None
    arguments: dict[str, Any] = {
        "model": model.model,
        "trust_remote_code": settings.trust_remote_code,
        "dtype": settings.dtype,
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
        "skip_special_tokens": True,
    }
    return arguments


def structured_output(request: GenerationRequest) -> dict[str, Any] | None:
    """The structured-output constraint (vLLM's ``json``, ``json_object``, ``grammar``), if any."""
    if request.json_schema is not None:
        return {"json": request.json_schema}
    if request.json_object:
        return {"json_object": True}
    if request.grammar is not None:
        return {"grammar": request.grammar}
    return None


def finish_reason(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"


class VllmBackend(GeneratorBackend):
    def __init__(self, model: ModelPlan) -> None:
        import vllm  # heavy, CUDA: imported in the worker process only

        self._vllm = vllm
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="vllm-engine-loop", daemon=True).start()
        arguments = engine_arguments(model)
        log.info("starting vLLM %s with %s", vllm.__version__, arguments)

        async def start() -> tuple[Any, int]:
            engine = vllm.AsyncLLMEngine.from_engine_args(vllm.AsyncEngineArgs(**arguments))
            config = await engine.get_model_config()
            return engine, config.max_model_len

        self.engine, self._context = self._run(start())
        self.concurrency = CONCURRENCY

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    @property
    def context_size(self) -> int:
        return self._context

    def _sampling_params(self, request: GenerationRequest) -> Any:
        params = self._vllm.SamplingParams(**sampling_arguments(request))
        constraint = structured_output(request)
        if constraint is not None:
            from vllm import sampling_params as module

            if hasattr(module, "StructuredOutputsParams"):  # vLLM >= 0.11
                params.structured_outputs = module.StructuredOutputsParams(**constraint)
            else:  # older: guided decoding
                params.guided_decoding = module.GuidedDecodingParams(**constraint)
        return params

    def generate(self, request: GenerationRequest, cancelled: threading.Event) -> Iterator[Any]:
        params = self._sampling_params(request)
        request_id = f"modelyard-{uuid.uuid4().hex}"
        outputs: queue.Queue = queue.Queue()

        async def run() -> None:
            try:
                async for output in self.engine.generate(request.prompt, params, request_id):
                    outputs.put(output)
            except Exception as exc:  # noqa: BLE001 - handed to the reading thread
                outputs.put(exc)
            finally:
                outputs.put(_DONE)

        asyncio.run_coroutine_threadsafe(run(), self._loop)
        started, sent_text, sent_tokens, last, aborted = False, "", 0, None, False
        while True:
            if cancelled.is_set() and not aborted:  # the engine then ends the stream
                asyncio.run_coroutine_threadsafe(self.engine.abort(request_id), self._loop)
                aborted = True
            try:
                item = outputs.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _DONE:
                break
            if isinstance(item, ValueError):  # vLLM's way of refusing a prompt that does not fit
                raise RequestError(str(item), code="context_length_exceeded", param="messages")
            if isinstance(item, Exception):
                raise item
            last = item
            if not started:
                started = True
                yield Started(len(item.prompt_token_ids or ()))
            choice = item.outputs[0]
            if request.logprobs is not None and choice.logprobs:
                for position in range(sent_tokens, len(choice.token_ids)):
                    yield _logprob(choice.token_ids[position], choice.logprobs[position], request.logprobs)
            sent_tokens = len(choice.token_ids)
            if len(choice.text) > len(sent_text):
                yield choice.text[len(sent_text):]
                sent_text = choice.text
        if last is None:
            raise RequestError("vLLM returned no output for this request", code="backend_error")
        choice = last.outputs[0]
        yield Finish(finish_reason(choice.finish_reason), len(last.prompt_token_ids or ()), len(choice.token_ids))

    def embed(self, inputs: list[Any]) -> tuple[list[list[float]], int]:
        raise RequestError("embeddings are not served by vllm models in modelyard yet; use a transformers or "
                           "llama-cpp model with embeddings: true", param="model", code="unsupported_usecase")


def _logprob(token: int, candidates: dict[int, Any], top: int) -> Logprob:
    """vLLM's per-position ``{token_id: Logprob(logprob, rank, decoded_token)}`` in our shape."""
    chosen = candidates[token]
    best = sorted(candidates.items(), key=lambda item: item[1].rank or 0)[:top]
    text = chosen.decoded_token or ""
    return Logprob(text, float(chosen.logprob), list(text.encode()),
                   [(c.decoded_token or "", float(c.logprob), list((c.decoded_token or "").encode())) for _, c in best])
