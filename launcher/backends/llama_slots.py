"""Continuous batching for llama.cpp: ``parallel`` sequences decoded together in one batch.

One decode thread owns a llama.cpp context with ``n_seq_max = parallel``. Each request gets a
slot: a sequence id, its own sampler chain (sampling runs in C, on the logits row of its last
token: no copy of logits into Python), and an output queue. Every step builds one
``llama_batch``: first one token for each slot already generating (so running streams never
stall), then as much prompt as the batch has room for (prompt processing in chunks); new
requests join the running batch as soon as a slot is free.

Prefix cache: a finished slot keeps its KV contents and remembers their tokens; a new request
takes the free slot that shares the longest prefix with its prompt and evaluates only the rest
(multi-turn chat re-sends the whole history). Prefixes shorter than ``MIN_REUSE`` are not
reused, so short prompts are computed exactly as without a cache. The cache lives in the slots'
own KV pool: it costs no memory beyond the context.

Checkpoints: a sliding-window model's cache holds only the last window of each sequence for
its sliding-window layers, so a shared prefix that ends more than a window before the cached
end (the same system prompt with a new question, a regenerated answer) cannot be resumed from
the KV pool alone. As llama-server does, each slot copies its sliding-window state at every
chunk boundary inside a prompt (``llama_state_seq_get_data_ext`` with the partial-state flag),
and a prompt longer than the window gets one more boundary ``CHECKPOINT_TAIL`` tokens before
its end: the next turn of a chat whose template re-renders the last answer differently (a
reasoning model's thoughts dropped), or a regenerated answer, shares the prompt up to about
there. Such a prefix restores the newest checkpoint inside it and evaluates from there. These
copies are the cache's only memory beyond the context: ``MAX_CHECKPOINTS`` a slot, and at most
``cache_ram`` MiB across the slots.

Context shift: a sequence that fills its context drops the older half of its tokens after the
first ``n_keep`` and carries on, as llama.cpp does, when the model's memory can shift.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import math
import queue
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..json_closer import CLOSING_MARGIN, JsonCloser
from .base import Finish, FinishReason, GenerationRequest, Logprob, PromptLogprobs, Sink, Started
from .decode_thread import DecodeThread, exit_worker

log = logging.getLogger(__name__)

MIN_REUSE = 32  # tokens of shared prefix below which a cached slot is recomputed from scratch
MAX_CHECKPOINTS = 8  # sliding-window checkpoints kept a slot (llama-server's --ctx-checkpoints)
CHECKPOINT_TAIL = 4  # a long prompt's last checkpoint sits this many tokens before its end (llama-server's)


@dataclass(eq=False)
class Checkpoint:
    """A sequence's sliding-window cache after its first ``n_tokens`` tokens."""

    n_tokens: int
    data: Any  # a ctypes byte array, as llama.cpp wrote it


@dataclass(eq=False)
class Slot:
    request: GenerationRequest
    prompt: list[int]
    limit: int
    cancelled: threading.Event
    out: Sink = field(default_factory=queue.Queue)  # where the items go, from the decode thread
    seq_id: int = -1
    sampler: Any = None
    grammar_sampler: Any = None  # the backend's, freed with the slot; kept out of the chain: see _sample_constrained
    prefilled: int = 0  # prompt tokens already in the KV cache
    n_past: int = 0  # the next position in this sequence
    last_token: int = -1
    generated: list[int] = field(default_factory=list)
    shifted: bool = False  # the KV no longer matches prompt + generated
    greedy: bool = False  # plain argmax: no sampler chain needed per token
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))
    prompt_entries: list[Logprob] = field(default_factory=list)  # echo with logprobs: the prompt's tokens scored
    closer: JsonCloser | None = None  # JSON output: closed before max_tokens cuts it (json_closer.py)

    @property
    def scores_prompt(self) -> bool:
        return self.request.prompt_logprobs is not None

    @property
    def decoding(self) -> bool:
        return self.prefilled == len(self.prompt)


@dataclass(frozen=True)
class SlotSettings:
    parallel: int
    n_batch: int
    context: int  # per slot
    prefix_cache: bool = True
    checkpoint_bytes: int | None = None  # per slot; None: only MAX_CHECKPOINTS bounds them
    context_shift: bool = False
    n_keep: int = 0
    penalty_last_n: int = 64  # the YAML's repeat_last_n (-1: the whole context, 0: no penalties)
    mirostat: tuple[int, float, float] = (0, 5.0, 0.1)  # (version or 0, tau, eta): the YAML's


