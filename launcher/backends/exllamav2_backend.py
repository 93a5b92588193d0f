"""exllamav2: EXL2/GPTQ model directories on CUDA, through the dynamic generator.

The generator batches every job it holds (paged attention, continuous batching). It is not
thread-safe, so one scheduler thread owns it: ``generate`` (called from the worker's threads)
hands jobs and cancellations over through a queue, and the thread runs ``iterate()`` while any
job remains, routing each result to its request. ``sampler_settings`` and ``job_arguments``
are the request mapping, plain functions the CPU test suite covers without exllamav2.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Iterator
from typing import Any

from modelyard.compiler.plan import ModelPlan

from .base import Finish, GenerationRequest, GeneratorBackend, RequestError, Started, check_token_ids, fit_context

log = logging.getLogger(__name__)

CONCURRENCY = 16
PAGE = 256  # the dynamic generator's cache page: cache sizes are multiples of it


def sampler_settings(request: GenerationRequest) -> dict[str, Any]:
    """Attributes for ``ExLlamaV2Sampler.Settings`` (greedy is top_k 1 at temperature 0)."""
    greedy = request.temperature <= 0
    return {
        "temperature": 1.0 if greedy else request.temperature,
        "top_k": 1 if greedy else max(request.top_k, 0),
        "top_p": 1.0 if greedy else request.top_p,
        "min_p": 0.0 if greedy else request.min_p,
        "typical": 0.0 if greedy or request.typical_p >= 1.0 else request.typical_p,
        "token_repetition_penalty": request.repeat_penalty or 1.0,
        "token_frequency_penalty": request.frequency_penalty,
        "token_presence_penalty": request.presence_penalty,
    }


def job_arguments(request: GenerationRequest, limit: int, eos_token_id: int, identifier: str) -> dict[str, Any]:
    """``ExLlamaV2DynamicJob`` keyword arguments, besides ``input_ids`` and ``gen_settings``. No
    output constraints: the server refuses them for exllama2 (its registry entry says so)."""
    return {
        "max_new_tokens": limit,
        "stop_conditions": [] if request.ignore_eos else [eos_token_id],
        "seed": request.seed,
        "identifier": identifier,
        "decode_special_tokens": False,
        "return_logits": False,
    }


def cache_tokens(context: int, parallel: int) -> int:
    """Cache size: room for ``parallel`` full contexts, rounded up to whole pages."""
    total = context * max(parallel, 1)
    return -(-total // PAGE) * PAGE


class ExLlamaV2Backend(GeneratorBackend):
    def __init__(self, model: ModelPlan) -> None:
        from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config, ExLlamaV2Tokenizer  # CUDA at import
        from exllamav2.generator import ExLlamaV2DynamicGenerator, ExLlamaV2DynamicJob, ExLlamaV2Sampler

        settings = model.exllama2
        assert settings is not None and model.model is not None
        self._job_class, self._settings_class = ExLlamaV2DynamicJob, ExLlamaV2Sampler.Settings
        config = ExLlamaV2Config(model.model)
        if model.context_size:
            config.max_seq_len = model.context_size
        self._context = config.max_seq_len
        self.model = ExLlamaV2(config)
        cache_size = cache_tokens(self._context, CONCURRENCY // 4)  # four full contexts, shared by all jobs
        if settings.gpu_split:  # GB per GPU, as the YAML gives them
            self.model.load(list(settings.gpu_split))
            cache = ExLlamaV2Cache(self.model, max_seq_len=cache_size)
        else:  # fill the GPUs in order, cache included
            cache = ExLlamaV2Cache(self.model, max_seq_len=cache_size, lazy=True)
            self.model.load_autosplit(cache)
        self.tokenizer = ExLlamaV2Tokenizer(config)
        self.generator = ExLlamaV2DynamicGenerator(model=self.model, cache=cache, tokenizer=self.tokenizer)
        self.concurrency = CONCURRENCY
        self._commands: queue.Queue = queue.Queue()
        self._outputs: dict[str, queue.Queue] = {}
        self._jobs: dict[str, Any] = {}
        threading.Thread(target=self._run, name="exllamav2-generator", daemon=True).start()

    @property
    def context_size(self) -> int:
        return self._context

    def generate(self, request: GenerationRequest, cancelled: threading.Event) -> Iterator[Any]:
        ids = self.tokenizer.encode(request.prompt, add_bos=True)
        prompt_tokens = int(ids.shape[-1])
        limit = fit_context(prompt_tokens, request.max_tokens, self._context)
        identifier = uuid.uuid4().hex
        gen_settings = self._settings_class()
        for name, value in sampler_settings(request).items():
            setattr(gen_settings, name, value)
        job = self._job_class(input_ids=ids, gen_settings=gen_settings,
                              **job_arguments(request, limit, self.tokenizer.eos_token_id, identifier))
        out: queue.Queue = queue.Queue()
        self._outputs[identifier] = out
        self._commands.put(("enqueue", identifier, job))
        yield Started(prompt_tokens)
        produced, cancel_sent = 0, False
        try:
            while True:
                if cancelled.is_set() and not cancel_sent:
                    self._commands.put(("cancel", identifier, None))
                    cancel_sent = True
                try:
                    result = out.get(timeout=0.1)
                except queue.Empty:
                    continue
                if isinstance(result, Exception):
                    raise result
                if result.get("text"):
                    yield result["text"]
                if result.get("eos"):
                    produced = int(result.get("new_tokens") or produced)
                    reason = "length" if result.get("eos_reason") == "max_new_tokens" else "stop"
                    yield Finish(reason, prompt_tokens, produced)
                    return
        finally:
            self._outputs.pop(identifier, None)

    def _run(self) -> None:
        """Own the generator: take commands, iterate while jobs remain, route results."""
        while True:
            block = not self.generator.num_remaining_jobs()
            try:
                while True:
                    kind, identifier, job = self._commands.get(block=block, timeout=None if block else 0)
                    block = False
                    if kind == "enqueue":
                        self._jobs[identifier] = job
                        self.generator.enqueue(job)
                    elif identifier in self._jobs:
                        self.generator.cancel(self._jobs.pop(identifier))
                        self._deliver(identifier, {"eos": True, "eos_reason": "cancelled"})
            except queue.Empty:
                pass
            if not self.generator.num_remaining_jobs():
                continue
            try:
                results = self.generator.iterate()
            except Exception as exc:  # every running request learns of it
                log.exception("exllamav2 iterate failed")
                for identifier in list(self._jobs):
                    self._deliver(identifier, exc)
                self._jobs.clear()
                continue
            for result in results:
                identifier = result.get("identifier")
                if result.get("stage") == "streaming" and identifier in self._jobs:
                    if result.get("eos"):
                        self._jobs.pop(identifier, None)
                    self._deliver(identifier, result)

    def _deliver(self, identifier: str, item: Any) -> None:
        out = self._outputs.get(identifier)
        if out is not None:
            out.put(item)

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        return [int(t) for t in self.tokenizer.encode(text, add_bos=add_special)[0].tolist()]

    def detokenize(self, tokens: list[int]) -> str:
        import torch

        check_token_ids(tuple(tokens), self.tokenizer.get_vocab_size(), "tokens")
        return str(self.tokenizer.decode(torch.tensor([tokens]))[0])

    def embed(self, inputs: list[Any]) -> tuple[list[list[float]], int]:
        raise RequestError("embeddings are not served by exllama2 models", param="model",
                           code="unsupported_usecase")
