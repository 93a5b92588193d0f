"""``modelyard compile --explain NAME``: a model's effective config and where each value came from."""

from __future__ import annotations

import json
from typing import Any

from . import backends
from .plan import ModelPlan, Template


def explain_model(model: ModelPlan) -> str:
    lines = [f"model {model.name} ({model.backend}), declared at {model.source}", ""]
    # Sections of the other backends are always empty: leave them out.
    unused = set(backends.sections()) - {backends.get(model.backend).section}
    data = model.model_dump(mode="json", exclude={"origins", "templates", "source", *unused})
    templates = {k: v for k, v in model.templates if isinstance(v, Template)}
    flat = dict(_flatten(data, ""))
    flat.update({f"templates.{k}": v for k, v in model.templates.model_dump(mode="json").items()
                 if not isinstance(v, dict)})
    width = max(len(key) for key in flat)
    for key in sorted(flat):
        value = json.dumps(flat[key], ensure_ascii=False)
        lines.append(f"  {key.ljust(width)}  {value}  [{_origin(model.origins, key)}]")
    for kind, template in sorted(templates.items()):
        origin = _origin(model.origins, f"templates.{kind}")
        dialect = "Go template, translated to Jinja2" if template.dialect == "go" else f"{template.dialect} template"
        lines += ["", f"  templates.{kind}: {dialect} [{origin}]"]
        if template.original is not None:
            lines += ["    original (Go):", *_indent(template.original), "    translated (Jinja2):"]
        lines += _indent(template.source)
    notes = backends.get(model.backend).machine_notes
    if notes is not None:
        lines += ["", "  on this machine:", *(f"    {note}" for note in notes(model))]
    return "\n".join(lines) + "\n"


def _flatten(value: Any, prefix: str):
    if isinstance(value, dict) and value and all(isinstance(k, str) for k in value) and prefix.count(".") < 1 \
            and not prefix.endswith(("roles", "engine_args")):
        for key, child in value.items():
            yield from _flatten(child, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix, value


def _origin(origins: dict[str, str], key: str) -> str:
    while key:
        if key in origins:
            return origins[key]
        key = key.rpartition(".")[0]
    return "default"


def _indent(text: str) -> list[str]:
    return [f"      {line}" if line else "" for line in text.split("\n")]
