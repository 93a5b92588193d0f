"""Batched decoding for transformers causal LMs: concurrent requests share forward passes.

A scheduler thread takes every waiting request (up to ``MAX_BATCH``), left-pads the prompts
into one batch, prefills them in one forward pass, then decodes one token per row per step
with the KV cache. A row that ends (end token, its limit, or cancelled: the client left or a
stop string matched) leaves the batch at once (``DynamicCache.batch_select_indices``), so the
rest run on a smaller batch; requests that arrive meanwhile wait for the next batch.

Constrained output (``response_format``, forced tool calls) masks each row's logits with its
xgrammar matcher before sampling. Sampling is per row, with transformers' own logits processors in ``generate``'s order
(repetition penalty, then temperature, top-k, top-p, min-p, typical-p) and a per-row
``torch.Generator`` for seeds; presence and frequency penalties are OpenAI's definitions.
Text is decoded incrementally, holding back an incomplete UTF-8 character.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..json_closer import CLOSING_MARGIN, JsonCloser
from .base import Finish, GenerationRequest, Logprob, PromptLogprobs, Sink
from .decode_thread import DecodeThread, exit_worker
from .hf_tokens import TokenBytes

log = logging.getLogger(__name__)

MAX_BATCH = 8


@dataclass(eq=False)
class Row:
    request: GenerationRequest
    prompt: list[int]
    limit: int
    cancelled: threading.Event
    out: Sink = field(default_factory=queue.Queue)  # where the items go, from the decode thread
    generated: list[int] = field(default_factory=list)
    prefix_offset: int = 0  # incremental decoding window over `generated`
    read_offset: int = 0
    matcher: Any = None  # xgrammar's GrammarMatcher for constrained output
    bitmask: Any = None
    processors: Any = None
    generator: Any = None
    closer: JsonCloser | None = None  # JSON output: closed before max_tokens cuts it (json_closer.py)


class BatchScheduler(DecodeThread):
    def __init__(self, model: Any, tokenizer: Any, device: str, eos_ids: set[int], torch: Any,
                 batched: bool = True, on_failure: Callable[[BaseException], None] = exit_worker) -> None:
        super().__init__(on_failure)
        self.model, self.tokenizer, self.device, self.eos_ids, self.torch = model, tokenizer, device, eos_ids, torch
        # OpenVINO models keep their KV state inside the compiled model: they run through their
        # own ``generate``, one request at a time.
        self.batched = batched
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids or {0})
        self.token_bytes = TokenBytes(tokenizer)  # a piece of a character decodes to "": its bytes still go
        self.running: list[Row] = []  # the batch being decoded
        self.start_decoding("transformers-batch")

    def _take_in_flight(self) -> list[Row]:
        running, self.running = self.running, []
        return running

    def _loop(self) -> None:
        while True:
            with self.wakeup:
                while not self.pending:
                    self.wakeup.wait()
                count = min(MAX_BATCH if self.batched else 1, len(self.pending))
                self.running = [self.pending.popleft() for _ in range(count)]
            try:
                self._decode(self.running) if self.batched else self._generate_one(self.running[0])
            except Exception as exc:  # a failed batch (out of memory, say) fails its requests, not the worker
                log.exception("batch decode failed")
                for row in self.running:
                    row.out.put(exc)
            self.running = []

    def _decode(self, rows: list[Row]) -> None:
        torch = self.torch
        for row in rows:
            row.processors = _processors(row.request)
            row.generator = None
            if row.request.temperature > 0:
                row.generator = torch.Generator(device=self.device)
                if row.request.seed is not None:
                    row.generator.manual_seed(row.request.seed)
                else:
                    row.generator.seed()
        width = max(len(row.prompt) for row in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):  # left padding: every row's last token is in the last column
            ids[i, width - len(row.prompt):] = torch.tensor(row.prompt, dtype=torch.long)
            mask[i, width - len(row.prompt):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        active = list(rows)
        scoring = any(row.request.prompt_logprobs is not None for row in rows)
        with torch.inference_mode():
            # Echo with logprobs needs every prompt position's logits; otherwise only the last one's.
            output = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                                logits_to_keep=0 if scoring else 1)
            cache = output.cache
            if scoring:
                self._score_prompts(rows, output.logits, width)
            while True:
                logits = output.logits[:, -1, :].float()
                tokens, keep = [], []
                for i, row in enumerate(active):
                    token = self._step(row, logits[i:i + 1])
                    if token is not None:
                        tokens.append(token)
                        keep.append(i)
                if not keep:
                    return
                if len(keep) < len(active):
                    index = torch.tensor(keep, device=self.device)
                    cache.batch_select_indices(index)
                    mask, positions = mask[index], positions[index]
                    active = [active[i] for i in keep]
                mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=-1)
                positions = positions[:, -1:] + 1
                step = torch.tensor(tokens, dtype=torch.long, device=self.device).unsqueeze(-1)
                output = self.model(input_ids=step, attention_mask=mask, position_ids=positions, cache=cache,
                                    use_cache=True)

    def _score_prompts(self, rows: list[Row], logits: Any, width: int) -> None:
        """Each scoring row's prompt tokens as the model scores them (column ``c`` predicts the
        token in column ``c + 1``; rows are left-padded), sent before its first generated token."""
        for i, row in enumerate(rows):
            top = row.request.prompt_logprobs
            if top is None:
                continue
            start = width - len(row.prompt)
            entries = [self._logprob(logits[i:i + 1, start + p].float(), row.prompt[p + 1], top)
                       for p in range(len(row.prompt) - 1)]
            first = self.tokenizer.decode([row.prompt[0]])
            row.out.put(PromptLogprobs((first, self.token_bytes(row.prompt[0])), entries))

    def _generate_one(self, row: Row) -> None:
        """One request through the model's own ``generate``, streamed token by token."""
        import transformers

        torch, request, scheduler = self.torch, row.request, self

        class Stream(transformers.generation.streamers.BaseStreamer):
            prompt_seen = False

            def put(self, value: Any) -> None:
                if not self.prompt_seen:  # generate hands the prompt over first
                    self.prompt_seen = True
                    return
                for token in value.reshape(-1).tolist():
                    if token in scheduler.eos_ids and not request.ignore_eos:
                        continue
                    row.generated.append(int(token))
                    delta = scheduler._new_text(row)
                    if delta:
                        row.out.put(delta)

            def end(self) -> None:
                pass

        class Cancelled(transformers.StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), row.cancelled.is_set(), dtype=torch.bool)

        if request.seed is not None:
            torch.manual_seed(request.seed)
        sampling = {"do_sample": request.temperature > 0}
        if request.temperature > 0:
            sampling.update(temperature=request.temperature, top_p=request.top_p, top_k=max(request.top_k, 0),
                            min_p=request.min_p or None, typical_p=request.typical_p)
        self.model.generate(input_ids=torch.tensor([row.prompt]), max_new_tokens=row.limit,
                            repetition_penalty=request.repeat_penalty or 1.0, streamer=Stream(),
                            stopping_criteria=transformers.StoppingCriteriaList([Cancelled()]),
                            eos_token_id=None if request.ignore_eos else sorted(self.eos_ids), **sampling)
        self._finish(row, "length" if len(row.generated) >= row.limit else "stop")

    def _step(self, row: Row, logits: Any) -> int | None:
        """Sample ``row``'s next token and send its text; None when the row is finished."""
        torch = self.torch
        if row.cancelled.is_set():
            self._finish(row, "cancelled")
            return None
        request = row.request
        scores = _penalize(logits.clone(), row, torch)
        if request.logit_bias:
            tokens = torch.tensor([t for t, _ in request.logit_bias], dtype=torch.long, device=scores.device)
            scores[0, tokens] += torch.tensor([b for _, b in request.logit_bias], dtype=scores.dtype, device=scores.device)
        if row.matcher is not None:
            _constrain(row, scores)
        if row.processors:  # they read the whole sequence (repetition penalty): built only then
            history = torch.tensor([row.prompt + row.generated], dtype=torch.long, device=logits.device)
            for processor in row.processors:
                scores = processor(history, scores)
        token = self._closing_token(row) if row.closer is not None else None  # accepted by the matcher
        if token is None:
            if row.generator is None:
                token = int(scores.argmax(-1))
            else:
                probabilities = torch.softmax(scores, dim=-1)
                token = int(torch.multinomial(probabilities, 1, generator=row.generator))
            if token in self.eos_ids and not request.ignore_eos:
                self._finish(row, "stop")
                return None
            if row.matcher is not None:
                row.matcher.accept_token(token)
        if request.logprobs is not None:
            row.out.put(self._logprob(logits, token, request.logprobs))
        row.generated.append(token)
        delta = self._new_text(row)
        if delta:
            row.out.put(delta)
            if row.closer is not None:
                row.closer.feed(delta)
        if len(row.generated) >= row.limit:
            self._finish(row, "length")
            return None
        return token

    def _closing_token(self, row: Row) -> int | None:
        """As llama.cpp's slots do (``SlotScheduler._closing_token``): once the tokens left are no
        more than the JSON's closing needs (plus a margin), its next token, if the grammar takes it."""
        assert row.closer is not None and row.matcher is not None
        needed = row.closer.closing()
        left = row.limit - len(row.generated)
        if not needed or left > len(needed) + CLOSING_MARGIN:
            return None
        tokens = self.tokenizer.encode(needed, add_special_tokens=False)
        if not tokens or left > len(tokens) + CLOSING_MARGIN or not row.matcher.accept_token(tokens[0]):
            return None
        return int(tokens[0])

    def _logprob(self, logits: Any, token: int, top: int) -> Logprob:
        logprobs = self.torch.log_softmax(logits[0], dim=-1)
        piece = lambda t: self.tokenizer.decode([t])  # noqa: E731
        best = self.torch.topk(logprobs, top).indices.tolist() if top else []
        return Logprob(piece(token), float(logprobs[token]), self.token_bytes(token),
                       [(piece(t), float(logprobs[t]), self.token_bytes(t)) for t in best])

    def _new_text(self, row: Row, final: bool = False) -> str:
        """The text the newest tokens add (vLLM's and TGI's offsets: a window of recent tokens
        is decoded, so byte-level pieces of one character join up, and nothing sent changes)."""
        decode = lambda tokens: self.tokenizer.decode(tokens, skip_special_tokens=True)  # noqa: E731
        before = decode(row.generated[row.prefix_offset:row.read_offset])
        after = decode(row.generated[row.prefix_offset:])
        if len(after) <= len(before) or (after.endswith("\ufffd") and not final):
            return ""  # an incomplete character: wait for its next byte
        row.prefix_offset, row.read_offset = row.read_offset, len(row.generated)
        return after[len(before):]

    def _finish(self, row: Row, reason: str) -> None:
        tail = self._new_text(row, final=True)  # whatever an incomplete character held back
        if tail:
            row.out.put(tail)
        row.out.put(Finish("stop" if reason == "cancelled" else reason, len(row.prompt), len(row.generated)))