class SlotScheduler(DecodeThread):
    def __init__(self, llama_cpp: Any, model: Any, context_params: Any, settings: SlotSettings, logprob: Any,
                 on_failure: Callable[[BaseException], None] = exit_worker) -> None:
        super().__init__(on_failure)
        self.lib = llama_cpp
        self.model = model
        self.vocab = model.vocab
        self.n_vocab = model.n_vocab()
        self.settings = settings
        self.n_batch = settings.n_batch
        self._logprob = logprob  # (logits pointer, token, top) -> Logprob
        self.ctx = llama_cpp.llama_init_from_model(model.model, context_params)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context for the parallel slots")
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        # A sliding-window model's cache keeps only the window's worth of tokens for its
        # sliding-window layers (llama-server's default; Gemma 3's 15 such layers of 18 then
        # hold 512 positions a slot instead of the whole context): a cached prefix is
        # reusable only while the window before its end is still held.
        self.n_swa = 0 if context_params.swa_full else llama_cpp.llama_model_n_swa(model.model)
        self.can_shift = bool(llama_cpp.llama_memory_can_shift(self.memory))
        self.batch = llama_cpp.llama_batch_init(settings.n_batch, 0, 1)
        self.active: list[Slot] = []
        self.free_ids = list(range(settings.parallel))
        self.cached: dict[int, list[int]] = {}  # seq id → the tokens its KV holds (free slots)
        self.checkpoints: dict[int, list[Checkpoint]] = {}  # seq id → oldest first
        self.checkpointing = bool(self.n_swa) and settings.prefix_cache and settings.checkpoint_bytes != 0
        self.piece_buffer = ctypes.create_string_buffer(256)
        # Candidate buffers for grammar-constrained sampling, allocated once.
        self.candidates = np.zeros(self.n_vocab, dtype=[("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
        self.token_ids = np.arange(self.n_vocab, dtype=np.int32)
        self.candidate_ptr = self.candidates.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data))
        self.one = (llama_cpp.llama_token_data * 1)()
        self.start_decoding("llama-slots")

    # --- the decode loop (guarded by DecodeThread._run) ------------------------------------------

    def _take_in_flight(self) -> list[Slot]:
        active, self.active = self.active, []
        return active

    def _loop(self) -> None:
        while True:
            with self.wakeup:
                while self.free_ids and self.pending:
                    self._admit(self.pending.popleft())
                if not self.active:
                    self.wakeup.wait()
                    continue
            for slot in [s for s in self.active if s.cancelled.is_set()]:
                self._finish(slot, FinishReason.CANCELLED)
            if self.active:
                self._step()

    def _admit(self, slot: Slot) -> None:
        seq_id, reuse = self._best_free_slot(slot.prompt)
        self.free_ids.remove(seq_id)
        self.cached.pop(seq_id, None)
        # Checkpoints past the shared prefix describe tokens this prompt does not have.
        checkpoints = [c for c in self.checkpoints.pop(seq_id, ()) if c.n_tokens <= reuse]
        if reuse and self.n_swa and self.lib.llama_memory_seq_pos_min(self.memory, seq_id) > max(0, reuse - self.n_swa):
            # The window before the prefix's end has left the cache (llama-server's test):
            # resume from the newest checkpoint inside the prefix, or from scratch.
            reuse = self._restore(seq_id, checkpoints)
            checkpoints = [c for c in checkpoints if c.n_tokens <= reuse]
        if slot.scores_prompt:
            reuse = 0  # every prompt token's logits are needed: none may come from the cache
        if reuse and not self.lib.llama_memory_seq_rm(self.memory, seq_id, reuse, -1):
            reuse = 0  # this memory cannot drop a partial sequence: recompute it all
        if not reuse:
            self.lib.llama_memory_seq_rm(self.memory, seq_id, -1, -1)
            checkpoints = []
        self.checkpoints[seq_id] = checkpoints
        slot.seq_id, slot.prefilled, slot.n_past = seq_id, reuse, reuse
        slot.sampler, slot.greedy = self._sampler(slot.request)
        # The closer knows JSON alone: not text around it (a call grammar's prefix or mixed text).
        if slot.grammar_sampler is not None and slot.request.call_shape is None \
                and (slot.request.json_object or slot.request.json_schema is not None):
            slot.closer = JsonCloser()
        self.active.append(slot)
        slot.out.put(Started(len(slot.prompt), cached_tokens=reuse))

    def _best_free_slot(self, prompt: list[int]) -> tuple[int, int]:
        """The free slot sharing the longest prefix with ``prompt``, and how much of it to keep."""
        best, best_common = self.free_ids[-1], 0
        if self.settings.prefix_cache:
            for seq_id in self.free_ids:
                common = _common_prefix(self.cached.get(seq_id, ()), prompt)
                if common > best_common:
                    best, best_common = seq_id, common
        # At least the last prompt token is evaluated again: its logits start the generation.
        keep = min(best_common, len(prompt) - 1)
        return best, keep if keep >= MIN_REUSE else 0

    def _step(self) -> None:
        batch, rows = self.batch, {}
        batch.n_tokens = 0
        for slot in list(self.active):
            if slot.decoding:
                if slot.n_past >= self.settings.context and not self._shift(slot):
                    self._finish(slot, FinishReason.LENGTH)
                    continue
                rows[slot] = self._add(slot.last_token, slot.n_past, slot.seq_id, True)
                slot.n_past += 1
        prefilled, scored = [], []
        for slot in self.active:
            room = self.n_batch - batch.n_tokens
            if slot.decoding or room <= 0:
                continue
            prefilled.append(slot)
            end = slot.prefilled + room
            tail = len(slot.prompt) - CHECKPOINT_TAIL
            if self.n_swa and len(slot.prompt) > self.n_swa and slot.prefilled < tail < end:
                # A chunk boundary, hence a checkpoint, just before the prompt's end; made with
                # the cache off too, so that a prompt is computed the same way either way.
                end = tail
            chunk = slot.prompt[slot.prefilled:end]
            for offset, token in enumerate(chunk):
                position = slot.prefilled + offset
                last = position == len(slot.prompt) - 1
                index = self._add(token, position, slot.seq_id, last or slot.scores_prompt)
                if slot.scores_prompt and not last:  # this row's logits score the next prompt token
                    scored.append((slot, index, slot.prompt[position + 1]))
            slot.prefilled += len(chunk)
            slot.n_past = slot.prefilled
            if slot.decoding:
                rows[slot] = index
        status = self.lib.llama_decode(self.ctx, batch)
        if status != 0:
            log.error("llama_decode failed with status %d", status)
            for slot in list(self.active):
                self._finish(slot, FinishReason.STOP, f"llama_decode failed with status {status}")
            return
        if self.checkpointing:
            for slot in prefilled:
                if not slot.decoding:  # it stopped at a boundary inside its prompt
                    self._checkpoint(slot)
        for slot, row, token in scored:
            slot.prompt_entries.append(self._logprob(self.lib.llama_get_logits_ith(self.ctx, row), token,
                                                     slot.request.prompt_logprobs))
        for slot in prefilled:
            if slot.scores_prompt and slot.decoding:  # the whole prompt is scored: before any generated token
                first = self._piece(slot.prompt[0])
                slot.out.put(PromptLogprobs((first.decode("utf-8", errors="replace"), list(first)),
                                            slot.prompt_entries))
                slot.prompt_entries = []
        for slot, row in rows.items():
            self._sample(slot, row)

    def _add(self, token: int, position: int, seq_id: int, logits: bool) -> int:
        batch = self.batch
        index = batch.n_tokens
        batch.token[index] = token
        batch.pos[index] = position
        batch.n_seq_id[index] = 1
        batch.seq_id[index][0] = seq_id
        batch.logits[index] = logits
        batch.n_tokens = index + 1
        return index

    def _sample(self, slot: Slot, row: int) -> None:
        lib = self.lib
        forced = self._closing_token(slot) if slot.closer is not None else None
        if forced is not None:
            token = forced
        elif slot.grammar_sampler is not None:
            token = self._sample_constrained(slot, row)
        elif slot.greedy:
            # What llama.cpp's greedy sampler picks (the first highest logit), read in place:
            # llama_sampler_sample copies the whole row into a candidate array first, 0.56 ms
            # against 0.08 ms for a 262k vocabulary, per token.
            token = int(self._logits(row).argmax())
        else:
            token = lib.llama_sampler_sample(slot.sampler, self.ctx, row)  # also accepts the token
        if not slot.request.ignore_eos and lib.llama_vocab_is_eog(self.vocab, token):
            self._finish(slot, FinishReason.STOP)
            return
        if slot.request.logprobs is not None:
            slot.out.put(self._logprob(lib.llama_get_logits_ith(self.ctx, row), token, slot.request.logprobs))
        text = slot.decoder.decode(self._piece(token))
        if slot.closer is not None:
            slot.closer.feed(text)
        slot.generated.append(token)
        slot.last_token = token
        if text:
            slot.out.put(text)
        if len(slot.generated) >= slot.limit:
            self._finish(slot, FinishReason.LENGTH)

    def _closing_token(self, slot: Slot) -> int | None:
        """Once the tokens left are no more than the JSON's closing text needs (plus
        ``CLOSING_MARGIN``), that text's next token, when the grammar takes it (a schema that
        requires more runs out as before)."""
        assert slot.closer is not None and slot.grammar_sampler is not None
        needed = slot.closer.closing()
        left = slot.limit - len(slot.generated)
        if not needed or left > len(needed) + CLOSING_MARGIN:  # a token writes at least one character: not yet
            return None
        tokens = self.model.tokenize(needed.encode(), False, False)
        if not tokens or left > len(tokens) + CLOSING_MARGIN:
            return None
        token = tokens[0]
        if not self._grammar_accepts(slot, token):
            return None
        self.lib.llama_sampler_accept(slot.grammar_sampler, token)
        self.lib.llama_sampler_accept(slot.sampler, token)
        return token

    def _grammar_accepts(self, slot: Slot, token: int) -> bool:
        self.one[0].id, self.one[0].logit, self.one[0].p = token, 1.0, 0.0
        single = self.lib.llama_token_data_array(self.one, 1, -1, False)
        self.lib.llama_sampler_apply(slot.grammar_sampler, ctypes.byref(single))
        return self.one[0].logit != -math.inf

    def _sample_constrained(self, slot: Slot, row: int) -> int:
        """llama.cpp's own shortcut (``common_sampler_sample``): sample without the grammar and
        keep the token when the grammar accepts it; only otherwise filter every candidate
        through the grammar and sample again. Checking one token is cheap; running a 262k-token
        vocabulary through the grammar at every step made constrained decoding 4x slower."""
        lib = self.lib
        token = self._apply(slot.sampler, row, grammar=None)
        if not self._grammar_accepts(slot, token):
            token = self._apply(slot.sampler, row, grammar=slot.grammar_sampler)
        lib.llama_sampler_accept(slot.grammar_sampler, token)
        lib.llama_sampler_accept(slot.sampler, token)
        return token

    def _apply(self, chain: Any, row: int, grammar: Any) -> int:
        """The token ``chain`` (after ``grammar``, if given) selects from this row's logits,
        without accepting it."""
        lib = self.lib
        logits = self._logits(row)
        self.candidates["id"] = self.token_ids  # samplers reorder the buffer: refill it
        self.candidates["logit"] = logits
        self.candidates["p"] = 0.0
        array = lib.llama_token_data_array(self.candidate_ptr, self.n_vocab, -1, False)
        if grammar is not None:
            lib.llama_sampler_apply(grammar, ctypes.byref(array))
        lib.llama_sampler_apply(chain, ctypes.byref(array))
        return int(array.data[array.selected].id)

    def _logits(self, row: int) -> np.ndarray:
        """The logits of batch row ``row``, as a view on llama.cpp's buffer (valid until the next decode)."""
        return np.ctypeslib.as_array(self.lib.llama_get_logits_ith(self.ctx, row), shape=(self.n_vocab,))

    def _checkpoint(self, slot: Slot) -> None:
        """Copy the sliding-window state of ``slot``'s prompt so far (its first ``prefilled`` tokens)."""
        lib, flags = self.lib, self.lib.LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY
        if slot.prefilled < MIN_REUSE:
            return
        size = lib.llama_state_seq_get_size_ext(self.ctx, slot.seq_id, flags)
        data = (ctypes.c_uint8 * size)()
        if lib.llama_state_seq_get_data_ext(self.ctx, data, size, slot.seq_id, flags) != size:
            log.warning("llama.cpp could not copy the state of sequence %d; no checkpoint taken", slot.seq_id)
            return
        kept = self.checkpoints.setdefault(slot.seq_id, [])
        kept.append(Checkpoint(slot.prefilled, data))
        budget = self.settings.checkpoint_bytes
        while kept and (len(kept) > MAX_CHECKPOINTS or (budget is not None and sum(len(c.data) for c in kept) > budget)):
            kept.pop(0)  # the oldest: the newest resume the longest prefixes

    def _restore(self, seq_id: int, checkpoints: list[Checkpoint]) -> int:
        """Put the newest of ``checkpoints`` back into ``seq_id``'s sliding-window cache; the
        number of tokens now resumable (0: none, compute from scratch)."""
        flags = self.lib.LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY
        for checkpoint in reversed(checkpoints):
            size = len(checkpoint.data)
            if self.lib.llama_state_seq_set_data_ext(self.ctx, checkpoint.data, size, seq_id, flags) == size:
                return checkpoint.n_tokens
            log.warning("llama.cpp refused a checkpoint of sequence %d at %d tokens", seq_id, checkpoint.n_tokens)
        return 0

    def _shift(self, slot: Slot) -> bool:
        """Make room by discarding the older half after ``n_keep``; False when not allowed."""
        if not (self.settings.context_shift and self.can_shift):
            return False
        n_keep = slot.request.n_keep if slot.request.n_keep is not None else self.settings.n_keep
        keep = min(len(slot.prompt) if n_keep < 0 else n_keep, slot.n_past - 2)  # -1: the whole prompt (llama.cpp)
        discard = (slot.n_past - keep) // 2
        self.lib.llama_memory_seq_rm(self.memory, slot.seq_id, keep, keep + discard)
        self.lib.llama_memory_seq_add(self.memory, slot.seq_id, keep + discard, slot.n_past, -discard)
        slot.n_past -= discard
        slot.shifted = True
        return True

    def _finish(self, slot: Slot, reason: FinishReason, error: str | None = None) -> None:
        # n_past counts the positions decoded into the KV: a last sampled token may not be.
        in_kv = (slot.prompt[:slot.prefilled] + slot.generated)[:slot.n_past]
        if self.settings.prefix_cache and not slot.shifted and not error and len(in_kv) >= MIN_REUSE:
            self.cached[slot.seq_id] = in_kv
        else:
            self.lib.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
            self.checkpoints.pop(slot.seq_id, None)
        self.lib.llama_sampler_free(slot.sampler)
        if slot.grammar_sampler is not None:
            self.lib.llama_sampler_free(slot.grammar_sampler)
        self.active.remove(slot)
        with self.wakeup:
            self.free_ids.append(slot.seq_id)
        tail = slot.decoder.decode(b"", final=True)
        if tail:
            slot.out.put(tail)
        slot.out.put(RuntimeError(error) if error else Finish(reason, len(slot.prompt), len(slot.generated)))

    # --- helpers --------------------------------------------------------------------------------

    def _piece(self, token: int) -> bytes:
        size = self.lib.llama_token_to_piece(self.vocab, token, self.piece_buffer, len(self.piece_buffer), 0, False)
        if size < 0:  # a piece longer than the buffer: grow it once
            self.piece_buffer = ctypes.create_string_buffer(-size)
            size = self.lib.llama_token_to_piece(self.vocab, token, self.piece_buffer, -size, 0, False)
        return self.piece_buffer.raw[:size]

    def _sampler(self, request: GenerationRequest) -> tuple[Any, bool]:
        """A llama.cpp sampler chain, in llama.cpp's own order (greedy at temperature 0), and
        whether it is a lone greedy sampler."""
        lib = self.lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        add = lambda sampler: lib.llama_sampler_chain_add(chain, sampler)  # noqa: E731
        if request.logit_bias:  # first, as llama.cpp's common sampler has it (llama.cpp copies the array)
            biases = (lib.llama_logit_bias * len(request.logit_bias))(
                *(lib.llama_logit_bias(token, bias) for token, bias in request.logit_bias))
            add(lib.llama_sampler_init_logit_bias(self.n_vocab, len(request.logit_bias), biases))
        last_n = self.settings.penalty_last_n if self.settings.penalty_last_n >= 0 else self.settings.context
        penalties = bool(last_n) and bool(
            request.repeat_penalty != 1.0 or request.frequency_penalty or request.presence_penalty)
        if penalties:
            add(lib.llama_sampler_init_penalties(self.n_vocab, last_n, request.repeat_penalty,
                                                 request.frequency_penalty, request.presence_penalty))
        if request.temperature <= 0:
            add(lib.llama_sampler_init_greedy())
            return chain, not (penalties or request.logit_bias)  # in-place argmax would skip them
        seed = request.seed if request.seed is not None else random.randrange(2**31)
        version, tau, eta = self.settings.mirostat
        if version:  # llama.cpp's common sampler: temperature, then mirostat in place of the cut-offs
            add(lib.llama_sampler_init_temp(request.temperature))
            add(lib.llama_sampler_init_mirostat(self.n_vocab, seed & 0xFFFFFFFF, tau, eta, 100) if version == 1
                else lib.llama_sampler_init_mirostat_v2(seed & 0xFFFFFFFF, tau, eta))
            return chain, False
        if request.top_k > 0:
            add(lib.llama_sampler_init_top_k(request.top_k))
        if request.typical_p < 1.0:
            add(lib.llama_sampler_init_typical(request.typical_p, 1))
        add(lib.llama_sampler_init_top_p(request.top_p, 1))
        if request.min_p > 0:
            add(lib.llama_sampler_init_min_p(request.min_p, 1))
        add(lib.llama_sampler_init_temp(request.temperature))
        add(lib.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain, False


def _common_prefix(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
