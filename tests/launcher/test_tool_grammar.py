"""LocalAI's call grammar (``function.grammar``) over HTTP with the fake backend: a model whose
YAML's templates render the chat has its ``auto`` tool requests constrained to a call or to the
no-action ``answer``, whose message is the reply; the settings that turn it off, or change it."""

from __future__ import annotations

import dataclasses
import json

import pytest
from starlette.testclient import TestClient

from modelyard.launcher.app import create_app
from modelyard.launcher.gbnf import CallGrammarShape
from modelyard.launcher.tools import ChoiceDeltas, assistant_message, parse_tool_request

from .fakes import FakePool, make_plan

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
BASE = """
  backend: llama-cpp
  parameters: {model: model.gguf}
  template:
    chat_message: "{{.RoleName}}{{if .Function}}[constrained]{{end}}: {{.Content}}"
    function: "{{range .Functions}}<{{.Name}}>{{end}}{{.Input}}"
"""
PLAN = f"""
- name: localai
{BASE}
  function: {{}}
- name: parallel
{BASE}
  function: {{grammar: {{parallel_calls: true}}, no_action_function_name: reply}}
- name: no-answer
{BASE}
  function: {{disable_no_action: true}}
- name: disabled
{BASE}
  function: {{grammar: {{disable: true}}}}
- name: mixed
{BASE}
  function: {{grammar: {{mixed_mode: true, prefix: "<call>"}}}}
- name: templated
{BASE}
- name: native
  backend: llama-cpp
  parameters: {{model: model.gguf}}
"""


@pytest.fixture(scope="module")
def served():
    plan = make_plan(PLAN)
    pool = FakePool(plan)
    with TestClient(create_app(plan, pool=pool)) as client:
        yield client, pool


def ask(served, model: str, content: str = "Weather in Paris?", **extra) -> dict:
    client, pool = served
    response = client.post("/v1/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": content}], "tools": [WEATHER], **extra})
    assert response.status_code == 200, response.json()
    return response.json()["choices"][0]


def test_auto_is_constrained_to_a_call_or_the_answer_function(served) -> None:
    _, pool = served
    choice = ask(served, "localai")
    assert choice["finish_reason"] == "tool_calls"
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {"city": "x"}
    request = pool.requests[-1][1]
    names = [alt["properties"]["name"]["const"] for alt in request.json_schema["anyOf"]]
    assert names == ["get_weather", "answer"]
    # The template's .Functions lists the answer function, and .Function marks the last message.
    assert request.prompt == "<get_weather><answer>user[constrained]: Weather in Paris?"


def test_calling_the_answer_function_is_answering(served) -> None:
    choice = ask(served, "localai", "[last-choice] Hello?")
    assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
    assert choice["message"]["content"] == "x"  # the fake's message argument


def test_a_streamed_answer_is_content_and_a_streamed_call_is_tool_calls(served) -> None:
    client, _ = served
    for content, finish in (("[last-choice] Hello?", "stop"), ("Weather?", "tool_calls")):
        with client.stream("POST", "/v1/chat/completions", json={
                "model": "localai", "stream": True, "tools": [WEATHER],
                "messages": [{"role": "user", "content": content}]}) as response:
            chunks = [json.loads(line[6:]) for line in response.iter_lines()
                      if line.startswith("data: ") and line != "data: [DONE]"]
        deltas = [c["choices"][0]["delta"] for c in chunks]
        assert chunks[-1]["choices"][0]["finish_reason"] == finish
        text = "".join(d.get("content") or "" for d in deltas)
        assert text == ("x" if finish == "stop" else "")  # never the JSON itself
        assert any("tool_calls" in d for d in deltas) == (finish == "tool_calls")


def test_parallel_calls_and_a_renamed_answer(served) -> None:
    _, pool = served
    ask(served, "parallel")
    alternatives = pool.requests[-1][1].json_schema["anyOf"]
    assert [alt.get("type") for alt in alternatives] == ["object", "object", "array"]
    assert alternatives[1]["properties"]["name"]["const"] == "reply"
    listed = ask(served, "parallel", "[last-choice] hi")  # the array: a list of calls
    assert listed["finish_reason"] == "tool_calls" and len(listed["message"]["tool_calls"]) == 1


