"""The backend contract: what an engine implements, and the request it receives (plain data,
across the IPC channel). The items it produces are ``launcher/messages.py``'s."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from modelyard.compiler.plan import ModelPlan

from ..gbnf import CallGrammarShape
from ..messages import Failure, Finish, FinishReason, Item, Logprob, PromptLogprobs, Started

__all__ = ["Backend", "EngineDead", "Failure", "Finish", "FinishReason", "GenerationRequest", "GeneratorBackend", "Item",
           "Logprob", "PromptLogprobs", "RequestError", "Sink", "Started", "check_token_ids", "drain", "fit_context",
           "generate_with"]

log = logging.getLogger(__name__)


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
    prompt_logprobs: int | None = None  # None: off; N: also score the prompt's tokens (echo), N alternatives each
    prompt_tokens: tuple[int, ...] | None = None  # a token-array prompt, sent as is (then ``prompt`` is "")
    logit_bias: tuple[tuple[int, float], ...] | None = None  # (token id, bias added to its logit), ids checked
    schema_param: str = "response_format"  # the request field json_schema came from ("tools": a forced call)
    n_keep: int | None = None  # prompt tokens a context shift keeps (-1: all); None: the model's
    call_shape: CallGrammarShape | None = None  # LocalAI's prefix and mixed text around json_schema (GBNF)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationRequest:
        tokens, biases, shape = data.get("prompt_tokens"), data.get("logit_bias"), data.get("call_shape")
        return cls(**{**data, "stop": tuple(data.get("stop", ())),
                      "call_shape": None if shape is None else CallGrammarShape(**shape),
                      "prompt_tokens": None if tokens is None else tuple(tokens),
                      "logit_bias": None if biases is None else tuple((int(t), float(b)) for t, b in biases)})


def check_token_ids(tokens: tuple[int, ...], vocabulary: int, param: str = "prompt") -> None:
    """A token-array prompt's ids must name tokens of the model (an id past the vocabulary would
    index past llama.cpp's and torch's tables)."""
    bad = next((t for t in tokens if not 0 <= t < vocabulary), None)
    if bad is not None:
        raise RequestError(f"{param} holds token id {bad}, outside the model's vocabulary of {vocabulary}",
                           param=param)


class RequestError(Failure):
    """A request this backend refuses (the prompt does not fit, a setting it cannot honour): the
    client's fault unless ``code`` says otherwise (``backend_error``)."""


class EngineDead(Failure):
    """The engine can serve nothing more (vLLM's engine process died): this request fails with
    it, and the worker exits after reporting it, so the pool starts a fresh one."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="worker_crashed", retry_after=1)


def fit_context(prompt_tokens: int, max_tokens: int | None, context: int, *, may_outgrow: bool = False) -> int:
    """How many tokens the generation may make: ``max_tokens``, but never past the end of
    ``context`` (llama.cpp's server and LocalAI generate until the context is full and finish
    with ``length``; they do not refuse a ``max_tokens`` larger than the room left), and the
    room left when there is no ``max_tokens``. Only a prompt that does not fit is refused
    (``context_length_exceeded``), in one wording for every backend. A generation that
    ``may_outgrow`` the context (llama.cpp's context shift) gets its ``max_tokens`` whole, or
    one context's worth without one."""
    room = context - prompt_tokens
    if room <= 0:
        raise RequestError(f"the prompt is {prompt_tokens} tokens, which does not fit the model's {context}-token "
                           "context", code="context_length_exceeded", param="messages")
    if may_outgrow:
        return context if max_tokens is None else max_tokens
    return room if max_tokens is None else min(max_tokens, room)


class Sink(Protocol):
    """Where a backend delivers one generation's items (``queue.Queue`` is one): the worker's
    sink sends each straight to the server, with no thread hop per token. The last item is a
    ``Finish`` or a ``Failure``; nothing follows it."""

    def put(self, item: Item | Exception) -> None: ...


class Backend(Protocol):
    """An engine, loaded once per worker process from a ``ModelPlan``.

    ``start`` checks the request (raising ``RequestError``) and delivers its items into ``sink``:
    push backends (llama-cpp, transformers) queue it for decode threads of their own and return
    at once; ``GeneratorBackend`` runs a blocking ``generate`` on the calling thread. The worker
    calls ``start`` from ``concurrency`` threads, so that many generations run at once.
    """

    concurrency: int

    def __init__(self, model: ModelPlan) -> None: ...

    @property
    def context_size(self) -> int: ...

    def start(self, request: GenerationRequest, cancelled: threading.Event, sink: Sink) -> None: ...

    def embed(self, inputs: list[str | list[int]]) -> tuple[list[list[float]], int]:
        """One vector per input and the tokens read (raise ``RequestError`` if it embeds nothing)."""
        ...

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        """The token ids of ``text`` (with the tokenizer's BOS and the like when ``add_special``)."""
        ...

    def detokenize(self, tokens: list[int]) -> str:
        """The text of ``tokens`` (ids checked against the vocabulary: ``RequestError``)."""
        ...

    def close(self) -> None:
        """Stop the engine and whatever it started (threads, processes) before the worker exits."""
        ...


class GeneratorBackend:
    """Base for an engine written as a blocking generator (vLLM, exllamav2, tests' fake):
    ``generate`` yields ``Started``, text deltas (each preceded by a ``Logprob`` when asked), then
    one ``Finish``, stopping early when ``cancelled`` is set; ``start`` feeds them to the sink."""

    concurrency = 1

    def close(self) -> None:
        return None

    def generate(self, request: GenerationRequest, cancelled: threading.Event) -> Iterator[Item]:
        raise NotImplementedError

    def start(self, request: GenerationRequest, cancelled: threading.Event, sink: Sink) -> None:
        finished = False
        try:
            for item in self.generate(request, cancelled):
                sink.put(item)
                finished = isinstance(item, Finish)
        except Exception as exc:  # the request's error; a bug fails this request, not the worker
            if not isinstance(exc, Failure):
                log.exception("generation failed")
            sink.put(exc)
            return
        if not finished:  # stopped (cancelled) before its Finish: the request still ends once
            sink.put(Finish(FinishReason.CANCELLED, 0, 0))


def drain(out: queue.Queue) -> Iterator[Item]:
    """Items from a sink that is a queue, up to and including ``Finish``; an exception put on
    the queue is raised here, in the reader's thread."""
    while True:
        item = out.get()
        if isinstance(item, Exception):
            raise item
        yield item
        if isinstance(item, Finish):
            return


def generate_with(start, request: GenerationRequest, cancelled: threading.Event) -> Iterator[Item]:
    """A push backend's items as a blocking generator (tests, benchmarks): ``start`` delivers
    into a queue, drained here."""
    out: queue.Queue = queue.Queue()
    start(request, cancelled, out)
    yield from drain(out)
