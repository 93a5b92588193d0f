"""Rules that depend on the chosen backend: what fits it, and whether it is installed here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .plan import ModelPlan
from .sources import BACKEND_REQUIREMENTS

if TYPE_CHECKING:
    from .normalize import ModelContext

TRANSFORMERS_QUANTIZATION = ("bnb_8bit", "bnb_4bit", "xpu_8bit", "xpu_4bit")
VLLM_QUANTIZATION = (
    "awq", "awq_marlin", "gptq", "gptq_marlin", "gptq_marlin_24", "marlin", "fp8", "fbgemm_fp8",
    "compressed-tensors", "bitsandbytes", "gguf", "squeezellm", "aqlm", "deepspeedfp", "experts_int8",
    "modelopt", "ptpc_fp8", "qqq", "hqq", "tpu_int8", "ipex", "quark", "moe_wna16", "torchao", "mxfp4",
)
# vLLM engine arguments the YAML has keys of its own for: engine_args must not repeat them.
VLLM_OWN_KEYS = frozenset({
    "model", "quantization", "dtype", "gpu_memory_utilization", "tensor_parallel_size", "pipeline_parallel_size",
    "distributed_executor_backend", "max_model_len", "enforce_eager", "swap_space", "load_format",
    "disable_log_stats", "trust_remote_code",
})
OPENVINO_CLASSES = ("OVModelForCausalLM", "OVModelForFeatureExtraction")
TRANSFORMERS_CLASSES = ("AutoModelForCausalLM", "AutoModel", *OPENVINO_CLASSES)


def check_backend_rules(plan: ModelPlan, raw: Mapping[str, Any], ctx: ModelContext) -> None:
    quantization = raw.get("quantization")
    if quantization is not None:
        allowed = {"transformers": TRANSFORMERS_QUANTIZATION, "vllm": VLLM_QUANTIZATION}.get(plan.backend)
        if allowed is None:
            ctx.error(("quantization",), f"{plan.backend} takes no 'quantization' (the GGUF/EXL2 file is already "
                                         "quantized)")
        elif quantization not in allowed:
            hint = " (bitsandbytes modes are for transformers; vLLM calls it 'bitsandbytes')" \
                if quantization.startswith("bnb") else ""
            ctx.error(("quantization",), f"{quantization!r} is not a {plan.backend} quantization: "
                                         f"{', '.join(allowed)}{hint}")
    if plan.grammar is not None and plan.backend != "llama-cpp":
        ctx.error(("grammar",), f"GBNF grammars are llama.cpp's: {plan.backend} models take JSON Schemas "
                                "through response_format instead")
    if plan.backend == "vllm" and plan.vllm is not None:
        for key in sorted(set(plan.vllm.engine_args) & VLLM_OWN_KEYS):
            where = "parameters.model" if key == "model" else key
            ctx.error(("engine_args", key), f"set {key!r} with its own key ({where}), not through engine_args")
    if plan.backend == "exllama2" and plan.model and plan.model.lower().endswith(".gguf"):
        ctx.error(("parameters", "model"), "exllama2 loads EXL2/GPTQ model directories, not GGUF files; "
                                           "use backend: llama-cpp")
    if plan.backend == "transformers" and plan.transformers is not None:
        model_class = plan.transformers.model_class
        if model_class not in TRANSFORMERS_CLASSES:
            ctx.error(("type",), f"{model_class!r} is not one of {', '.join(TRANSFORMERS_CLASSES)}")
        elif model_class in OPENVINO_CLASSES and not ctx.probe.module_available("optimum.intel"):
            ctx.warning(("type",), f"{model_class} needs optimum-intel, which is not installed here: the model will "
                                   "fail to load; install it with pip install 'modelyard[openvino]'")
    if plan.backend in ("transformers", "vllm", "exllama2") and not plan.model_is_local \
            and plan.templates.use_tokenizer_template \
            and plan.templates.tokenizer_template is None:
        ctx.warning(("template", "use_tokenizer_template"),
                    f"{plan.model!r} is a Hugging Face hub id: its chat template cannot be read before it is "
                    "downloaded, so chat requests will be refused; download the model into the models directory, "
                    "or set template.chat_message")
    if not ctx.probe.backend_available(plan.backend):
        module, extra = BACKEND_REQUIREMENTS[plan.backend]
        ctx.warning(("backend",), f"the {plan.backend} backend is not installed here (no '{module}' module): "
                                  f"`modelyard launch` will refuse it; install it with "
                                  f"pip install 'modelyard[{extra}]'")