@pytest.mark.parametrize(("model", "constrained"), [("no-answer", True), ("disabled", False), ("native", False)])
def test_the_settings_that_change_or_remove_the_grammar(served, model, constrained) -> None:
    _, pool = served
    choice = ask(served, model, "[call:get_weather]")
    assert choice["finish_reason"] == "tool_calls"  # read from the text when not constrained
    request = pool.requests[-1][1]
    assert (request.json_schema is not None) == constrained
    if constrained:  # without the answer function: the call alone
        assert request.json_schema["properties"]["name"] == {"const": "get_weather"}
    assert ("[constrained]" in request.prompt) == constrained
    assert "<answer>" not in request.prompt


def test_a_yaml_template_without_a_function_block_is_constrained_as_in_localai(served) -> None:
    _, pool = served
    assert ask(served, "templated")["finish_reason"] == "tool_calls"
    assert pool.requests[-1][1].prompt == "<get_weather><answer>user[constrained]: Weather in Paris?"


def test_mixed_mode_and_a_prefix_reach_the_grammar_and_the_reader(served) -> None:
    """llama-cpp takes GBNF: the worker puts LocalAI's mixed text and the prefix around the
    calls' schema (gbnf.shape_call_grammar); the reader skips the prefix and finds calls in text."""
    _, pool = served
    ask(served, "mixed")
    request = pool.requests[-1][1]
    assert request.json_schema is not None and "[constrained]" in request.prompt
    assert request.call_shape == CallGrammarShape(prefix="<call>", mixed=True)
    tools = parse_tool_request([WEATHER], "auto", None, None)
    mixed = dataclasses.replace(tools, shape=request.call_shape)
    for text in ('<call>{"name": "get_weather", "arguments": {"city": "Oslo"}}',
                 'Let me look. {"name": "get_weather", "arguments": {"city": "Oslo"}} Done.'):
        message, finish = assistant_message(text, "stop", mixed)
        assert finish == "tool_calls", text
        assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"city": "Oslo"}
    assert assistant_message("Just text.", "stop", mixed) == (
        {"role": "assistant", "content": "Just text.", "refusal": None}, "stop")
    # Streamed: mixed text is held to the end; a prefix never reaches a forced call's arguments.
    deltas = ChoiceDeltas(mixed)
    assert deltas.text("Let me look. ") == []
    tail, finish = deltas.finish("stop")
    assert tail == [{"content": "Let me look. "}] and finish == "stop"
    forced = ChoiceDeltas(dataclasses.replace(parse_tool_request([WEATHER], "required", None, None),
                                              shape=CallGrammarShape(prefix="<call>")))
    sent = forced.text("<ca") + forced.text('ll>{"name": "get_weather", "arguments": {"city": "Oslo"}}')
    sent += forced.finish("stop")[0]
    assert "".join(d["tool_calls"][0]["function"].get("arguments", "") for d in sent) == '{"city": "Oslo"}'
    assert sent[0]["tool_calls"][0]["function"]["name"] == "get_weather"


def test_none_a_named_tool_and_response_format_keep_their_own_rules(served) -> None:
    _, pool = served
    assert ask(served, "localai", tool_choice="none")["message"]["content"] == "Hello world, this is a fake model."
    assert pool.requests[-1][1].json_schema is None
    ask(served, "localai", tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert pool.requests[-1][1].json_schema["properties"]["name"] == {"const": "get_weather"}  # no answer
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    ask(served, "localai", response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}})
    assert pool.requests[-1][1].json_schema["anyOf"][-1] == schema  # a call, or the answer in that schema


def test_an_answer_function_of_the_requests_own_stays_its_tool() -> None:
    tools = parse_tool_request([{"type": "function", "function": {"name": "answer", "parameters": {
        "type": "object", "properties": {"message": {"type": "string"}}}}}], "auto", None, None)
    same = tools.with_no_action("answer", "no action")
    assert same.no_action is None and len(same.tools) == 1
    message, finish = assistant_message('{"name": "answer", "arguments": {"message": "hi"}}', "stop", same)
    assert finish == "tool_calls" and message["tool_calls"][0]["function"]["name"] == "answer"


def test_deltas_turn_the_answer_into_content() -> None:
    tools = parse_tool_request([WEATHER], "auto", None, None).with_no_action("answer", "no action")
    deltas = ChoiceDeltas(tools)
    assert deltas.text('{"name": "answer", ') == []
    assert deltas.text('"arguments": {"message": "Hi there"}}') == []
    assert deltas.finish("stop") == ([{"content": "Hi there"}], "stop")
