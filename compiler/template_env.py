"""Sandboxed Jinja2 environments, one per template dialect.

Templates come from galleries, GGUF files and users' YAML: they are untrusted, so every
environment is an ``ImmutableSandboxedEnvironment`` with autoescaping off (prompts are not
HTML). The compiler uses these to syntax-check templates; the launcher renders with them.

Dialects:

* ``go``: templates translated from LocalAI's Go text/template syntax. Printing and ``toJson``
  follow Go's ``fmt`` and ``encoding/json`` so output is byte-identical to LocalAI's.
* ``jinja``: Jinja written in a model YAML. Hugging Face chat-template conventions
  (``trim_blocks``, ``lstrip_blocks``, loop controls), but the trailing newline of a YAML block
  scalar is kept, because in a prompt it matters.
* ``tokenizer``: a model's own chat template (GGUF ``tokenizer.chat_template`` or a Hugging
  Face tokenizer's), rendered exactly as transformers renders it.
"""

from __future__ import annotations

import contextvars
import functools
import json
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from jinja2 import Template, Undefined, UndefinedError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("template_deadline", default=None)


class RenderBudgetExceeded(RuntimeError):
    """A render ran past its ``render_budget``."""


@contextmanager
def render_budget(seconds: float) -> Iterator[None]:
    """Renders in this block (this thread or task) stop with ``RenderBudgetExceeded`` after
    ``seconds``: a template looping over a client's messages N⁴ times cannot hold a thread."""
    token = _DEADLINE.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with the render budget checked at every call, attribute and item access
    (what any loop doing work does; a bare ``range`` loop is bounded by the sandbox's MAX_RANGE)."""

    def _check_budget(self) -> None:
        deadline = _DEADLINE.get()
        if deadline is not None and time.monotonic() > deadline:
            raise RenderBudgetExceeded("the template ran out of its time budget")

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        self._check_budget()
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        self._check_budget()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        self._check_budget()
        return super().getitem(obj, argument)


@functools.cache
def template_environment(dialect: str) -> ImmutableSandboxedEnvironment:
    if dialect == "go":
        env = _Sandbox(
            autoescape=False, keep_trailing_newline=True, finalize=go_format, undefined=GoUndefined
        )
        env.globals.update(
            go_index=go_index, go_print=go_print, go_json=go_json, go_items=go_items, go_values=go_values
        )
        return env
    if dialect not in ("jinja", "tokenizer"):
        raise ValueError(f"unknown template dialect {dialect!r}")
    env = _Sandbox(
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=dialect == "jinja",
        extensions=[loopcontrols],
        undefined=Undefined,
    )
    env.globals["raise_exception"] = _raise_exception
    env.filters["tojson"] = _hf_tojson
    return env


@functools.lru_cache(maxsize=256)
def compiled_template(dialect: str, source: str) -> Template:
    """A template compiled once: plans hold a fixed set, and prompts render on every request."""
    return template_environment(dialect).from_string(source)


def _raise_exception(message: str) -> None:
    # Chat templates call raise_exception() to reject a conversation they cannot render.
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


def _hf_tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False, sort_keys: bool = False) -> str:
    # transformers overrides Jinja's tojson: no HTML escaping, unicode kept.
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)


# --- Go semantics ------------------------------------------------------------------------------


class GoStruct:
    """A Go struct as LocalAI's templates see it: ``.Field`` by its Go name, ``toJson`` with the
    JSON tags in declaration order (Go marshals a struct's fields in order, a map's keys sorted),
    ``{{ . }}`` as ``fmt`` prints a struct (``{v1 v2}``)."""

    __slots__ = ("_fields",)

    def __init__(self, *fields: tuple[str, str, Any]) -> None:  # (Go name, JSON key, value)
        self._fields = fields

    def __getitem__(self, name: str) -> Any:
        for go_name, _, value in self._fields:
            if go_name == name:
                return value
        raise KeyError(name)

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def json_fields(self) -> list[tuple[str, Any]]:
        return [(key, value) for _, key, value in self._fields]

    def values(self) -> list[Any]:
        return [value for _, _, value in self._fields]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GoStruct) and self._fields == other._fields

    def __repr__(self) -> str:
        return f"GoStruct{self._fields!r}"


