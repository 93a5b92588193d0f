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


def _load(text: str) -> tuple[list, list[str]]:
    sink = DiagnosticSink("m.yaml")
    documents = load_yaml(text, sink, {})
    return documents, [f"{d.position.line}:{d.position.column} {d.message}" for d in sink.items]


def test_an_alias_bomb_under_a_duplicate_key_is_refused_quickly() -> None:
    import time

    levels = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))
    started = time.monotonic()
    documents, problems = _load(levels + "roles: *i\nroles: *i\n")  # comparing the two values was exponential
    assert time.monotonic() - started < 5
    assert documents == [] and any("expands to more than 100000 values" in p for p in problems)


def test_a_recursive_alias_and_deep_nesting_are_errors_not_tracebacks() -> None:
    assert _load("x: &l [*l]\n") == ([], ["1:4 an alias refers to a value that contains it; refusing to load the document"])
    assert _load("x: " + "[" * 700 + "]" * 700 + "\n")[1] == [
        "1:204 values nest more than 200 levels deep; refusing to load the document"]
    block = "x:\n" + "".join("  " * (i + 1) + "- \n" for i in range(2000))
    assert _load(block)[1] == ["202:403 values nest more than 200 levels deep; refusing to load the document"]


def test_an_integer_of_thousands_of_digits_is_an_error() -> None:
    documents, problems = _load("context_size: " + "9" * 5000 + "\n")
    assert problems == ["1:15 an integer of 5000 digits is not a value any setting takes"]
    assert documents[0].data == {"context_size": None}
    assert resolve_plain("12") == 12


def test_a_large_document_without_aliases_is_not_an_alias_bomb() -> None:
    text = "".join(f"- {{name: model-{i}, url: 'github:o/r/b.yaml', tags: [a, b]}}\n" for i in range(30_000))
    documents, problems = _load(text)
    assert problems == [] and len(documents[0].data) == 30_000
