"""Property tests: whatever YAML it is fed, the compiler returns diagnostics or a plan, never raises."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..conftest import REPO
from .fakes import compile_yaml

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
SEEDS = [p.read_text() for p in EXAMPLES] + [
    "name: x\nbackend: llama-cpp\nparameters: {model: model.gguf}\ntemplate:\n  chat: '{{range .Functions}}{{.Name}}{{end}}'\n",
    "- &a {name: a, parameters: {model: model.gguf}}\n- <<: *a\n  name: b\n",
]
PROBE_KEYS = ["name", "backend", "parameters", "model", "context_size", "options", "template", "chat", "${X}", "<<"]

yaml_scalars = st.one_of(
    st.integers(-5, 10**6), st.floats(allow_nan=True), st.booleans(), st.none(),
    st.text(alphabet=string.printable, max_size=30), st.sampled_from(["{{ .Input }}", "{{ if }}", "${A:?}", "parallel:x"]),
)
values = st.recursive(
    yaml_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.sampled_from(PROBE_KEYS) | st.text(max_size=8), children, max_size=5)),
    max_leaves=20,
)


def _never_raises(text: str) -> None:
    result = compile_yaml({"models/fuzz.yaml": text}, env={"X": "1"})
    assert result.plan is not None or any(d.is_error for d in result.diagnostics)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=string.printable + "ü{}[]:-&*!|>'\"%@`$", max_size=300))
def test_random_text(text: str) -> None:
    _never_raises(text)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SEEDS), st.data())
def test_mutated_examples(seed: str, data) -> None:
    lines = seed.splitlines(keepends=True)
    for _ in range(data.draw(st.integers(1, 4))):
        if not lines:
            break
        index = data.draw(st.integers(0, len(lines) - 1))
        action = data.draw(st.sampled_from(["drop", "dup", "mangle", "indent"]))
        if action == "drop":
            del lines[index]
        elif action == "dup":
            lines.insert(index, lines[index])
        elif action == "indent":
            lines[index] = "  " + lines[index]
        else:
            cut = data.draw(st.integers(0, len(lines[index])))
            lines[index] = lines[index][:cut] + data.draw(st.sampled_from(["{{", ":", "- ", "${", "'", "#", "\t"])) \
                + lines[index][cut:]
    _never_raises("".join(lines))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(PROBE_KEYS + ["stopwords", "roles", "known_usecases"]), values, max_size=8))
def test_random_structures(document) -> None:
    import json

    _never_raises(json.dumps(document, default=str))  # JSON is YAML


@pytest.mark.parametrize("key", ["known_usecases", "trimspace", "stopwords", "cutstrings"])
def test_an_empty_list_item_is_dropped_with_a_warning(key: str) -> None:
    """Found by the mutation test above: a `- ` with nothing after it (or a commented-out value)
    reached the normalizer as None and raised."""
    result = compile_yaml({"models/m.yaml": f"name: a\nbackend: llama-cpp\nparameters: {{model: model.gguf}}\n"
                                            f"{key}:\n  -\n  - chat\n"})
    assert result.plan is not None
    [warning] = [d for d in result.diagnostics if d.path == f"a.{key}[0]"]
    assert "empty list item" in warning.message and not warning.is_error
