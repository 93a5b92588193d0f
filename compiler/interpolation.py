"""``${VAR}`` interpolation over an injected environment, as docker-compose does it.

Supported forms: ``${VAR}``, ``${VAR:-default}`` (default when unset or empty),
``${VAR-default}`` (default when unset), ``${VAR:?message}`` / ``${VAR?message}`` (error when
unset), and ``$${`` for a literal ``${``. Only identifiers are interpolated, so regex group
references such as ``${1}`` and Go template variables such as ``$tools`` pass through unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_PATTERN = re.compile(
    r"\$(?:(?P<escaped>\$\{)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})"
)


def interpolate(text: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """Return the interpolated text and what was wrong with it (unset required variables); the
    YAML loader places each message at the scalar it came from."""
    if "$" not in text:
        return text, []
    errors: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "${"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        value = env.get(name)
        if op in (":-", "-"):
            use_default = value is None or (op == ":-" and value == "")
            return arg if use_default else value  # type: ignore[return-value]
        if op in (":?", "?"):
            if value is None or (op == ":?" and value == ""):
                detail = f": {arg}" if arg else ""
                errors.append(f"required environment variable {name} is not set{detail}")
                return ""
            return value
        if value is None:
            errors.append(f"environment variable {name} is not set (write ${{{name}:-default}} to make it optional)")
            return ""
        return value

    return _PATTERN.sub(replace, text), errors
