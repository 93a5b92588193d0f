"""``--set KEY=VALUE``: command-line overrides, applied before validation.

``server.port=9000`` sets a server setting; ``qwen.context_size=2048`` sets a key of the model
named ``qwen``; a key whose first part names no model (``context_size=2048``) applies to every
model. Values are read as YAML scalars, so ``2048`` is a number and ``true`` a boolean.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .paths import Path
from .plan import ServerPlan
from .yaml_loader import resolve_plain

_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._:+@-]*$")


@dataclass(frozen=True)
class SetOverride:
    key: tuple[str, ...]
    value: Any
    text: str


class OverrideSyntaxError(ValueError):
    pass


def parse_set(text: str) -> SetOverride:
    key, sep, raw = text.partition("=")
    if not sep or not _KEY.match(key) or any(not part for part in key.split(".")):
        raise OverrideSyntaxError(f"--set expects KEY=VALUE with a dotted KEY, got {text!r}")
    return SetOverride(tuple(key.split(".")), resolve_plain(raw), text)


def apply_overrides(items: Iterable[Any], overrides: Iterable[SetOverride], names: set) -> set[tuple[int, Path]]:
    """Write overrides into each item's raw mapping; return the (item id, path) pairs set."""
    touched: set[tuple[int, Path]] = set()
    for override in overrides:
        if override.key[0] == "server":
            continue
        scoped = override.key[0] in names and len(override.key) > 1
        path = override.key[1:] if scoped else override.key
        for item in items:
            if not isinstance(item.raw, dict):
                continue
            if scoped and item.raw.get("name") != override.key[0]:
                continue
            target = item.raw
            for part in path[:-1]:
                child = target.get(part)
                if not isinstance(child, dict):
                    child = target[part] = {}
                target = child
            target[path[-1]] = override.value
            touched.add((id(item), item.base + tuple(path)))
    return touched


def server_settings(server: ServerPlan, overrides: Iterable[SetOverride]) -> tuple[ServerPlan, list[str]]:
    """The server plan with ``server.*`` overrides applied, and any problems with them."""
    updates = {o.key[1]: o.value for o in overrides if o.key[0] == "server" and len(o.key) == 2}
    problems = [f"--set {o.text}: unknown server setting" for o in overrides
                if o.key[0] == "server" and (len(o.key) != 2 or o.key[1] not in ServerPlan.model_fields)]
    if problems or not updates:
        return server, problems
    try:
        return ServerPlan(**{**server.model_dump(), **updates}), []
    except ValidationError as exc:
        return server, [f"--set server.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
