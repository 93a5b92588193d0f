"""llama.cpp through llama-cpp-python: GGUF models, decoded in parallel slots.

``Llama`` loads the model and tokenizes; decoding runs in a ``SlotScheduler`` (``llama_slots.py``)
on llama.cpp's low-level API: ``parallel: N`` requests share one batch (continuous batching),
each with its own sampler chain, token-by-token cancellation and incremental UTF-8 decoding.
``parallel: 1`` runs the same engine with one slot, so outputs do not depend on the setting.
Stop sequences, output rules and templates are applied by the server, alike for every backend.
"""

from __future__ import annotations

import ctypes
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

from modelyard.compiler import machine
from modelyard.compiler.backends.llama_cpp import default_parallel
from modelyard.compiler.plan import ModelPlan
from modelyard.compiler.sources import PACKAGE_SCHEME, resolve_package_uri

from ..gbnf import nul_match, shape_call_grammar
from ..schema_utils import expand_type_lists
from .base import GenerationRequest, Item, Logprob, RequestError, Sink, check_token_ids, fit_context, generate_with
from .llama_devices import add_rpc_servers, load_log, load_options, model_params, placement
from .llama_slots import Slot, SlotScheduler, SlotSettings

log = logging.getLogger(__name__)


FLASH_ATTENTION = {"auto": "AUTO", "on": "ENABLED", "off": "DISABLED"}  # llama.cpp's llama_flash_attn_type


def physical_cores() -> int:
    """Cores this process may run on (not half of them, llama-cpp-python's default)."""
    return max(1, machine.cpu_count())


def slots(settings) -> int:
    """The YAML's (or LLAMACPP_PARALLEL's) ``parallel``, else the machine's default."""
    return settings.parallel or default_parallel(machine.cpu_count())


def _per_slot_bytes(settings) -> int | None:
    """``cache_ram`` shared among the slots: what each may keep in sliding-window checkpoints
    (None: unlimited, -1 in LocalAI's and llama.cpp's terms)."""
    if settings.cache_ram_mib is None:
        return None
    return settings.cache_ram_mib * 2**20 // slots(settings)


