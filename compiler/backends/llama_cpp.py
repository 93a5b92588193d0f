"""llama.cpp through llama-cpp-python: GGUF files, GBNF grammars, parallel slots, RPC offload."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
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
        tensor_split=_tensor_split(r.get(("tensor_split",), "llama_cpp.tensor_split"), ctx),
        cache_type_k=_cache_type(r.get(("cache_type_k",), "llama_cpp.cache_type_k"), "cache_type_k", ctx),
        cache_type_v=_cache_type(r.get(("cache_type_v",), "llama_cpp.cache_type_v"), "cache_type_v", ctx),
        offload_kqv=not r.get(("no_kv_offloading",), "llama_cpp.offload_kqv", False),
        rope_scaling=_rope_scaling(r.get(("rope_scaling",), "llama_cpp.rope_scaling"), ctx),
        lora_adapter=_models_file(r.get(("lora_adapter",), "llama_cpp.lora_adapter"), "lora_adapter", ctx),
        lora_base=_models_file(r.get(("lora_base",), "llama_cpp.lora_base"), "lora_base", ctx),
        lora_scale=r.get(("lora_scale",), "llama_cpp.lora_scale", 1.0) or 1.0,  # LocalAI: 0 is unset
        kv_overrides=_kv_overrides(r.get(("overrides",), "llama_cpp.kv_overrides", ()), ctx),
        mirostat=_mirostat(r.get(("mirostat",), "llama_cpp.mirostat", 0), ctx),
        mirostat_tau=r.get(("mirostat_tau",), "llama_cpp.mirostat_tau", defaults.mirostat_tau),
        mirostat_eta=r.get(("mirostat_eta",), "llama_cpp.mirostat_eta", defaults.mirostat_eta),
    )
    for key in ("yarn_ext_factor", "yarn_attn_factor", "yarn_beta_fast", "yarn_beta_slow"):
        # LocalAI passes each only when it is not 0 (grpc-server.cpp l.1334-1347).
        values[key] = r.get((key,), f"llama_cpp.{key}") or None
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


# llama.cpp's --cache-type-k/-v names (common/arg.cpp kv_cache_types).
CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")


def _tensor_split(value: Any, ctx: ModelContext) -> tuple[float, ...]:
    """LocalAI's string (llama.cpp's --tensor-split): shares separated by ',' or '/'."""
    if value is None or str(value).strip() == "":
        return ()
    try:
        shares = tuple(float(part) for part in str(value).replace("/", ",").split(","))
    except ValueError:
        ctx.error(("tensor_split",), f"expected GPU shares such as '3,1', got {value!r}")
        return ()
    if any(share < 0 for share in shares) or not any(shares):
        ctx.error(("tensor_split",), f"the shares must be positive, got {value!r}")
        return ()
    return shares


def _cache_type(value: Any, key: str, ctx: ModelContext) -> str | None:
    if value is None or value == "":
        return None
    kind = str(value).strip().lower()
    if kind not in CACHE_TYPES:
        ctx.error((key,), f"{value!r} is not a llama.cpp KV cache type: {', '.join(CACHE_TYPES)}")
        return None
    return kind


def _rope_scaling(value: Any, ctx: ModelContext) -> str | None:
    if value is None or value == "":
        return None
    kind = str(value).strip().lower()
    if kind not in ("none", "linear", "yarn"):
        ctx.error(("rope_scaling",), f"expected none, linear or yarn, got {value!r}")
        return None
    return kind


def _mirostat(value: Any, ctx: ModelContext) -> int:
    if value not in (0, 1, 2):
        ctx.error(("mirostat",), f"expected 0 (off), 1 or 2 (mirostat version), got {value!r}")
        return 0
    return value


def _models_file(value: Any, key: str, ctx: ModelContext) -> str | None:
    """A file named relative to the models directory, as LocalAI resolves ``lora_adapter`` and
    ``lora_base``; never outside it."""
    if not value:
        return None
    relative = posixpath.normpath(str(value).replace("\\", "/"))
    if posixpath.isabs(relative) or relative == ".." or relative.startswith("../"):
        ctx.error((key,), f"{value!r} must be a file inside the models directory {ctx.models_dir!r}")
        return None
    path = posixpath.join(ctx.models_dir, relative)
    if ctx.check_files and not ctx.probe.is_file(path):
        ctx.error((key,), f"file {value!r} not found in the models directory {ctx.models_dir!r}")
        return None
    return path


_OVERRIDE_TYPES: dict[str, Callable[[str], bool | int | float | str]] = {
    "int": int, "float": float, "str": str,
    "bool": lambda text: {"true": True, "false": False}[text.strip().lower()],
}


def _kv_overrides(entries: Any, ctx: ModelContext) -> dict[str, bool | int | float | str]:
    """``overrides: ["KEY=TYPE:VALUE", ...]``, llama.cpp's --override-kv (TYPE: int, float, bool, str)."""
    found: dict[str, bool | int | float | str] = {}
    for index, entry in enumerate(entries or ()):
        key, _, typed = str(entry).partition("=")
        kind, _, text = typed.partition(":")
        parse = _OVERRIDE_TYPES.get(kind.strip())
        try:
            if not key.strip() or parse is None:
                raise ValueError
            found[key.strip()] = parse(text)
        except (ValueError, KeyError):
            ctx.error(("overrides", index), f"expected KEY=TYPE:VALUE with TYPE int, float, bool or str, got {entry!r}")
    return found


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
    own_keys=("tensor_split", "no_kv_offloading", "cache_type_k", "cache_type_v", "rope_scaling", "yarn_ext_factor",
              "yarn_attn_factor", "yarn_beta_fast", "yarn_beta_slow", "lora_adapter", "lora_base", "lora_scale",
              "overrides", "mirostat", "mirostat_tau", "mirostat_eta"),
)
