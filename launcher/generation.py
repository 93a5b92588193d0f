"""Running one request's choices on the pool: sampling settings merged, stop sequences and
output rules applied, token usage and logprobs gathered in OpenAI's shapes."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from starlette.requests import Request

from modelyard.compiler.plan import ModelPlan

from .backends.base import GenerationRequest
from .messages import Embeddings, Failure, Finish, FinishReason, Item, Logprob, PromptLogprobs, Started, Tokens
from .output import StopFilter, finetune
from .protocol import Sampling
from .reasoning import opened_in_prompt
from .state import server_state
from .tools import ToolRequest

log = logging.getLogger(__name__)

T = TypeVar("T")


class Pool(Protocol):
    def generate(self, model: str, request: GenerationRequest) -> AsyncIterator[Item]: ...  # raises Failure
    async def embed(self, model: str, inputs: list[str | list[int]]) -> Embeddings: ...  # raises Failure
    async def tokenize(self, model: str, text: str | None, tokens: list[int] | None,
                       add_special: bool, pieces: bool = False) -> Tokens: ...  # raises Failure
    def stats(self) -> dict[str, dict[str, int]]: ...
    def loaded(self) -> dict[str, float | None]: ...  # model → seconds until an idle unload (None: never)
    async def keep_alive(self, model: str, seconds: float) -> None: ...
    async def preload(self) -> None: ...
    def add(self, model: ModelPlan) -> None: ...
    async def remove(self, name: str) -> None: ...
    async def close(self) -> None: ...


@dataclass
class Job:
    """Everything one request needs to run its choices."""

    model: ModelPlan
    prompt: str
    body: Sampling
    max_tokens: int | None
    json_schema: dict[str, Any] | None = None
    json_object: bool = False
    grammar: str | None = None
    logprobs: int | None = None  # None: off; N: with the N most likely alternatives
    tools: ToolRequest | None = None
    prompt_tokens: tuple[int, ...] | None = None  # a token-array prompt (then ``prompt`` is "")
    schema_param: str = "response_format"  # where json_schema came from: "tools" for a forced call
    echo: str = ""  # the prompt text a completion with echo starts its choices with

    @property
    def prompt_logprobs(self) -> int | None:
        """Echo with logprobs scores the echoed prompt's tokens too (OpenAI's legacy completions)."""
        return self.logprobs if self.echo else None

    @functools.cached_property
    def reasoning_opened(self) -> str | None:
        """The reasoning start tag the prompt leaves open for the answer (``reasoning.py``)."""
        return opened_in_prompt(self.prompt, self.model.reasoning)

    def generation(self, choice: int) -> GenerationRequest:
        s, b = self.model.sampling, self.body
        seed = b.seed if b.seed is not None else s.seed
        return GenerationRequest(
            prompt=self.prompt, max_tokens=self.max_tokens,
            temperature=_pick(b.temperature, s.temperature), top_p=_pick(b.top_p, s.top_p),
            top_k=_pick(b.top_k, s.top_k), min_p=_pick(b.min_p, s.min_p), typical_p=_pick(b.typical_p, s.typical_p),
            repeat_penalty=_pick(b.repeat_penalty, s.repeat_penalty),
            presence_penalty=_pick(b.presence_penalty, s.presence_penalty),
            frequency_penalty=_pick(b.frequency_penalty, s.frequency_penalty),
            seed=None if seed is None else seed + choice,  # n choices with one seed must still differ
            ignore_eos=b.ignore_eos or s.ignore_eos, json_schema=self.json_schema, json_object=self.json_object,
            grammar=self.grammar, stop=tuple(self.stops()), logprobs=self.logprobs,
            prompt_tokens=self.prompt_tokens, schema_param=self.schema_param, logit_bias=b.biases(),
            prompt_logprobs=self.prompt_logprobs, n_keep=b.n_keep,
            call_shape=self.tools.shape if self.tools is not None else None,
        )

    def stops(self) -> list[str]:
        return [*self.model.output.stopwords, *self.body.stops()]


def _pick(request_value, default):
    return default if request_value is None else request_value


class Admission:
    """Bounded queues: a request beyond its model's queue gets 429, beyond the server's limit 503,
    both with Retry-After, instead of piling up. Counts generations queued or running."""

    def __init__(self, max_per_model: int, max_total: int) -> None:
        self.max_per_model, self.max_total = max_per_model, max_total
        self.per_model: dict[str, int] = {}
        self.total = 0

    def enter(self, model: str, n: int) -> None:
        if self.total + n > self.max_total:
            raise Failure("the server is at capacity; retry shortly", code="server_busy", retry_after=2)
        if self.per_model.get(model, 0) + n > self.max_per_model:
            raise Failure(f"too many requests queued for model {model!r}; retry shortly",
                          code="rate_limit_exceeded", retry_after=1)
        self.per_model[model] = self.per_model.get(model, 0) + n
        self.total += n

    def leave(self, model: str, n: int) -> None:
        self.per_model[model] -= n
        self.total -= n


@dataclass
class Piece:
    """Text ready to send, with the logprob entries of the tokens that made it."""

    text: str
    logprobs: list[dict[str, Any]]
    echo: bool = False  # the echoed prompt's entries (its text is the job's echo): the choice's first piece


@dataclass
class ChoiceResult:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[dict[str, Any]] | None = None
    cached_tokens: int = 0
    prompt_logprobs: list[dict[str, Any]] | None = None  # echo with logprobs: the prompt's entries
    stop_sequence: str | None = None  # the request's or the YAML's stop that ended it (vLLM's stop_reason)


async def run_choice(request: Request, job: Job, index: int) -> AsyncIterator[Piece | ChoiceResult]:
    """Pieces of text (stop sequences removed), then one ChoiceResult. A ``Failure`` is raised."""
    state = server_state(request)
    pool = state.pool
    stops = StopFilter(job.stops())
    collected: list[str] = []
    entries: list[dict[str, Any]] = []  # logprobs of tokens whose text is not sent yet
    sent_entries: list[dict[str, Any]] = []
    prompt_tokens = cached_tokens = 0
    prompt_entries: list[dict[str, Any]] | None = None
    deltas = 0  # one per generated token (or a few bytes of one): the count when a stop cuts short

    metrics, model = state.metrics, job.model.name
    started = time.perf_counter()

    def emit(text: str) -> Piece | None:
        if not text:
            return None
        if not collected:
            metrics.ttft.labels(model).observe(time.perf_counter() - started)
        collected.append(text)
        piece = Piece(text, entries.copy())
        sent_entries.extend(entries)
        entries.clear()
        return piece

    def result(reason: str, completion_tokens: int) -> list[Piece | ChoiceResult]:
        out: list[Piece | ChoiceResult] = []
        if entries:  # the last tokens made no text of their own (part of a character): their entries still go
            out.append(Piece("", entries.copy()))
            sent_entries.extend(entries)
            entries.clear()
        final = ChoiceResult("".join(collected), reason, prompt_tokens, completion_tokens,
                             sent_entries if job.logprobs is not None else None, cached_tokens, prompt_entries,
                             stops.matched)
        metrics.prompt_tokens.labels(model).inc(prompt_tokens)
        metrics.completion_tokens.labels(model).inc(completion_tokens)
        return [*out, final]

    items = pool.generate(job.model.name, job.generation(index))
    ended = False  # the generation's end was read: closing after it is not the client leaving
    if job.model.output.reply_prefix:  # LocalAI sends it first (core/backend/llm.go l.240)
        yield Piece(job.model.output.reply_prefix, [])
    try:
        async for item in items:
            if isinstance(item, str):
                deltas += 1
                if piece := emit(stops.feed(item)):
                    yield piece
                if stops.stopped:
                    await items.aclose()  # tells the worker to stop generating
                    entries.clear()  # the tokens of the stop sequence itself
                    ended = True
                    for out in result(FinishReason.STOP.openai, deltas):
                        yield out
                    return
            elif isinstance(item, Logprob):
                entries.append(item.to_dict())
            elif isinstance(item, Started):
                prompt_tokens, cached_tokens = item.prompt_tokens, item.cached_tokens
            elif isinstance(item, PromptLogprobs):
                prompt_entries = echo_entries(item, job.echo)
                yield Piece("", prompt_entries, echo=True)
            elif isinstance(item, Finish):
                ended = True
                if piece := emit(stops.flush()):
                    yield piece
                for out in result(item.reason.openai, item.completion_tokens):
                    yield out
                return
    except (GeneratorExit, asyncio.CancelledError):  # the client went away (a stream dropped, a request abandoned)
        if not ended:
            metrics.abandoned.labels(model).inc()
            log.info("client went away: choice %d of %s cancelled after %d token(s)", index, model, deltas)
        raise


def usage(results: list[ChoiceResult], n: int = 1) -> dict[str, Any]:
    """Token counts of a request whose ``results`` are ``n`` choices per prompt, prompt after
    prompt: each prompt is counted once, every choice's completion."""
    firsts = results[::n]
    prompt = sum(r.prompt_tokens for r in firsts)
    completion = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": sum(r.cached_tokens for r in firsts)}}


