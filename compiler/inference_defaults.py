"""LocalAI's per-family sampling defaults (``core/config/inference_defaults.go``): a model whose
name or model file names a known family (qwen3, llama-3.1, gemma-3, ... 58 of them) gets that
family's temperature, top_p, top_k, min_p, repeat_penalty and presence_penalty where its YAML
sets none; ``--explain`` names the family as the origin. Pure: the table is package data."""

from __future__ import annotations

import functools
import json
from importlib import resources

KEYS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "presence_penalty")


@functools.cache
def _table() -> tuple[tuple[str, ...], dict[str, dict[str, float]]]:
    data = json.loads(resources.files("modelyard.compiler").joinpath("inference_defaults.json").read_text("utf-8"))
    return tuple(data["patterns"]), data["families"]


def _normalized(model_id: str) -> str:
    """LocalAI's ``normalizeModelID``: lower case, the last path part, no .gguf, '_' as '-'."""
    return model_id.lower().rsplit("/", 1)[-1].removesuffix(".gguf").replace("_", "-")


def family_defaults(*model_ids: str | None) -> tuple[str, str, dict[str, float]] | None:
    """(the id that matched, the family, its defaults) for the first id naming a known family:
    LocalAI's ``ApplyInferenceDefaults(cfg, cfg.Name, cfg.Model)``, patterns in its order (the
    most specific first: qwen3-coder before qwen3)."""
    patterns, families = _table()
    for model_id in model_ids:
        if not model_id:
            continue
        normalized = _normalized(model_id)
        for pattern in patterns:
            if pattern in normalized and pattern in families:
                return model_id, pattern, {k: v for k, v in families[pattern].items() if k in KEYS}
    return None
