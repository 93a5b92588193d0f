"""Rules that depend on the chosen backend: the shared ones (read from each backend's spec),
then the backend's own (``BackendSpec.check``), then whether it is installed here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import backends
from .context import ModelContext
from .plan import ModelPlan


def check_backend_rules(plan: ModelPlan, raw: Mapping[str, Any], ctx: ModelContext) -> None:
    spec = backends.get(plan.backend)
    quantization = raw.get("quantization")
    if quantization is not None:
        allowed = spec.quantizations
        if allowed is None:
            ctx.error(("quantization",), f"{plan.backend} takes no 'quantization' (the GGUF/EXL2 file is already "
                                         "quantized)")
        elif quantization not in allowed:
            hint = " (bitsandbytes modes are for transformers; vLLM calls it 'bitsandbytes')" \
                if quantization.startswith("bnb") else ""
            ctx.error(("quantization",), f"{quantization!r} is not a {plan.backend} quantization: "
                                         f"{', '.join(allowed)}{hint}")
    if plan.grammar is not None and not spec.grammar:
        ctx.error(("grammar",), f"GBNF grammars are llama.cpp's: {plan.backend} models take JSON Schemas "
                                "through response_format instead")
    for other in backends.all_backends():
        for key in other.own_keys:
            if other is not spec and raw.get(key) is not None and key not in spec.own_keys:
                ctx.warning((key,), f"applies to {other.name} models; {plan.backend} does not read it", at_key=True)
    spec.check(plan, raw, ctx)
    if spec.model_directories and not plan.model_is_local and plan.templates.use_tokenizer_template \
            and plan.templates.tokenizer_template is None:
        ctx.warning(("template", "use_tokenizer_template"),
                    f"{plan.model!r} is a Hugging Face hub id: its chat template cannot be read before it is "
                    "downloaded, so chat requests will be refused; download the model into the models directory, "
                    "or set template.chat_message")
    missing = spec.missing(ctx.probe.module_available)
    if missing:
        ctx.warning(("backend",), f"{missing}: `modelyard launch` will refuse it; install it with {spec.install_hint}")
