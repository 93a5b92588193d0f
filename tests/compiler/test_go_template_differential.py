"""Translated templates render exactly what Go's text/template renders from the originals.

Every Go template in LocalAI's gallery bases (plus hand-written edge cases) is rendered two
ways over the same sample data: by Go itself (tests/compiler/gorender, built with the Go
toolchain by the ``go_render`` fixture in tests/conftest.py) and by our Jinja2 translation. The outputs must be byte-identical.
"""

from __future__ import annotations

import pytest
from jinja2 import TemplateError, UndefinedError

from modelyard.compiler.diagnostics import DiagnosticSink
from modelyard.compiler.go_template import (
    TranslationError,
    looks_like_go_template,
    translate,
)
from modelyard.compiler.template_env import template_environment
from modelyard.compiler.yaml_loader import load_yaml

from .localai_corpus import base_configs

# Shaped as LocalAI's Go structs are seen by templates: functions.Function and schema.ToolCall.
TOOL = {"Name": "get_weather", "Description": "Weather for a city & country <today>",
        "Parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"},
                                                         "days": {"type": "integer", "description": "How many"}},
                       "required": ["city"]}}
CALL = [{"Index": 0, "ID": "call_1", "Type": "function",
         "FunctionCall": {"Name": "get_weather", "Arguments": "{\"city\": \"Paris\", \"days\": 2}"}}]

# Older templates index a call as a map ({"name", "arguments"}).
CALL_AS_MAP = {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}

MESSAGES = [
    {"RoleName": "system", "Role": "system", "Content": "You are helpful.", "FunctionCall": None},
    {"RoleName": "user", "Role": "user", "Content": "What's the weather in Paris?\n", "FunctionCall": None},
    {"RoleName": "assistant", "Role": "assistant", "Content": "", "FunctionCall": CALL},
    {"RoleName": "tool", "Role": "tool", "Content": "{\"temp\": 21.5}", "FunctionCall": None},
    {"RoleName": "assistant", "Role": "assistant", "Content": "It is 21.5 °C — nice.", "FunctionCall": None},
]


def _message_data(index: int, message: dict) -> dict:
    return {**message, "FunctionName": "get_weather" if message["RoleName"] == "tool" else "",
            "MessageIndex": index, "LastMessage": index == len(MESSAGES) - 1, "SystemPrompt": "",
            "Function": message["FunctionCall"] is not None, "ReasoningEffort": ""}


PROMPT_DATA = [
    {"Input": "<|user|>hello<|end|>\n", "SystemPrompt": "", "Functions": [], "Instruction": "", "ReasoningEffort": ""},
    {"Input": "hi", "SystemPrompt": "Be brief.", "Functions": [TOOL, {**TOOL, "Name": "x"}],
     "Instruction": "fix it", "ReasoningEffort": "low"},
]
MULTIMODAL_DATA = [{"Images": [{"ID": 0}, {"ID": 1}], "Text": "describe", "Audios": [], "Videos": []}]

# Constructs beyond the corpus: variables across range, maps, printing non-strings, escapes.
EDGE_CASES = [
    ('{{$n := ""}}{{range .Functions}}{{ $n = print $n .Name " " }}{{end}}[{{$n}}]', PROMPT_DATA[1]),
    ('{{ range $k, $v := (index .Functions 0).Parameters.properties }}{{$k}}={{ index $v "type" }};{{end}}',
     {"Functions": [TOOL]}),
    ("{{ .B }} {{ .N }} {{ .F }} {{ .Big }} {{ .Small }} {{ .Nil }} {{ .L }} {{ .M }}",
     {"B": True, "N": 3, "F": 2.5, "Big": 1e21, "Small": 0.00001, "Nil": None, "L": [1, "a"], "M": {"b": 1, "a": "x"}}),
    ("{{ toJson .M }} {{ toJson .F }} {{ toJson .E }}", {"M": {"z": "<&>", "a": [1.0, 2.5e-7, 1e21]}, "F": 100.0, "E": "é\u2028"}),
    ("{{- /* a comment */ -}}  x  {{- .A -}}  y {{.A}}{{/* c */}}", {"A": "a"}),
    ("{{ if and .A (not .B) }}1{{ else if or .B .C }}2{{ else }}3{{ end }}|{{ len .L }}|{{ eq .A \"q\" \"a\" }}",
     {"A": "a", "B": "", "C": 0, "L": [1, 2, 3]}),
    ('{{ "tab\\there \\u00e9" }} {{ `raw {{ }}` }} {{ print 1 2 "x" 3 }} {{ .A | print "p" }}', {"A": "a"}),
    ("{{ range .Empty }}x{{ else }}empty{{ end }}{{ range .L }}{{ . }}{{ end }}", {"Empty": [], "L": ["a", "b"]}),
    ("{{ if lt .N 5.0 }}small{{ end }}{{ if ge .N 3.0 }}>=3{{ end }}{{ .A | len }}", {"N": 3, "A": "abcd"}),
    ("text with {{ \"{{\" }} braces {% not jinja %} {# nor this #}{{.A}}{", {"A": "}"}),
]