def choice_streams(request: Request, jobs: list[Job]) -> list[AsyncIterator[Piece | ChoiceResult]]:
    """Every choice of a request, in OpenAI's index order: prompt ``i``'s choice ``j`` is
    ``i * n + j``."""
    return [run_choice(request, job, j) for job in jobs for j in range(job.body.n)]


async def collect(request: Request, jobs: list[Job]) -> list[ChoiceResult]:
    """All choices of every prompt, decoded at once (a model with parallel slots runs them
    side by side), in OpenAI's index order."""
    streams = choice_streams(request, jobs)
    job_of = [job for job in jobs for _ in range(job.body.n)]
    results: dict[int, ChoiceResult] = {}
    pieces: dict[int, list[str]] = {index: [] for index in range(len(streams))}
    async for index, item in merge(streams):
        if isinstance(item, ChoiceResult):
            results[index] = item
        else:
            pieces[index].append(item.text)
    for index, result in results.items():
        # The reply after stop sequences, then LocalAI's output rules (non-streamed replies only).
        result.text = finetune(job_of[index].prompt, "".join(pieces[index]), job_of[index].model.output)
    return [results[index] for index in range(len(streams))]


class _Raised:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


async def merge(streams: list[AsyncIterator[T]]) -> AsyncIterator[tuple[int, T]]:
    """The items of several streams as each arrives, with the index of its stream. The first
    error is raised here; on any exit every stream is stopped (closing a choice cancels its
    generation in the worker)."""
    if len(streams) == 1:  # the common case: no tasks and no queue between each token and its client
        try:
            async for item in streams[0]:
                yield 0, item
        finally:
            await streams[0].aclose()  # type: ignore[attr-defined]
        return
    arrived: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[T]) -> None:
        try:
            async for item in stream:
                await arrived.put((index, item))
            await arrived.put((index, _END))
        except Exception as exc:  # noqa: BLE001 - handed to the reader, who raises it
            await arrived.put((index, _Raised(exc)))

    tasks = [asyncio.create_task(pump(index, stream)) for index, stream in enumerate(streams)]
    try:
        running = len(tasks)
        while running:
            index, item = await arrived.get()
            if item is _END:
                running -= 1
            elif isinstance(item, _Raised):
                raise item.error
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream in streams:
            await stream.aclose()  # type: ignore[attr-defined]