def _processors(request: GenerationRequest) -> list[Any]:
    """transformers' own logits processors for this request, in ``generate``'s order."""
    from transformers.generation import logits_process as lp

    processors: list[Any] = []
    if request.repeat_penalty not in (0, 1.0):
        processors.append(lp.RepetitionPenaltyLogitsProcessor(request.repeat_penalty))
    if request.temperature <= 0:
        return processors  # greedy
    processors.append(lp.TemperatureLogitsWarper(request.temperature))
    if request.top_k > 0:
        processors.append(lp.TopKLogitsWarper(request.top_k))
    if request.top_p < 1.0:
        processors.append(lp.TopPLogitsWarper(request.top_p))
    if request.min_p > 0:
        processors.append(lp.MinPLogitsWarper(request.min_p))
    if request.typical_p < 1.0:
        processors.append(lp.TypicalLogitsWarper(request.typical_p))
    return processors


def _constrain(row: Row, scores: Any) -> None:
    """Mask the tokens the grammar does not allow next (in place, on the CPU copy)."""
    import xgrammar

    if row.bitmask is None:
        row.bitmask = xgrammar.allocate_token_bitmask(1, scores.shape[-1])
    row.matcher.fill_next_token_bitmask(row.bitmask)
    xgrammar.apply_token_bitmask_inplace(scores, row.bitmask.to(scores.device))


def _penalize(scores: Any, row: Row, torch: Any) -> Any:
    """OpenAI's presence and frequency penalties over the generated tokens."""
    request = row.request
    if not (request.presence_penalty or request.frequency_penalty) or not row.generated:
        return scores
    tokens, counts = torch.tensor(row.generated, device=scores.device).unique(return_counts=True)
    scores[0, tokens] -= request.frequency_penalty * counts.to(scores.dtype) + request.presence_penalty
    return scores
