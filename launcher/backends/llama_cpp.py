"""llama.cpp through llama-cpp-python: GGUF models, token-by-token generation with cancellation.

We drive ``Llama.generate`` (token ids) rather than ``create_completion`` so that token counts
are exact, cancellation is checked between tokens, and multi-byte UTF-8 characters split across
tokens are decoded correctly (an incremental decoder holds partial sequences back). Stop
sequences, output rules and templates are applied by the server, identically for every backend.

Concurrency: one ``Llama`` context decodes one sequence here; the worker queues requests.
Batched decoding of ``parallel`` slots is the continuous-batching work (issue #7).
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import random
import threading
from collections.abc import Iterator

from modelyard.compiler.plan import ModelPlan
from modelyard.compiler.sources import PACKAGE_SCHEME, resolve_package_uri

from .base import Finish, GenerationRequest, Logprob, RequestError, Started

log = logging.getLogger(__name__)


def physical_cores() -> int:
    """Cores this process may run on (not half of them, llama-cpp-python's default)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class LlamaCppBackend:
    def __init__(self, model: ModelPlan) -> None:
        import llama_cpp  # heavy: imported in the worker process only

        self._llama_cpp = llama_cpp
        settings = model.llama_cpp
        assert settings is not None and model.model is not None
        path = resolve_package_uri(model.model) if model.model.startswith(PACKAGE_SCHEME) else model.model
        if path is None:
            raise RuntimeError(f"cannot resolve {model.model!r}")
        threads = model.threads or physical_cores()
        self._llm = llama_cpp.Llama(
            model_path=path,
            n_ctx=model.context_size or 0,
            n_threads=threads,
            n_threads_batch=threads,
            n_batch=settings.batch,
            n_gpu_layers=-1 if settings.gpu_layers is None else settings.gpu_layers,
            main_gpu=settings.main_gpu,
            use_mmap=settings.mmap,
            use_mlock=settings.mlock,
            rope_freq_base=settings.rope_freq_base,
            rope_freq_scale=settings.rope_freq_scale,
            rpc_servers=",".join(settings.grpc_servers) or None,
            embedding=model.embeddings,
            verbose=False,
        )
        log.info("loaded %s (n_ctx=%d, threads=%d)", path, self._llm.n_ctx(), threads)

    @property
    def context_size(self) -> int:
        return self._llm.n_ctx()

    def generate(self, request: GenerationRequest, cancelled: threading.Event) -> Iterator[str | Started | Logprob | Finish]:
        llm = self._llm
        prompt_tokens = llm.tokenize(request.prompt.encode("utf-8"), add_bos=True, special=True)
        n_prompt = len(prompt_tokens)
        room = self.context_size - n_prompt
        if room <= 0:
            raise RequestError(
                f"the prompt is {n_prompt} tokens, which does not fit the model's {self.context_size}-token "
                "context", code="context_length_exceeded", param="messages",
            )
        if request.max_tokens is not None and request.max_tokens > room:
            raise RequestError(
                f"max_tokens ({request.max_tokens}) plus the prompt ({n_prompt} tokens) exceeds the model's "
                f"{self.context_size}-token context", code="context_length_exceeded", param="max_tokens",
            )
        limit = request.max_tokens if request.max_tokens is not None else room
        yield Started(n_prompt)
        llm.set_seed(request.seed if request.seed is not None else random.randrange(2**31))
        grammar = self._grammar(request)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        generated: list[int] = []
        reason = "length"
        if limit == 0:
            yield Finish("length", n_prompt, 0)
            return
        for token in llm.generate(
            prompt_tokens, top_k=request.top_k, top_p=request.top_p, min_p=request.min_p,
            typical_p=request.typical_p, temp=request.temperature, repeat_penalty=request.repeat_penalty,
            frequency_penalty=request.frequency_penalty, presence_penalty=request.presence_penalty,
            grammar=grammar, reset=True,
        ):
            if cancelled.is_set():
                reason = "cancelled"
                break
            if not request.ignore_eos and self._llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
                reason = "stop"
                break
            if request.logprobs is not None:
                yield self._logprob(token, request.logprobs)
            text = decoder.decode(llm.detokenize([token], prev_tokens=prompt_tokens + generated))
            generated.append(token)
            if text:
                yield text
            if len(generated) >= limit:
                break
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail
        yield Finish(reason, n_prompt, len(generated))

    def _logprob(self, token: int, top: int) -> Logprob:
        """From the logits of the last decoded position: those that produced ``token``.

        Read from the context rather than llama-cpp-python's ``scores`` (kept only with
        ``logits_all``, an n_ctx x n_vocab matrix: 4 GiB for Gemma's 262k vocabulary).
        """
        import numpy as np

        llm = self._llm
        pointer = llm._ctx.get_logits_ith(-1)
        logits = np.ctypeslib.as_array(pointer, shape=(llm.n_vocab(),)).astype(np.float64)
        shifted = logits - logits.max()
        logprobs = shifted - np.log(np.exp(shifted).sum())
        best = np.argpartition(-logprobs, top)[:top] if top else np.array([], dtype=int)
        best = best[np.argsort(-logprobs[best])]

        def piece(token_id: int) -> tuple[str, list[int]]:
            raw = llm.detokenize([int(token_id)], special=True)
            return raw.decode("utf-8", errors="replace"), list(raw)

        text, raw = piece(token)
        return Logprob(text, float(logprobs[token]), raw,
                       [(*piece(t)[:1], float(logprobs[t]), piece(t)[1]) for t in best])

    def _grammar(self, request: GenerationRequest):
        from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

        if request.json_schema is not None:
            try:
                return LlamaGrammar.from_json_schema(json.dumps(request.json_schema), verbose=False)
            except Exception as exc:  # noqa: BLE001 - llama.cpp's converter raises plain exceptions
                raise RequestError(f"response_format.json_schema cannot be used: {exc}",
                                   param="response_format") from None
        if request.json_object:
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        return None
