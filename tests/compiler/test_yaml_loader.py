"""The YAML loader: YAML 1.2 typing, positions, interpolation and the pure-parser fallback."""

from __future__ import annotations

import math

from modelyard.compiler.diagnostics import DiagnosticSink
from modelyard.compiler.yaml_loader import load_yaml, resolve_plain


def test_plain_scalars_follow_the_yaml_1_2_core_schema() -> None:
    cases = {"": None, "~": None, "null": None, "true": True, "False": False, "yes": "yes", "on": "on",
             "12": 12, "-3": -3, "0o17": 15, "0x1F": 31, "017": 17, "1.5": 1.5, "1e3": 1000.0, ".5": 0.5,
             "-.inf": -math.inf, "1_000": "1_000", "2024-01-01": "2024-01-01", "v1.2": "v1.2"}
    assert {text: resolve_plain(text) for text in cases} == cases
    assert math.isnan(resolve_plain(".nan"))


def test_values_positions_and_interpolation() -> None:
    sink = DiagnosticSink("m.yaml")
    text = "a: ${N}\nb: '${N}'\nc:\n  - x\n  - &y {k: 1}\nd:\n  <<: *y\n  j: 2\n"
    [document] = load_yaml(text, sink, {"N": "7"})
    assert document.data == {"a": 7, "b": "7", "c": ["x", {"k": 1}], "d": {"k": 1, "j": 2}}
    assert (document.key_position(("c",)).line, document.value_position(("c", 1, "k")).column) == (3, 12)
    assert sink.items == []


def test_localai_single_quote_escape_falls_back_to_the_pure_parser() -> None:
    sink = DiagnosticSink("m.yaml")
    [document] = load_yaml('key: "\\\'"\n', sink, {})
    assert document.data == {"key": "'"}


def test_alias_bombs_are_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 7)]
    sink = DiagnosticSink("bomb.yaml")
    assert load_yaml("\n".join(lines) + "\n", sink, {}) == []
    assert "expands to more than" in sink.items[0].message
