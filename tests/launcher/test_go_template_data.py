"""Go templates see LocalAI's data, a struct per kind (core/templates/evaluator.go): a field it
does not have is reported by ``compile`` where the template reads it, and at request time the
template fails there and LocalAI's way out is taken (the prompt without that template), never a
500. LocalAI's call grammar composed in GBNF (gbnf.shape_call_grammar) as rules.go does."""

from __future__ import annotations

from modelyard.compiler.diagnostics import format_text
from modelyard.launcher.gbnf import CallGrammarShape, gbnf_literal, shape_call_grammar
from modelyard.launcher.prompts import PromptMessage, chat_prompt, completion_prompt
from modelyard.launcher.tools import ToolCall, parse_tool_request

from ..compiler.fakes import compile_yaml, default_probe

YAML = """\
name: m
backend: llama-cpp
parameters: {model: model.gguf}
template:
  chat_message: |-
    <{{ .RoleName }}>{{ if .FunctionCall }}{{ index .FunctionCall "name" }}{{ else }}{{ .Content }}{{ end }}
  function: "<|{{ .RoleName }}|>{{ .Input }}"
  chat: "{{ .Input }}|{{ .Instruction }}|"
  completion: "{{ .Messages }}{{ .Input }}"
"""
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}


def _model():
    probe = default_probe()
    probe.backends = {"llama-cpp"}
    result = compile_yaml({"models/m.yaml": YAML}, probe=probe)
    assert result.plan is not None
    return result, result.plan.models[0]


def test_compile_names_each_field_the_data_lacks_where_it_is_read() -> None:
    result, _ = _model()
    lines = [format_text(d) for d in result.diagnostics if ": not in the data " in d.message]
    assert len(lines) == 2, [format_text(d) for d in result.diagnostics]
    function, completion = lines
    assert function == (
        "models/m.yaml:7:13: m.template.function: warning: template line 1:6: .RoleName: not in the data "
        "template.function is rendered with (PromptTemplateData: .SystemPrompt, .SuppressSystemPrompt, .Input, "
        ".Instruction, .Functions, .MessageIndex, .ReasoningEffort, .Metadata); where one is read, LocalAI's "
        "rendering fails and it goes on without this template, and so does modelyard")
    assert "template line 1:4: .Messages: not in the data template.completion" in completion


def test_a_template_that_fails_on_its_data_is_left_out_as_localai_does() -> None:
    _, model = _model()
    history = [PromptMessage("user", "hi"),
               PromptMessage("assistant", "", (ToolCall("call_1", "get_weather", '{"city": "Oslo"}'),)),
               PromptMessage("tool", "12 C", tool_call_id="call_1")]
    # Without tools: chat_message per message (the call's message fails on `index` of a list:
    # LocalAI writes its calls as JSON instead), then template.chat with .Instruction's zero value.
    assert chat_prompt(model, history) == (
        '<user>hi\n[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather",'
        '"arguments":"{\\"city\\": \\"Oslo\\"}"}}]\n<tool>12 C||')
    # With tools, template.function reads .RoleName, which its data lacks: the messages alone.
    tools = parse_tool_request([WEATHER], "auto", None, None)
    assert chat_prompt(model, history[:1], tools) == "<user>hi"
    assert completion_prompt(model, "text") == "text"  # .Messages: the prompt untemplated


def test_the_call_grammar_is_composed_as_localais_rules() -> None:
    calls = 'root ::= "{" space "}" space\nspace ::= " "?\n'
    assert shape_call_grammar(calls, CallGrammarShape()) == calls
    prefixed = shape_call_grammar(calls, CallGrammarShape(prefix='<tool_call>\n"'))
    assert prefixed.splitlines()[:2] == ['root ::= "<tool_call>\\n\\"" modelyard-call',
                                         'modelyard-call ::= "{" space "}" space']
    mixed = shape_call_grammar(calls, CallGrammarShape(mixed=True)).splitlines()
    assert mixed[0] == "root ::= modelyard-mixed | modelyard-call"
    assert mixed[-1] == "modelyard-mixed ::= modelyard-text | modelyard-text modelyard-call | modelyard-call"
    after = shape_call_grammar(calls, CallGrammarShape(mixed=True, text_after=True, prefix="P")).splitlines()
    assert after[0] == 'root ::= ( "P" modelyard-call | modelyard-mixed )'
    assert after[-1] == ("modelyard-mixed ::= modelyard-text | ( modelyard-text modelyard-call modelyard-text )* "
                         "| modelyard-call")
    either = shape_call_grammar(calls, CallGrammarShape(mixed=True, text_or_call=True)).splitlines()
    assert either[0] == "root ::= modelyard-text | modelyard-call"
    assert not any(line.startswith("modelyard-mixed") for line in either)  # no rule the root does not use
    # `root` inside literals and classes is text, not the rule.
    assert shape_call_grammar('root ::= "root" [root] x\nx ::= root\n', CallGrammarShape(prefix="p")).splitlines()[1:3] \
        == ['modelyard-call ::= "root" [root] x', "x ::= modelyard-call"]
    assert gbnf_literal('a\\b"\t') == '"a\\\\b\\"\\t"'
