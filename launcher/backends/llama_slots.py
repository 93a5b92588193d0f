"""Continuous batching for llama.cpp: ``parallel`` sequences decoded together in one batch.

One decode thread owns a llama.cpp context with ``n_seq_max = parallel``. Each request gets a
slot: a sequence id, its own sampler chain (sampling runs in C, on the logits row of its last
token: no copy of logits into Python), and an output queue. Every step builds one
``llama_batch``: first one token for each slot already generating (so running streams never
stall), then as much prompt as the batch has room for (prompt processing in chunks); new
requests join the running batch as soon as a slot is free.

Decode is memory-bound on a CPU: each step reads the weights once, whatever the number of
sequences in the batch, so N streams cost little more than one.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import queue
import random
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .base import Finish, GenerationRequest, Logprob, Started

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Slot:
    request: GenerationRequest
    prompt: list[int]
    limit: int
    grammar: tuple[str, str] | None  # (GBNF, root rule)
    cancelled: threading.Event
    out: queue.Queue = field(default_factory=queue.Queue)
    seq_id: int = -1
    sampler: Any = None
    prefilled: int = 0  # prompt tokens already in the KV cache
    last_token: int = -1
    generated: int = 0
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))

    @property
    def decoding(self) -> bool:
        return self.prefilled == len(self.prompt)


class SlotScheduler:
    def __init__(self, llama_cpp: Any, model: Any, context_params: Any, parallel: int, n_batch: int,
                 logprob: Any) -> None:
        self.lib = llama_cpp
        self.model = model
        self.vocab = model.vocab
        self.n_vocab = model.n_vocab()
        self.parallel = parallel
        self.n_batch = n_batch
        self._logprob = logprob  # (logits pointer, token, top) -> Logprob
        self.ctx = llama_cpp.llama_init_from_model(model.model, context_params)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context for the parallel slots")
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.pending: deque[Slot] = deque()
        self.active: list[Slot] = []
        self.free_ids = list(range(parallel))
        self.wakeup = threading.Condition()
        self.piece_buffer = ctypes.create_string_buffer(256)
        threading.Thread(target=self._run, name="llama-slots", daemon=True).start()

    def submit(self, slot: Slot) -> None:
        with self.wakeup:
            self.pending.append(slot)
            self.wakeup.notify()

    # --- the decode loop ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self.wakeup:
                while self.free_ids and self.pending:
                    self._admit(self.pending.popleft())
                if not self.active:
                    self.wakeup.wait()
                    continue
            for slot in [s for s in self.active if s.cancelled.is_set()]:
                self._finish(slot, "cancelled")
            if self.active:
                self._step()

    def _admit(self, slot: Slot) -> None:
        slot.seq_id = self.free_ids.pop()
        slot.sampler = self._sampler(slot.request, slot.grammar)
        self.active.append(slot)
        slot.out.put(Started(len(slot.prompt)))

    def _step(self) -> None:
        batch, rows = self.batch, {}
        batch.n_tokens = 0
        for slot in self.active:
            if slot.decoding:
                rows[slot] = self._add(slot.last_token, slot.prefilled + slot.generated - 1, slot.seq_id, True)
        for slot in self.active:
            room = self.n_batch - batch.n_tokens
            if slot.decoding or room <= 0:
                continue
            chunk = slot.prompt[slot.prefilled:slot.prefilled + room]
            for offset, token in enumerate(chunk):
                position = slot.prefilled + offset
                index = self._add(token, position, slot.seq_id, position == len(slot.prompt) - 1)
            slot.prefilled += len(chunk)
            if slot.decoding:
                rows[slot] = index
        status = self.lib.llama_decode(self.ctx, batch)
        if status != 0:
            log.error("llama_decode failed with status %d", status)
            for slot in list(self.active):
                self._finish(slot, "error", f"llama_decode failed with status {status}")
            return
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
        token = lib.llama_sampler_sample(slot.sampler, self.ctx, row)  # also accepts the token
        if not slot.request.ignore_eos and lib.llama_vocab_is_eog(self.vocab, token):
            self._finish(slot, "stop")
            return
        if slot.request.logprobs is not None:
            slot.out.put(self._logprob(lib.llama_get_logits_ith(self.ctx, row), token, slot.request.logprobs))
        text = slot.decoder.decode(self._piece(token))
        slot.generated += 1
        slot.last_token = token
        if text:
            slot.out.put(text)
        if slot.generated >= slot.limit:
            self._finish(slot, "length")

    def _finish(self, slot: Slot, reason: str, error: str | None = None) -> None:
        self.lib.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
        self.lib.llama_sampler_free(slot.sampler)
        self.active.remove(slot)
        with self.wakeup:
            self.free_ids.append(slot.seq_id)
        tail = slot.decoder.decode(b"", final=True)
        if tail:
            slot.out.put(tail)
        slot.out.put(RuntimeError(error) if error else Finish(reason, len(slot.prompt), slot.generated))

    # --- helpers --------------------------------------------------------------------------------

    def _piece(self, token: int) -> bytes:
        size = self.lib.llama_token_to_piece(self.vocab, token, self.piece_buffer, len(self.piece_buffer), 0, False)
        if size < 0:  # a piece longer than the buffer: grow it once
            self.piece_buffer = ctypes.create_string_buffer(-size)
            size = self.lib.llama_token_to_piece(self.vocab, token, self.piece_buffer, -size, 0, False)
        return self.piece_buffer.raw[:size]

    def _sampler(self, request: GenerationRequest, grammar: tuple[str, str] | None):
        """A llama.cpp sampler chain, in llama.cpp's own order; greedy at temperature 0."""
        lib = self.lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        add = lambda sampler: lib.llama_sampler_chain_add(chain, sampler)  # noqa: E731
        if grammar is not None:
            add(lib.llama_sampler_init_grammar(self.vocab, grammar[0].encode(), grammar[1].encode()))
        if request.repeat_penalty != 1.0 or request.frequency_penalty or request.presence_penalty:
            add(lib.llama_sampler_init_penalties(self.n_vocab, 64, request.repeat_penalty,
                                                 request.frequency_penalty, request.presence_penalty))
        if request.temperature <= 0:
            add(lib.llama_sampler_init_greedy())
            return chain
        if request.top_k > 0:
            add(lib.llama_sampler_init_top_k(request.top_k))
        if request.typical_p < 1.0:
            add(lib.llama_sampler_init_typical(request.typical_p, 1))
        add(lib.llama_sampler_init_top_p(request.top_p, 1))
        if request.min_p > 0:
            add(lib.llama_sampler_init_min_p(request.min_p, 1))
        add(lib.llama_sampler_init_temp(request.temperature))
        seed = request.seed if request.seed is not None else random.randrange(2**31)
        add(lib.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain


def iterate(slot: Slot):
    """What ``Backend.generate`` yields for a slot, as the decode thread produces it."""
    while True:
        item = slot.out.get()
        if isinstance(item, Exception):
            raise item
        yield item
        if isinstance(item, Finish):
            return
