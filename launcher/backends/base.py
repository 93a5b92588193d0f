"""What a backend implements, and the request it receives (plain data, across the IPC channel)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from modelyard.compiler.plan import ModelPlan


@dataclass(frozen=True)
class GenerationRequest:
    """One completion to run: a rendered prompt and fully resolved sampling settings."""

    prompt: str
    max_tokens: int | None
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    typical_p: float
    repeat_penalty: float
    presence_penalty: float
    frequency_penalty: float
    seed: int | None
    ignore_eos: bool = False
    json_schema: dict[str, Any] | None = None  # response_format json_schema
    json_object: bool = False  # response_format json_object
    grammar: str | None = None  # GBNF: the request's or the model's (LocalAI's `grammar`)
    stop: tuple[str, ...] = field(default=())  # informational: stops are enforced by the server
    logprobs: int | None = None  # None: off; N: the chosen token's logprob and the N most likely

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationRequest:
        return cls(**{**data, "stop": tuple(data.get("stop", ()))})


@dataclass(frozen=True)
class Started:
    """Sent once the prompt is tokenized and accepted."""

    prompt_tokens: int
    cached_tokens: int = 0  # prompt tokens reused from a cached prefix


@dataclass(frozen=True)
class Logprob:
    """The log-probability of the next generated token, sent just before its text."""

    token: str
    logprob: float
    bytes: list[int]
    top: list[tuple[str, float, list[int]]]  # (token, logprob, bytes), most likely first

    def to_dict(self) -> dict[str, Any]:
        return {"token": self.token, "logprob": self.logprob, "bytes": self.bytes,
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": b} for t, lp, b in self.top]}


@dataclass(frozen=True)
class Finish:
    reason: str  # "stop" (end of sequence) or "length"
    prompt_tokens: int
    completion_tokens: int


Item = str | Started | Logprob | Finish  # what one generation produces, in that order


class Sink(Protocol):
    """Where a decode thread delivers one generation's items (``queue.Queue`` is one): the
    worker's sink sends each straight to the server, with no thread hop per token."""

    def put(self, item: Item | Exception) -> None: ...


def drain(out: queue.Queue) -> Iterator[Item]:
    """What ``Backend.generate`` yields from a decode thread's queue: items up to and including
    ``Finish``; an exception put on the queue is raised here, in the request's thread."""
    while True:
        item = out.get()
        if isinstance(item, Exception):
            raise item
        yield item
        if isinstance(item, Finish):
            return


class RequestError(Exception):
    """A problem with one request (not the backend): sent to the client as an OpenAI error."""

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.message, self.code, self.param, self.status = message, code, param, status


def generate_with(start, request: GenerationRequest, cancelled: threading.Event) -> Iterator[Item]:
    """``Backend.generate`` for a backend that decodes on threads of its own: its ``start``
    delivers into a queue, drained here."""
    out: queue.Queue = queue.Queue()
    start(request, cancelled, out)
    yield from drain(out)


class Backend(Protocol):
    """Loaded once per worker process from a ``ModelPlan``; serves ``concurrency`` (an optional
    attribute, default 1) generations at once.

    A backend that decodes on threads of its own may also offer ``start(request, cancelled,
    sink)``: it checks the request (raising ``RequestError``), queues it and returns; the decode
    thread then puts the items ``generate`` would yield, or an exception, into ``sink``.
    """

    def __init__(self, model: ModelPlan) -> None: ...

    @property
    def context_size(self) -> int: ...

    def generate(self, request: GenerationRequest, cancelled: threading.Event) -> Iterator[str | Started | Logprob | Finish]:
        """Yield ``Started``, text deltas (each preceded by a ``Logprob`` when asked), then one
        ``Finish``; stop early when ``cancelled`` is set."""
        ...
