"""The typed items between backend and HTTP layer survive the socket unchanged; failures carry
domain codes, and errors.py alone gives them HTTP statuses."""

from __future__ import annotations

import json
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelyard.launcher.backends.base import GenerationRequest, GeneratorBackend, RequestError
from modelyard.launcher.errors import STATUS_OF_FAILURE, OpenAIError
from modelyard.launcher.messages import (
    Embeddings,
    Failure,
    Finish,
    FinishReason,
    Logprob,
    PromptLogprobs,
    Started,
    from_wire,
    to_wire,
)

ITEMS = [
    Started(12, cached_tokens=4),
    PromptLogprobs(("The", [84, 104, 101]), [Logprob(" sea", -2.0, [32, 115, 101, 97], [(" sea", -2.0, [32])])]),
    Logprob("Hi", -0.25, [72, 105], [("Hi", -0.25, [72, 105]), ("Hello", -1.5, [72])]),
    "Hi",
    Finish(FinishReason.LENGTH, 12, 3),
    Embeddings([[0.5, -0.5]], 7),
]


@pytest.mark.parametrize("item", ITEMS, ids=lambda item: type(item).__name__)
def test_every_item_crosses_the_socket_unchanged(item) -> None:
    wire = json.loads(json.dumps(to_wire("r1", item)))  # what ipc.encode writes and read_message reads
    assert wire["id"] == "r1"
    assert from_wire(wire) == item


def test_a_failure_crosses_without_an_http_status() -> None:
    wire = to_wire("r2", RequestError("too long", code="context_length_exceeded", param="messages"))
    assert wire == {"type": "error", "id": "r2", "code": "context_length_exceeded", "message": "too long",
                    "param": "messages", "retry_after": None}
    back = from_wire(wire)
    assert isinstance(back, Failure) and (back.code, back.message, back.param) == ("context_length_exceeded",
                                                                                  "too long", "messages")


def test_a_failure_that_may_pass_later_keeps_its_retry_after() -> None:
    back = from_wire(json.loads(json.dumps(to_wire("r2", Failure("engine died", code="worker_crashed",
                                                                      retry_after=1)))))
    assert isinstance(back, Failure) and (back.code, back.retry_after) == ("worker_crashed", 1)


def test_unknown_message_types_are_ignored() -> None:
    assert from_wire({"type": "telemetry", "id": "r3"}) is None


def test_finish_reasons_are_an_enum_and_a_wrong_one_fails_in_the_backend() -> None:
    assert Finish("stop", 1, 1).reason is FinishReason.STOP
    assert [r.openai for r in FinishReason] == ["stop", "length", "stop"]
    with pytest.raises(ValueError):
        Finish("eos", 1, 1)


@pytest.mark.parametrize(("code", "status"), [
    ("context_length_exceeded", 400), (None, 400), ("backend_error", 500), ("worker_crashed", 503),
    ("model_unavailable", 503), ("server_busy", 503), ("rate_limit_exceeded", 429)])
def test_one_table_maps_failures_to_statuses(code, status) -> None:
    error = OpenAIError.from_failure(Failure("x", code=code, retry_after=3))
    assert (error.status, error.code, error.retry_after) == (status, code, 3)
    assert error.body()["error"]["type"] == ("invalid_request_error" if status == 400 else
                                             "rate_limit_exceeded" if status == 429 else "server_error")
    assert set(STATUS_OF_FAILURE) >= {"backend_error", "worker_crashed", "model_unavailable"}


class _Engine(GeneratorBackend):
    def __init__(self, items, error=None) -> None:
        self.items, self.error = items, error

    def generate(self, request, cancelled):
        yield from self.items
        if self.error is not None:
            raise self.error


def _run(engine) -> list:
    out: list = []

    class Sink:
        def put(self, item) -> None:
            out.append(item)

    request = GenerationRequest("p", 4, 0.0, 1.0, 0, 0.0, 1.0, 1.0, 0.0, 0.0, None)
    engine.start(request, threading.Event(), Sink())
    return out


def test_a_generator_backend_always_ends_its_request_once() -> None:
    assert _run(_Engine([Started(1), "a", Finish("stop", 1, 1)]))[-1] == Finish("stop", 1, 1)
    assert _run(_Engine([Started(1), "a"]))[-1] == Finish("cancelled", 0, 0)  # stopped early
    failed = _run(_Engine([Started(1)], error=KeyError("boom")))
    assert isinstance(failed[-1], KeyError)  # the worker's sink turns it into a backend_error Failure


def test_the_workers_sink_sends_a_backend_bug_as_a_backend_error_and_ends_the_request() -> None:
    from modelyard.launcher.worker import RequestSink

    sent, ended = [], []

    class Channel:
        def send(self, message) -> None:
            sent.append(message)

    sink = RequestSink(Channel(), "r9", on_end=lambda: ended.append(True))  # type: ignore[arg-type]
    sink.put("tok")
    assert ended == []
    sink.put(KeyError("boom"))
    assert sent == [{"type": "delta", "id": "r9", "text": "tok"},
                    {"type": "error", "id": "r9", "code": "backend_error",
                     "message": "the backend failed: KeyError: 'boom'", "param": None, "retry_after": None}]
    assert ended == [True]
    assert OpenAIError.from_failure(from_wire(sent[-1])).status == 500


def test_one_context_fit_check_with_one_wording_for_every_backend() -> None:
    """A max_tokens past the context is cut to the room left, as llama.cpp's server and LocalAI do
    (``grpc-server.cpp`` l.233: ``n_predict`` -1 or the request's, the slot stops when the context
    is full); only a prompt that does not fit is refused."""
    from modelyard.launcher.backends.base import fit_context

    assert fit_context(10, 5, 100) == 5
    assert fit_context(10, None, 100) == 90  # no max_tokens: until the context is full
    assert fit_context(90, 20, 100) == 10  # larger than the room left: the room left, then `length`
    assert fit_context(90, 20, 100, may_outgrow=True) == 20  # llama.cpp's context shift
    assert fit_context(90, None, 100, may_outgrow=True) == 100  # one context's worth
    with pytest.raises(RequestError) as prompt:
        fit_context(100, None, 100)
    assert (prompt.value.code, prompt.value.param, prompt.value.message) == (
        "context_length_exceeded", "messages", "the prompt is 100 tokens, which does not fit the model's 100-token context")


@given(st.text("ab<", max_size=30), st.lists(st.text("ab<", min_size=1, max_size=6), min_size=1, max_size=4))
def test_stop_filter_holds_back_exactly_the_longest_partial_stop(buffer, stops) -> None:
    from modelyard.launcher.output import StopFilter

    stop_filter = StopFilter(stops)
    stop_filter.buffer = buffer
    for stop in stops:
        brute = next((size for size in range(min(len(stop) - 1, len(buffer)), 0, -1)
                      if buffer.endswith(stop[:size])), 0)
        assert stop_filter._partial(stop) == brute
