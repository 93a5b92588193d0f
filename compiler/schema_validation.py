"""Validate one model mapping against ``schema/model.schema.json``; every problem at once.

Messages are built from the failing keyword, the schema and the instance, never from
jsonschema's English ``error.message``. Two schema annotations drive extra behaviour:

* ``x-not-implemented`` on a property: LocalAI has the key and modelyard does not act on it
  yet; it is accepted with a warning naming it.
* ``x-aliases`` on an enum: alternative spellings, left out of "is not one of" lists.

A key unknown where it stands but known one level up or down (``temperature`` at the top level,
``context_size`` under ``parameters``) is a warning: LocalAI ignores it there too, so a LocalAI
file that has one still works as it did, and the user learns where the key belongs.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterator
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from . import backends
from .diagnostics import Problem, Severity
from .paths import Path
from .suggestions import did_you_mean

_TYPE_NAMES = {
    "string": "a string", "integer": "an integer", "number": "a number", "boolean": "true or false",
    "array": "a list", "object": "a mapping", "null": "nothing",
}


@functools.cache
def load_schema(name: str) -> dict:
    text = resources.files("modelyard.schema").joinpath(name).read_text(encoding="utf-8")
    return json.loads(text)


def _model_validator() -> Draft202012Validator:
    return _validator_for(_backend_key())


def model_schema() -> dict:
    """The model mapping's schema, its ``backend`` enum and aliases as the backend registry has them
    (``schema/model.schema.json`` carries the same lists for editors; a test holds them equal)."""
    return _defs_for(_backend_key())["model"]


def _backend_key() -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    return backends.names(), tuple(backends.aliases().items())


@functools.cache
def _defs_for(key: tuple[tuple[str, ...], tuple[tuple[str, str], ...]]) -> dict:
    names, alias_pairs = key
    defs = copy.deepcopy(load_schema("model.schema.json")["$defs"])
    backend = defs["model"]["properties"]["backend"]
    backend["enum"] = [*names, *(alias for alias, _ in alias_pairs)]
    backend["x-aliases"] = dict(alias_pairs)
    return defs


@functools.cache
def _validator_for(key: tuple[tuple[str, ...], tuple[tuple[str, str], ...]]) -> Draft202012Validator:
    return Draft202012Validator({"$ref": "#/$defs/model", "$defs": _defs_for(key)})


def describe_errors(validator: Draft202012Validator, instance: Any) -> list[Problem]:
    """Every schema problem of ``instance`` as findings (shared by models and gallery entries)."""
    return [finding for error in validator.iter_errors(instance) for finding in _describe(error)]


def validate_model(model: Any) -> list[Problem]:
    findings = describe_errors(_model_validator(), model)
    if isinstance(model, dict):
        findings.extend(_not_implemented(model, model_schema(), ()))
    return findings


def _describe(error: ValidationError) -> Iterator[Problem]:
    path: Path = tuple(error.absolute_path)
    keyword, schema, instance = error.validator, error.schema, error.instance
    if keyword == "additionalProperties":
        yield from _unknown_keys(path, instance, schema)
        return
    if instance is None and keyword != "required":
        return  # an empty value (`key:` with nothing) means "unset", as in LocalAI
    yield Problem(path, _message(keyword, error.validator_value, schema, instance))


def _message(keyword: str, expected: Any, schema: dict, instance: Any) -> str:
    if keyword == "type":
        wanted = expected if isinstance(expected, list) else [expected]
        names = " or ".join(_TYPE_NAMES[t] for t in wanted if t != "null")
        return f"expected {names}, got {_describe_value(instance)}"
    if keyword == "enum":
        aliases = schema.get("x-aliases", {})
        allowed = [v for v in expected if v not in aliases]
        hint = did_you_mean(str(instance), [str(v) for v in expected], aliases)
        return f"{instance!r} is not one of {', '.join(repr(v) for v in allowed)}{hint}"
    if keyword in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        relation = {
            "minimum": "at least", "exclusiveMinimum": "greater than",
            "maximum": "at most", "exclusiveMaximum": "less than",
        }[keyword]
        return f"must be {relation} {expected}, got {instance!r}"
    if keyword == "minLength":
        return "must not be empty"
    if keyword == "maxLength":
        return f"must be at most {expected} characters long"
    if keyword == "pattern":
        return f"{instance!r} is not valid: {_pattern_rule(schema)}"
    if keyword == "required":
        missing = [k for k in expected if k not in instance]
        return f"missing required key {', '.join(repr(k) for k in missing)}"
    if keyword == "anyOf":
        return f"expected {schema.get('description', 'another value')}, got {_describe_value(instance)}"
    if keyword == "minItems":
        return f"must have at least {expected} item(s)"
    return f"{_describe_value(instance)} is not valid here ({keyword})"


def _pattern_rule(schema: dict) -> str:
    return schema.get("x-pattern-message") or f"it must match {schema['pattern']}"


def _unknown_keys(path: Path, instance: dict, schema: dict) -> Iterator[Problem]:
    known = list(schema.get("properties", {}))
    model = model_schema()
    for key in sorted(k for k in instance if k not in schema.get("properties", {})):
        elsewhere = _misplaced_hint(path, key, model)
        if elsewhere:
            yield Problem(path + (key,), elsewhere, Severity.WARNING, at_key=True)
        else:
            yield Problem(path + (key,), f"unknown key{did_you_mean(key, known)}", at_key=True)


def _misplaced_hint(path: Path, key: str, model: dict) -> str | None:
    top = model["properties"]
    parameters = top["parameters"]["properties"]
    if path == () and key in parameters:
        return "has no effect at the top level (LocalAI ignores it here too); move it under 'parameters'"
    if path == ("parameters",) and key in top:
        return "has no effect under 'parameters' (LocalAI ignores it here too); move it to the top level"
    return None


def _not_implemented(instance: dict, schema: dict, path: Path) -> Iterator[Problem]:
    properties = schema.get("properties", {})
    for key, value in instance.items():
        sub = properties.get(key)
        if not isinstance(sub, dict):
            continue
        reason = sub.get("x-not-implemented")
        if reason:
            yield Problem(path + (key,), f"not acted on yet: {reason}", Severity.WARNING, at_key=True)
        elif isinstance(value, dict) and "properties" in sub:
            yield from _not_implemented(value, sub, path + (key,))


def _describe_value(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, list):
        return "a list"
    return "a mapping"