class GoUndefined(Undefined):
    """A value Go templates read and the data lacks. LocalAI's data is a struct: a field it does
    not have fails where it is read (``can't evaluate field X``, as Go says); a key a map lacks
    is Go's ``<no value>``."""

    __slots__ = ()

    def read(self) -> None:
        if self._undefined_obj is missing:  # looked up on the data itself, not in a map
            raise UndefinedError(f"can't evaluate field {self._undefined_name}")

    def __bool__(self) -> bool:
        self.read()
        return False

    def __iter__(self):  # type: ignore[override]
        self.read()
        return iter(())

    def __len__(self) -> int:
        self.read()
        return 0

    def __eq__(self, other: object) -> bool:
        self.read()
        return type(self) is type(other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = Undefined.__hash__


def _read(value: Any) -> Any:
    if isinstance(value, GoUndefined):
        value.read()
    return value


def go_format(value: Any) -> str:
    """Format a value as Go's ``fmt.Sprint`` does for the data LocalAI passes to templates."""
    if value is None or isinstance(_read(value), Undefined):
        return "<no value>"  # Go prints a missing or nil value so
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value, exponent_limit=21)
    if isinstance(value, str):
        return value
    if isinstance(value, GoStruct):
        return "{" + " ".join(go_format(v) for v in value.values()) + "}"
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{go_format(k)}:{go_format(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_format(v) for v in value) + "]"
    return str(value)


def go_print(*values: Any) -> str:
    """``print``: Go's fmt.Sprint adds a space between operands when neither is a string."""
    out = ""
    for i, value in enumerate(values):
        if i and not isinstance(value, str) and not isinstance(values[i - 1], str):
            out += " "
        out += go_format(value)
    return out


def go_index(value: Any, *keys: Any) -> Any:
    """``index``: a map's missing key is its zero value (nil); anything else Go cannot index
    (a slice by a string, past its end, nil, a struct) fails, as it does in Go."""
    _read(value)
    for key in keys:
        if isinstance(value, Mapping):
            value = value.get(key)
        elif isinstance(value, (list, tuple, str)) and isinstance(key, int) and not isinstance(key, bool):
            if not 0 <= key < len(value):
                raise IndexError(f"index out of range: {key}")
            value = value[key]
        else:
            raise TypeError(f"can't index item of type {type(value).__name__} with {key!r}")
    return value


def go_items(value: Any) -> list[tuple[Any, Any]]:
    """``range $k, $v := x``: maps in sorted key order, slices with their indexes."""
    _read(value)
    if isinstance(value, Mapping):
        return [(k, value[k]) for k in sorted(value)]
    if isinstance(value, (list, tuple)):
        return list(enumerate(value))
    return []


def go_values(value: Any) -> list[Any]:
    return [v for _, v in go_items(value)]


def go_json(value: Any) -> str:
    """``toJson``: Go's ``json.Marshal`` (compact, sorted map keys, HTML-safe escapes)."""
    if isinstance(_read(value), Undefined):
        value = None
    return _go_json(value)


def _go_json(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError("toJson: unsupported float value")
        return _go_json_float(value)
    if isinstance(value, str):
        return _go_json_string(value)
    if isinstance(value, GoStruct):
        return "{" + ",".join(f"{_go_json_string(k)}:{_go_json(v)}" for k, v in value.json_fields()) + "}"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{_go_json_string(str(k))}:{_go_json(value[k])}" for k in sorted(value, key=str)) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_go_json(v) for v in value) + "]"
    return _go_json_string(str(value))


_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                 "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _go_json_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _JSON_ESCAPES:
            out.append(_JSON_ESCAPES[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _go_json_float(value: float) -> str:
    # encoding/json: %e form outside [1e-6, 1e21), and "e-07" shortened to "e-7".
    text = _go_float_text(value, low=-6, high=21)
    return text.replace("e-0", "e-")


def _go_float(value: float, exponent_limit: int) -> str:
    # fmt %v: %e form when the exponent is < -4 or >= 21, exponent at least two digits.
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return _go_float_text(value, low=-4, high=exponent_limit)


def _go_float_text(value: float, low: int, high: int) -> str:
    """Shortest round-trip digits (as Go's strconv 'g' with precision -1)."""
    if value == 0:
        return "0"
    # repr() is Python's shortest round-trip representation, as strconv's is Go's.
    exact = Decimal(repr(abs(value))).normalize()
    digits = "".join(map(str, exact.as_tuple().digits))
    exponent = exact.adjusted()
    sign = "-" if value < 0 else ""
    if exponent < low or exponent >= high:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    return sign + format(exact, "f")
