"""Environment fallbacks for options (``OptionSpec.env``): ``LLAMACPP_PARALLEL``,
``LLAMACPP_GRPC_SERVERS``.

They fill a value only where the YAML leaves it unset. An explicit ``parallel: 1`` in the YAML
wins over the environment: LocalAI lets the environment override it, because it cannot tell
"unset" from "set to the default"; we can, since we read the options list itself.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel

from .context import ModelContext
from .options import OptionValueError, options_of

SectionT = TypeVar("SectionT", bound=BaseModel)


def apply_env_overrides(section: SectionT, backend: str, options: dict, ctx: ModelContext) -> SectionT:
    """``section`` (the plan section of ``backend``) with the environment's values for the
    options the YAML does not set."""
    prefix = backend.replace("-", "_")
    updates = {}
    for spec in sorted(options_of(backend), key=lambda s: s.env or ""):
        raw = ctx.env.get(spec.env) if spec.env else None
        if raw is None or raw.strip() == "" or spec.name in options:
            continue
        try:
            updates[spec.plan_field] = spec.parse(raw)
        except OptionValueError as exc:
            ctx.error(("options",), f"environment variable {spec.env}: {exc}")
            continue
        ctx.origins[f"{prefix}.{spec.plan_field}"] = f"env {spec.env}"
    return section.model_copy(update=updates) if updates else section
