"""What flows between a backend and the HTTP layer, typed end to end, and its wire form.

A backend's decode thread produces ``Item``s for one generation: ``Started``, then text (``str``,
one token's or the bytes completing a character, each preceded by a ``Logprob`` when asked), then
one ``Finish``; or it fails with a ``Failure``. The worker sends them over the server's Unix
socket as newline-delimited JSON (``to_wire``), the pool turns them back into the same objects
(``from_wire``) and ``generation.py`` reads them. Nothing here knows HTTP: a ``Failure`` carries
a domain ``code`` and ``errors.py`` alone maps codes to statuses.

Protocol version 2. Server → worker: ``generate`` {id, request}, ``embed`` {id, inputs},
``tokenize`` {id, text | tokens, add_special, pieces}, ``cancel`` {id}, ``shutdown``. Worker → server:
``ready`` {protocol, n_ctx, pid}, ``load_failed`` {message}, then per request ``started``,
``prompt_logprobs`` (echo with logprobs), ``logprob``, ``delta`` {text}, ``done``, ``embeddings``,
``tokens`` {tokens, text, pieces}, ``error`` {code, message, param, retry_after}. Unknown types are
ignored (forward compatible).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

PROTOCOL_VERSION = 2


class FinishReason(str, enum.Enum):
    STOP = "stop"  # end of sequence, or a stop sequence matched
    LENGTH = "length"  # max_tokens or the context ran out
    CANCELLED = "cancelled"  # the server cancelled it (the client left, a stop sequence matched)

    @property
    def openai(self) -> str:
        """OpenAI's ``finish_reason``: a cancelled generation was stopped."""
        return "length" if self is FinishReason.LENGTH else "stop"


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
        """OpenAI's ``logprobs.content`` entry."""
        return {"token": self.token, "logprob": self.logprob, "bytes": self.bytes,
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": b} for t, lp, b in self.top]}


@dataclass(frozen=True)
class PromptLogprobs:
    """How the model scores the prompt's own tokens (a completion with ``echo`` and ``logprobs``),
    sent once, after ``Started``: ``first`` is the first token's text and bytes (nothing predicts
    it), ``tokens[i]`` the next token's logprob given the ones before it."""

    first: tuple[str, list[int]]
    tokens: list[Logprob]

    def to_dicts(self) -> list[dict[str, Any]]:
        """OpenAI's entries, the first with a null logprob."""
        token, raw = self.first
        return [{"token": token, "logprob": None, "bytes": raw, "top_logprobs": []},
                *(entry.to_dict() for entry in self.tokens)]


@dataclass(frozen=True)
class Finish:
    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int

    def __post_init__(self) -> None:  # backends may say "stop"; an unknown reason fails here, in the backend
        object.__setattr__(self, "reason", FinishReason(self.reason))


@dataclass(frozen=True)
class Embeddings:
    vectors: list[list[float]]
    tokens: int  # prompt tokens, all inputs together


@dataclass(frozen=True)
class Tokens:
    """A tokenize or detokenize answer: the ids and the text they spell."""

    tokens: list[int]
    text: str
    pieces: list[str] | None = None  # each token's own text, when asked


class Failure(Exception):
    """A request that cannot be served, in domain terms: ``code`` says what went wrong
    (``context_length_exceeded``, ``unsupported``, ``worker_crashed``, ``backend_error``, ...);
    ``errors.py`` maps it to an HTTP status and OpenAI error type. ``param`` names the request
    field at fault; ``retry_after`` (seconds) is set when trying again later can succeed."""

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message, self.code, self.param, self.retry_after = message, code, param, retry_after


Item = str | Started | PromptLogprobs | Logprob | Finish  # what one generation produces, in that order

_TAGS: dict[type, str] = {Started: "started", Logprob: "logprob", Finish: "done", Embeddings: "embeddings",
                          Tokens: "tokens"}


def to_wire(request_id: str, item: Item | Embeddings | Tokens | Failure) -> dict[str, Any]:
    """One item of request ``request_id`` as a protocol message."""
    if isinstance(item, str):
        return {"type": "delta", "id": request_id, "text": item}
    if isinstance(item, Failure):
        return {"type": "error", "id": request_id, "code": item.code, "message": item.message, "param": item.param,
                "retry_after": item.retry_after}
    if isinstance(item, Logprob):
        return {"type": "logprob", "id": request_id, "token": item.token, "logprob": item.logprob,
                "bytes": item.bytes, "top": item.top}
    if isinstance(item, PromptLogprobs):
        return {"type": "prompt_logprobs", "id": request_id, "first": list(item.first),
                "tokens": [to_wire(request_id, entry) for entry in item.tokens]}
    if isinstance(item, Finish):
        return {"type": "done", "id": request_id, "reason": item.reason.value, "prompt_tokens": item.prompt_tokens,
                "completion_tokens": item.completion_tokens}
    return {"type": _TAGS[type(item)], "id": request_id, **vars(item)}


def from_wire(message: dict[str, Any]) -> Item | Embeddings | Tokens | Failure | None:
    """A request's message as the object it was made from; None for a type this version does not know."""
    kind = message.get("type")
    if kind == "delta":
        return message["text"]
    if kind == "error":
        return Failure(message["message"], code=message.get("code"), param=message.get("param"),
                       retry_after=message.get("retry_after"))
    if kind == "logprob":
        return Logprob(message["token"], message["logprob"], message["bytes"],
                       [(t, lp, b) for t, lp, b in message["top"]])
    if kind == "prompt_logprobs":
        token, raw = message["first"]
        return PromptLogprobs((token, raw), [from_wire(entry) for entry in message["tokens"]])  # type: ignore[misc]
    fields = {k: v for k, v in message.items() if k not in ("type", "id")}
    if kind == "started":
        return Started(**fields)
    if kind == "done":
        return Finish(**fields)
    if kind == "embeddings":
        return Embeddings(**fields)
    if kind == "tokens":
        return Tokens(**fields)
    return None
