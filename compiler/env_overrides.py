"""Environment fallbacks for llama-cpp options: ``LLAMACPP_PARALLEL``, ``LLAMACPP_GRPC_SERVERS``.

They fill a value only where the YAML leaves it unset. An explicit ``parallel: 1`` in the YAML
wins over the environment: LocalAI lets the environment override it, because it cannot tell
"unset" from "set to the default"; we can, since we read the options list itself.
"""

from __future__ import annotations

from .context import ModelContext
from .options import OptionValueError, parse_option_value
from .plan import LlamaCpp

# env var → (option name, plan field)
ENV_FALLBACKS = {
    "LLAMACPP_PARALLEL": ("parallel", "parallel"),
    "LLAMACPP_GRPC_SERVERS": ("grpc_servers", "grpc_servers"),
}


def apply_env_overrides(section: LlamaCpp, options: dict, ctx: ModelContext) -> LlamaCpp:
    updates = {}
    for variable, (option, field_name) in sorted(ENV_FALLBACKS.items()):
        raw = ctx.env.get(variable)
        if raw is None or raw.strip() == "" or option in options:
            continue
        try:
            updates[field_name] = parse_option_value(option, raw)
        except OptionValueError as exc:
            ctx.error(("options",), f"environment variable {variable}: {exc}")
            continue
        ctx.origins[f"llama_cpp.{field_name}"] = f"env {variable}"
    return section.model_copy(update=updates) if updates else section
