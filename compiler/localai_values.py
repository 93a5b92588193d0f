"""Values LocalAI loads although they are out of type or range, read the way LocalAI reads them.

LocalAI parses model YAML with gopkg.in/yaml.v3 into Go structs and checks no ranges, so some of
its own files carry values a strict schema refuses: ``top_k: 0.9`` and ``top_p: 80`` in
``tests/models_fixtures/{config,gpt4,gpt4_2}.yaml`` and ``docs/content/features/openai-functions.md``.
A LocalAI user's file must keep working, so such a value is replaced, before validation, by the
value LocalAI ends up using, with a warning that says which (``--strict`` makes it an error).
Pure: a mapping in, the fixed mapping's problems out.
"""

from __future__ import annotations

import math
from typing import Any

from .diagnostics import Problem, Severity

# Integer fields of LocalAI's PredictionOptions (core/schema/prediction.go) and LLMConfig
# (core/config/model_config.go): a number with a fraction is truncated into them.
_INTEGER_FIELDS = {
    ("parameters", key) for key in ("top_k", "max_tokens", "seed", "repeat_last_n", "n_keep", "batch", "n")
} | {(key,) for key in ("context_size", "threads", "gpu_layers", "mirostat", "n_draft")}


def _get(mapping: dict, path: tuple[str, ...]) -> tuple[dict | None, Any]:
    parent: Any = mapping
    for key in path[:-1]:
        parent = parent.get(key) if isinstance(parent, dict) else None
    if not isinstance(parent, dict) or path[-1] not in parent:
        return None, None
    return parent, parent[path[-1]]


def read_like_localai(model: Any) -> list[Problem]:
    """Replace, in place, the values of ``model`` that LocalAI reads as another value."""
    if not isinstance(model, dict):
        return []
    problems = []
    for path in sorted(_INTEGER_FIELDS):
        parent, value = _get(model, path)
        if parent is None or isinstance(value, bool) or not isinstance(value, float) or not math.isfinite(value):
            continue
        if value.is_integer():
            parent[path[-1]] = int(value)  # 4096.0: the same number
            continue
        used = math.trunc(value)
        parent[path[-1]] = used
        problems.append(Problem(path, f"{value!r} is not an integer; LocalAI's YAML parser truncates it, so {used} "
                                      "is used", Severity.WARNING))
    parent, value = _get(model, ("parameters", "top_p"))
    if parent is not None and isinstance(value, (int, float)) and not isinstance(value, bool) and value > 1:
        # LocalAI passes it on; llama.cpp's top-p sampler keeps every token for p >= 1.
        parent["top_p"] = 1.0
        problems.append(Problem(("parameters", "top_p"), f"{value!r} is above 1; LocalAI passes it on and llama.cpp "
                                                         "then keeps every token, so 1.0 (no nucleus cut) is used",
                                Severity.WARNING))
    parent, value = _get(model, ("parameters", "temperature"))
    if parent is not None and isinstance(value, (int, float)) and not isinstance(value, bool) and value > 2:
        problems.append(Problem(("parameters", "temperature"), f"{value!r} is above OpenAI's limit of 2; LocalAI and "
                                                               "llama.cpp take it, so it is used as given", Severity.WARNING))
    return problems + _drop_empty_items(model, ())


def _drop_empty_items(node: Any, path: tuple) -> list[Problem]:
    """A list item with nothing in it (``- `` alone, or a commented-out value) is one LocalAI
    reads as an empty string, which does nothing in its lists: it is dropped, with a warning."""
    problems: list[Problem] = []
    if isinstance(node, dict):
        for key, value in node.items():
            problems += _drop_empty_items(value, (*path, key))
    elif isinstance(node, list):
        for index in reversed(range(len(node))):
            if node[index] is None:
                del node[index]
                problems.append(Problem((*path, index), "an empty list item (LocalAI reads it as an empty string) is "
                                                        "ignored", Severity.WARNING))
            else:
                problems += _drop_empty_items(node[index], (*path, index))
    return problems
