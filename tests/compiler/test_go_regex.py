"""LocalAI's cutstrings / extract_regex are Go RE2 patterns: applied with Python's re, they must
match what Go matches (checked against Go's regexp semantics by hand: \\z, ASCII classes), and a
pattern RE2 refuses is skipped, as LocalAI skips it (core/backend/llm.go Finetune)."""

from __future__ import annotations

import re

import pytest

from modelyard.compiler.go_regex import to_python


@pytest.mark.parametrize("go,text,expected", [
    (r"\s+\z", "answer  \n", "answer"),
    (r"[[:space:]]+$", "answer \t", "answer"),
    (r"[^[:alnum:]]", "a-b_c!", "abc"),
    (r"[[:upper:]][[:lower:]]+", "Hello World!", " !"),
    (r"\[\d+\]", "a[1] b[22]", "a b"),
])
def test_go_syntax_means_the_same_in_python(go, text, expected) -> None:
    python, why = to_python(go)
    assert why is None and re.sub(python, "", text) == expected


@pytest.mark.parametrize("go", [r"(?<=x)y", r"x(?=y)", r"(?!a)b", r"(a)\1", r"(?P<n>a)(?P=n)"])
def test_what_re2_refuses_is_skipped(go) -> None:
    python, why = to_python(go)
    assert python is None and "LocalAI skips" in why
