"""Hugging Face transformers: model directories on CPU or GPU, embeddings, OpenVINO classes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..context import ModelContext, Reader
from ..plan import ModelPlan, Transformers
from . import BackendSpec

OPENVINO_CLASSES = ("OVModelForCausalLM", "OVModelForFeatureExtraction")
MODEL_CLASSES = ("AutoModelForCausalLM", "AutoModel", *OPENVINO_CLASSES)


def read_section(r: Reader, options: dict, ctx: ModelContext) -> Transformers:
    return Transformers(
        model_class=r.get(("type",), "transformers.model_class", "AutoModelForCausalLM"),
        quantization=r.get(("quantization",), "transformers.quantization"),
        device=r.get(("main_gpu",), "transformers.device", None, "default (CUDA if present, else CPU)"),
        f16=r.get(("f16",), "transformers.f16", False),
        trust_remote_code=r.get(("trust_remote_code",), "transformers.trust_remote_code", False),
        low_vram=r.get(("low_vram",), "transformers.low_vram", False),
    )


def check(plan: ModelPlan, raw: Mapping[str, Any], ctx: ModelContext) -> None:
    if plan.transformers is None:
        return
    model_class = plan.transformers.model_class
    if model_class not in MODEL_CLASSES:
        ctx.error(("type",), f"{model_class!r} is not one of {', '.join(MODEL_CLASSES)}")
    elif model_class in OPENVINO_CLASSES and not ctx.probe.module_available("optimum.intel"):
        ctx.warning(("type",), f"{model_class} needs optimum-intel, which is not installed here: the model will "
                               "fail to load; install it with pip install 'modelyard[openvino]'")


SPEC = BackendSpec(
    name="transformers",
    summary="Hugging Face transformers: model directories, chat and embeddings",
    engine="modelyard.launcher.backends.transformers_backend:TransformersBackend",
    requirement=("transformers", "transformers"),
    order=20,
    section="transformers",
    read_section=read_section,
    check=check,
    quantizations=("bnb_8bit", "bnb_4bit", "xpu_8bit", "xpu_4bit"),
    model_directories=True,
    default_context=4096,
    token_prompts=True,
    logit_bias=True,
    prompt_logprobs=True,
)
