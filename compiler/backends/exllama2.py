"""ExLlamaV2: EXL2/GPTQ model directories on CUDA GPUs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..context import ModelContext, Reader
from ..plan import Exllama2, ModelPlan
from . import BackendSpec


def read_section(r: Reader, options: dict, ctx: ModelContext) -> Exllama2:
    split = r.get(("gpu_split",), "exllama2.gpu_split", ())
    if isinstance(split, str):
        split = tuple(float(part) for part in split.split(","))
    return Exllama2(gpu_split=tuple(split))


def check(plan: ModelPlan, raw: Mapping[str, Any], ctx: ModelContext) -> None:
    if plan.model and plan.model.lower().endswith(".gguf"):
        ctx.error(("parameters", "model"), "exllama2 loads EXL2/GPTQ model directories, not GGUF files; "
                                           "use backend: llama-cpp")


SPEC = BackendSpec(
    name="exllama2",
    summary="ExLlamaV2: EXL2/GPTQ model directories on CUDA GPUs",
    engine="modelyard.launcher.backends.exllamav2_backend:ExLlamaV2Backend",
    requirement=("exllamav2", "exllama2"),
    order=40,
    aliases=("exllamav2",),
    section="exllama2",
    read_section=read_section,
    check=check,
    structured_output=False,  # not wired to ExLlamaV2's filters yet
    model_directories=True,
    default_context=4096,
)