def _corpus_cases() -> list[tuple[str, str, dict]]:
    cases = []
    for name, config in base_configs():
        sink = DiagnosticSink(name)
        documents = load_yaml(config, sink, {})
        if not documents or not isinstance(documents[0].data, dict):
            continue
        templates = documents[0].data.get("template") or {}
        for kind, text in sorted(templates.items()):
            if not isinstance(text, str) or not looks_like_go_template(text):
                continue
            if kind == "chat_message":
                datasets = [_message_data(i, m) for i, m in enumerate(MESSAGES)]
                datasets += [{**d, "FunctionCall": CALL_AS_MAP} for d in datasets if d["FunctionCall"]]
            elif kind == "multimodal":
                datasets = MULTIMODAL_DATA
            elif kind == "image":  # LocalAI's older per-image template
                datasets = [{"ID": 1, "Text": "describe"}]
            else:
                datasets = PROMPT_DATA
            cases += [(f"{name}:{kind}", text, data) for data in datasets]
    return cases


def _render_jinja(template: str, data: dict) -> str:
    return template_environment("go").from_string(translate(template)).render(**data)


def test_corpus_templates_render_exactly_as_go(go_render, capsys) -> None:
    cases = _corpus_cases()
    assert len(cases) > 200
    results = go_render([{"template": t, "data": d} for _, t, d in cases])
    compared, rejected, misfits = set(), set(), 0
    mismatches = []
    for (label, template, data), go in zip(cases, results):
        if "error" in go and "executing" in go["error"]:
            misfits += 1  # this sample's FunctionCall shape is not the one the template expects
            with pytest.raises((TemplateError, LookupError, TypeError)):  # and the translation fails on it too
                _render_jinja(template, data)
            continue
        if "error" in go:
            # Go rejects the template itself (smolvlm's "{{-.Input}}"): the translator must too.
            rejected.add(label)
            with pytest.raises(TranslationError):
                translate(template)
            continue
        compared.add(label)
        try:
            ours = _render_jinja(template, data)
        except UndefinedError as exc:
            # A field LocalAI's data does not have (its data is a struct: the render fails there,
            # as here); Go's map of this sample data prints <no value> instead.
            assert str(exc).startswith("can't evaluate field") and "<no value>" in go["output"], exc
            continue
        if ours != go["output"]:
            mismatches.append((label, go["output"], ours))
    with capsys.disabled():
        print(f"\nGo differential: {len(compared)} corpus templates render identically to Go over "
              f"{len(cases) - misfits - len(rejected)} samples; {len(rejected)} rejected by Go itself")
    assert mismatches == []
    assert {label for label, _, _ in cases} == compared | rejected


def test_edge_cases_render_exactly_as_go(go_render) -> None:
    results = go_render([{"template": t, "data": d} for t, d in EDGE_CASES])
    for (template, data), go in zip(EDGE_CASES, results):
        assert "output" in go, go
        assert _render_jinja(template, data) == go["output"], template


def test_unsupported_function_is_reported_with_position() -> None:
    with pytest.raises(TranslationError) as caught:
        translate("line one\n  {{ printf \"%s\" .Input }}")
    assert (caught.value.line, caught.value.column, caught.value.unsupported) == (2, 6, True)