def llama_arguments(llama_cpp: Any, settings: Any) -> dict[str, Any]:
    """``Llama()`` keyword arguments for LocalAI's llama.cpp load settings (grpc-server.cpp
    l.499-1354), only those the YAML sets: Llama's defaults stay the model's own otherwise."""
    arguments: dict[str, Any] = {"offload_kqv": settings.offload_kqv, "op_offload": settings.op_offload}
    if settings.tensor_split:
        arguments["tensor_split"] = list(settings.tensor_split)
    if settings.split_mode is not None:
        arguments["split_mode"] = getattr(llama_cpp, f"LLAMA_SPLIT_MODE_{settings.split_mode.upper()}")
    for key, name in (("type_k", settings.cache_type_k), ("type_v", settings.cache_type_v)):
        if name is not None:
            arguments[key] = getattr(llama_cpp, f"GGML_TYPE_{name.upper()}")
    if settings.rope_scaling is not None:
        arguments["rope_scaling_type"] = getattr(llama_cpp, f"LLAMA_ROPE_SCALING_TYPE_{settings.rope_scaling.upper()}")
    for key in ("yarn_ext_factor", "yarn_attn_factor", "yarn_beta_fast", "yarn_beta_slow"):
        if getattr(settings, key) is not None:
            arguments[key] = getattr(settings, key)
    if settings.pooling_type is not None:
        arguments["pooling_type"] = getattr(llama_cpp, f"LLAMA_POOLING_TYPE_{settings.pooling_type.upper()}")
    if settings.lora_adapter is not None:
        arguments.update(lora_path=settings.lora_adapter, lora_base=settings.lora_base, lora_scale=settings.lora_scale)
    if settings.kv_overrides:
        arguments["kv_overrides"] = dict(settings.kv_overrides)
    return arguments


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
        self.concurrency = slots(settings)
        # Decoding happens in the scheduler's own multi-sequence context; Llama's context (one
        # sequence only) is kept minimal: Llama only loads the model and tokenizes. An embeddings
        # model instead embeds in Llama's context, sized to hold a whole input in one batch.
        self._embedding = model.embeddings
        context = model.context_size or 0
        # RPC servers are ggml devices once registered: the load spreads the layers over them.
        add_rpc_servers(llama_cpp, settings.grpc_servers)
        fields = {**load_options(llama_cpp, settings.repack), **({"check_tensors": True} if settings.check_tensors else {})}
        with model_params(llama_cpp, **fields), load_log(llama_cpp) as lines:
            self._llm = llama_cpp.Llama(
                model_path=path,
                n_ctx=context if self._embedding else 64,
                n_threads=threads,
                n_threads_batch=settings.threads_batch or threads,
                n_batch=context if self._embedding else settings.batch,
                n_ubatch=context if self._embedding else settings.ubatch or settings.batch,
                n_gpu_layers=-1 if settings.gpu_layers is None else settings.gpu_layers,
                main_gpu=settings.main_gpu,
                use_mmap=settings.mmap,
                use_mlock=settings.mlock,
                rope_freq_base=settings.rope_freq_base,
                rope_freq_scale=settings.rope_freq_scale,
                embedding=model.embeddings,
                flash_attn=settings.flash_attention == "on",  # Llama takes no "auto": the slots' context does
                # Its 64-token context never decodes: no full-size sliding-window cache (nor the log line).
                swa_full=settings.swa_full if self._embedding else False,
                verbose=False,
                **llama_arguments(llama_cpp, settings),
            )
        for line in placement(lines):
            log.info("%s: %s", model.name, line)
        self._context_size = model.context_size or self._llm._model.n_ctx_train()
        self._shift = settings.context_shift
        self._slots = None if self._embedding else self._scheduler(model)
        log.info("loaded %s (context %d per request, %d slot(s), threads=%d)", path, self._context_size,
                 self.concurrency, threads)

    def _scheduler(self, model: ModelPlan) -> SlotScheduler:
        settings = model.llama_cpp
        assert settings is not None
        # Start from Llama's context parameters (attention kernels, KV types, threads, RoPE):
        # only the sizes differ.
        base = self._llm.context_params
        params = type(base).from_buffer_copy(base)
        params.n_ctx = self._context_size * self.concurrency
        params.n_batch = params.n_ubatch = settings.batch
        params.n_seq_max = self.concurrency
        # Flash attention is llama.cpp's default (auto) but off in llama-cpp-python's: on two CPU
        # cores it decodes Gemma 3 270M 8-10% faster (benchmarks/serving_bench.py).
        params.flash_attn_type = getattr(self._llama_cpp, f"LLAMA_FLASH_ATTN_TYPE_{FLASH_ATTENTION[settings.flash_attention]}")
        params.kv_unified = True  # one pool shared by the slots, each up to the context size
        params.n_ubatch = settings.ubatch or settings.batch
        params.swa_full = settings.swa_full  # off: sliding-window layers keep the window only (see SlotScheduler)
        slots = SlotSettings(
            parallel=self.concurrency, n_batch=settings.batch, context=self._context_size,
            prefix_cache=settings.cache_ram_mib != 0, checkpoint_bytes=_per_slot_bytes(settings),
            context_shift=settings.context_shift,
            n_keep=model.sampling.n_keep,
            penalty_last_n=model.sampling.repeat_last_n,
            mirostat=(settings.mirostat, settings.mirostat_tau, settings.mirostat_eta),
        )
        scheduler = SlotScheduler(self._llama_cpp, self._llm._model, params, slots, self._logprob)
        adapter = getattr(self._llm, "_lora_adapter", None)
        if adapter is not None:  # Llama applied it to its own context only
            adapters = (self._llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
            scales = (ctypes.c_float * 1)(settings.lora_scale)
            if self._llama_cpp.llama_set_adapters_lora(scheduler.ctx, adapters, 1, scales):
                raise RuntimeError(f"llama.cpp could not apply the LoRA adapter {settings.lora_adapter}")
            log.info("%s: LoRA adapter %s applied (scale %g)", model.name, settings.lora_adapter, settings.lora_scale)
        return scheduler

    @property
    def context_size(self) -> int:
        return self._context_size

    def generate(self, request: GenerationRequest, cancelled: threading.Event) -> Iterator[Item]:
        return generate_with(self.start, request, cancelled)

    def start(self, request: GenerationRequest, cancelled: threading.Event, sink: Sink) -> None:
        """Check and tokenize ``request`` and queue it for a slot; the decode thread delivers
        its items into ``sink``."""
        llm = self._llm
        if request.logit_bias:
            check_token_ids(tuple(token for token, _ in request.logit_bias), llm.n_vocab(), "logit_bias")
        if request.prompt_tokens is not None:
            check_token_ids(request.prompt_tokens, llm.n_vocab())
            prompt_tokens = list(request.prompt_tokens)
        else:
            prompt_tokens = llm.tokenize(request.prompt.encode("utf-8"), add_bos=True, special=True)
        n_prompt = len(prompt_tokens)
        limit = fit_context(n_prompt, request.max_tokens, self.context_size, may_outgrow=self._shift)
        if self._slots is None:
            raise RequestError("this model serves embeddings only", param="model", code="unsupported_usecase")
        slot = Slot(request, prompt_tokens, limit, cancelled, out=sink, grammar_sampler=self._grammar_sampler(request))
        self._slots.submit(slot)

    def _token_text(self, tokens: list[int], index: int) -> str:
        vocabulary = self._llm.n_vocab()
        if any(t >= vocabulary for t in tokens):
            raise RequestError(f"input {index} holds a token id outside the model's vocabulary of {vocabulary}",
                               param="input")
        return self._llm.detokenize(tokens).decode("utf-8", errors="replace")

    def close(self) -> None:
        return None  # the decode thread is a daemon: it ends with the worker process

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=True)

    def detokenize(self, tokens: list[int]) -> str:
        check_token_ids(tuple(tokens), self._llm.n_vocab(), "tokens")
        return self._llm.detokenize(tokens).decode("utf-8", errors="replace")

    def embed(self, texts: list[str | list[int]]) -> tuple[list[list[float]], int]:
        """Unit-length embeddings and the token count. Models without a pooling type of their own
        (generative GGUFs) return one vector a token: those are mean-pooled here."""
        import numpy as np

        if not self._embedding:
            raise RequestError("this model does not serve embeddings (set 'embeddings: true')",
                               param="model", code="unsupported_usecase")
        # Token arrays go back to text: llama-cpp-python's embed takes strings only. A token
        # array a tokenizer produced from text re-tokenizes to itself.
        texts = [self._token_text(item, index) if isinstance(item, list) else item for index, item in enumerate(texts)]
        for index, text in enumerate(texts):
            n = len(self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=False))
            if n > self.context_size:
                raise RequestError(f"input {index} is {n} tokens, more than the model's {self.context_size}",
                                   param="input", code="context_length_exceeded")
        # One input at a time: llama-cpp-python's multi-input batch gives a text a different vector
        # than it gets alone for models without pooling (tests/e2e/test_embeddings.py).
        vectors, tokens = [], 0
        for text in texts:
            [item], count = self._llm.embed([text], normalize=False, truncate=False, return_count=True)
            tokens += count
            array = np.asarray(item, dtype=np.float64)
            if array.ndim == 2:
                array = array.mean(axis=0)
            norm = np.linalg.norm(array)
            vectors.append((array / norm if norm else array).tolist())
        return vectors, tokens

    def _logprob(self, pointer, token: int, top: int) -> Logprob:
        """From the logits row that produced ``token`` (read from the context, not copied
        for every token: llama-cpp-python keeps ``scores`` only with ``logits_all``, an
        n_ctx x n_vocab matrix, 4 GiB for Gemma's 262k vocabulary)."""
        import numpy as np

        llm = self._llm
        logits = np.ctypeslib.as_array(pointer, shape=(llm.n_vocab(),)).astype(np.float64)
        shifted = logits - logits.max()
        logprobs = shifted - np.log(np.exp(shifted).sum())
        best = np.argpartition(-logprobs, top)[:top] if top else np.array([], dtype=int)
        best = best[np.argsort(-logprobs[best])]

        def piece(token_id: int) -> tuple[str, list[int]]:
            raw = llm.detokenize([int(token_id)], special=True)
            return raw.decode("utf-8", errors="replace"), list(raw)

        alternatives = [(*piece(t), float(logprobs[t])) for t in best]
        text, raw = piece(token)
        return Logprob(text, float(logprobs[token]), raw, [(t, lp, b) for t, b, lp in alternatives])

    def _grammar_sampler(self, request: GenerationRequest):
        """llama.cpp's grammar sampler for the request's constraint, or None. The grammar is parsed
        here, in the request's thread, so one llama.cpp cannot parse is this request's 400 rather
        than unconstrained output (llama-cpp-python's LlamaGrammar keeps its text unchecked)."""
        from llama_cpp.llama_grammar import JSON_GBNF, LLAMA_GRAMMAR_DEFAULT_ROOT

        if request.json_schema is not None:
            try:
                text = json_schema_grammar(expand_type_lists(request.json_schema))  # keeps maxLength & co.
            except Exception as exc:  # noqa: BLE001 - llama.cpp's converter raises plain exceptions
                param = request.schema_param
                raise RequestError(f"{param}: the JSON Schema cannot be used: {exc}", param=param) from None
            if request.call_shape is not None:  # the YAML's function.grammar prefix and mixed_mode
                text = shape_call_grammar(text, request.call_shape)
            param = request.schema_param
        elif request.json_object:
            text, param = JSON_GBNF, "response_format"
        elif request.grammar is not None:
            text, param = request.grammar, "grammar"
        else:
            return None
        if (where := nul_match(text)) is not None:  # the server checks GBNF; this is the converted schema
            raise RequestError(f"{param}: {where} can match the NUL character, which llama.cpp cannot sample",
                               param=param)
        sampler = self._llama_cpp.llama_sampler_init_grammar(self._llm._model.vocab, text.encode(),
                                                             LLAMA_GRAMMAR_DEFAULT_ROOT.encode())
        if not sampler:
            raise RequestError(f"{param} is not a grammar llama.cpp can parse (undefined rules, no root, or "
                               "left recursion?)", param=param)
        return sampler


# llama-cpp-python's port of llama.cpp's JSON-Schema converter lets raw control characters into
# strings (its `char` rule is `[^"\\]`); JSON forbids them, and llama.cpp's own rule excludes them.
_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_JSON_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


def json_schema_grammar(schema: dict) -> str:
    """GBNF for ``schema``, with JSON's string characters (no raw control characters)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return json_schema_to_gbnf(json.dumps(schema)).replace(_LOOSE_CHAR, _JSON_CHAR)