def chat_logprobs(entries: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    return None if entries is None else {"content": entries, "refusal": None}


def echo_entries(scored: PromptLogprobs, echo: str) -> list[dict[str, Any]]:
    """The prompt's entries that spell the echoed text. The model read the prompt after its
    completion template ("{{.Input}}\n", "Q: {{.Input}}") and the tokenizer's BOS; the echo is
    the client's text: only the tokens inside it are kept."""
    entries = scored.to_dicts()
    spans, at = [], 0
    for entry in entries:
        spans.append((at, at + len(entry["token"])))
        at += len(entry["token"])
    begin = "".join(entry["token"] for entry in entries).find(echo)
    if begin < 0:  # the template's text merged with the echo's in a token: keep what the echo starts with
        begin = 0
    kept: list[dict[str, Any]] = []
    for entry, (first, last) in zip(entries, spans):
        if begin <= first and last <= begin + len(echo) and (kept or last > first):  # no leading BOS ("")
            kept.append(entry)
    return kept


def completion_logprobs(entries: list[dict[str, Any]] | None, offset: int = 0) -> dict[str, Any] | None:
    """The legacy completions shape: parallel lists, top alternatives as {token: logprob}."""
    if entries is None:
        return None
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry["token"])
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
            "text_offset": offsets}
