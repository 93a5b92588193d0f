"""llama.cpp through llama-cpp-python: GGUF files, GBNF grammars, parallel slots, RPC offload."""

from __future__ import annotations

from typing import Any

from .. import machine
from ..context import ModelContext, Reader
from ..env_overrides import apply_env_overrides
from ..options import options_of
from ..plan import LlamaCpp, ModelPlan
from . import BackendSpec

_FLASH_ATTENTION = {"auto": "auto", "on": "on", "enabled": "on", "true": "on", "off": "off", "disabled": "off",
                    "false": "off"}


def read_section(r: Reader, options: dict, ctx: ModelContext) -> LlamaCpp:
    defaults = LlamaCpp()
    main_gpu = r.get(("main_gpu",), "llama_cpp.main_gpu", "0")
    try:
        main_gpu_index = int(main_gpu)
    except ValueError:
        ctx.error(("main_gpu",), f"llama-cpp takes a GPU index for main_gpu, got {main_gpu!r}")
        main_gpu_index = 0
    values: dict[str, Any] = dict(
        gpu_layers=r.get(("gpu_layers",), "llama_cpp.gpu_layers", None, "default (all layers where a GPU build is installed)"),
        mmap=r.get(("mmap",), "llama_cpp.mmap", True),
        mlock=r.get(("mmlock",), "llama_cpp.mlock", False),
        f16_kv=r.get(("f16",), "llama_cpp.f16_kv", True),
        main_gpu=main_gpu_index,
        batch=r.get(("parameters", "batch"), "llama_cpp.batch", defaults.batch) or defaults.batch,
        rope_freq_base=r.get(("parameters", "rope_freq_base"), "llama_cpp.rope_freq_base", 0.0),
        rope_freq_scale=r.get(("parameters", "rope_freq_scale"), "llama_cpp.rope_freq_scale", 0.0),
        flash_attention=_flash_attention(r.get(("flash_attention",), "llama_cpp.flash_attention", "auto"), ctx),
    )
    for spec in options_of("llama-cpp"):  # options: entries, each setting a field of the section
        parsed = options.get(spec.name)
        if parsed is None:
            ctx.origins[f"llama_cpp.{spec.plan_field}"] = "default"
            continue
        values[spec.plan_field] = r.set(f"llama_cpp.{spec.plan_field}", parsed.value,
                                        ctx.origin_of(("options", parsed.index)))
    if values.get("cache_ram_mib") == -1:
        values["cache_ram_mib"] = None
    # LLAMACPP_PARALLEL and friends fill what the YAML leaves unset.
    return apply_env_overrides(LlamaCpp(**values), "llama-cpp", options, ctx)


def default_parallel(cpus: int) -> int:
    """Slots for a model whose YAML and environment set no ``parallel``: LocalAI's 2/4/8 tiers,
    by the CPUs the worker may use. One slot would let a single client that stops reading a
    stream (and keeps the connection) hold the model until its generation ends."""
    return 2 if cpus <= 4 else 4 if cpus <= 16 else 8


def machine_notes(plan: ModelPlan) -> list[str]:
    assert plan.llama_cpp is not None
    if plan.llama_cpp.parallel is not None:
        return []
    cpus = machine.cpu_count()
    return [f"parallel unset -> {default_parallel(cpus)} slots ({cpus} CPUs)"]


def _flash_attention(value: Any, ctx: ModelContext) -> str:
    """LocalAI's ``flash_attention``: a boolean, or ``auto`` / ``on`` / ``off`` (llama.cpp's words)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    mode = _FLASH_ATTENTION.get(str(value).strip().lower())
    if mode is None:
        ctx.error(("flash_attention",), f"expected auto, on or off (or true / false), got {value!r}")
        return "auto"
    return mode


SPEC = BackendSpec(
    name="llama-cpp",
    summary="llama.cpp (llama-cpp-python): GGUF files on CPU or GPU",
    engine="modelyard.launcher.backends.llama_cpp:LlamaCppBackend",
    requirement=("llama_cpp", "llama-cpp"),
    order=10,
    aliases=("llama", "llama.cpp", "llamacpp"),
    section="llama_cpp",
    read_section=read_section,
    grammar=True,
    gguf=True,
    default_context=4096,
    token_prompts=True,
    logit_bias=True,
    prompt_logprobs=True,
    machine_notes=machine_notes,
)
