"""Function calling over HTTP with the fake backend: shapes, streaming, choices, bad input."""

from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelyard.launcher.tools import MAX_STRING_CHARS, CallStream, ToolCall, bounded, parse_calls, parse_tool_request

from .fakes import make_plan

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string", "enum": ["C", "F"]}},
                   "required": ["city", "unit"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}},
                                       "required": ["zone"]}}}


def chat(client, content="What is the weather in Paris?", **extra):
    return client.post("/v1/chat/completions", json={
        "model": "chat", "messages": [{"role": "user", "content": content}], **extra})


def stream_chunks(client, **body) -> list[dict]:
    with client.stream("POST", "/v1/chat/completions", json={"model": "chat", "stream": True, **body}) as response:
        assert response.status_code == 200
        lines = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_required_tool_call_is_forced_by_a_schema_and_comes_back_as_tool_calls(client, pool) -> None:
    reply = chat(client, tools=[WEATHER, TIME], tool_choice="required")
    assert reply.status_code == 200, reply.json()
    choice = reply.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None and message["role"] == "assistant"
    [call] = message["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"  # the fake picks the first alternative
    jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER["function"]["parameters"])
    schema = pool.requests[-1][1].json_schema
    assert [alt["properties"]["name"] for alt in schema["anyOf"]] == [{"const": "get_weather"}, {"const": "get_time"}]
    # The YAML's templates have no template.function: as in LocalAI, the tools reach the model
    # through the grammar alone (evaluator.go renders template.chat; nothing is added).
    assert pool.requests[-1][1].prompt == "<user>What is the weather in Paris?\n<assistant>"


def test_a_named_tool_choice_offers_only_that_tool(client, pool) -> None:
    reply = chat(client, tools=[WEATHER, TIME], tool_choice={"type": "function", "function": {"name": "get_time"}})
    [call] = reply.json()["choices"][0]["message"]["tool_calls"]
    assert call["function"] == {"name": "get_time", "arguments": '{"zone": "x"}'}
    assert pool.requests[-1][1].json_schema["properties"]["name"] == {"const": "get_time"}
    assert "get_weather" not in pool.requests[-1][1].prompt


def test_a_forced_call_streams_name_first_then_argument_fragments(client) -> None:
    chunks = stream_chunks(client, messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER],
                           tool_choice="required")
    deltas = [c["choices"][0]["delta"] for c in chunks]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]]
    assert deltas[0] == {"role": "assistant", "content": ""} and finishes == ["tool_calls"]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert not [d for d in deltas[1:] if d.get("content")]  # nothing of the call leaks into content
    head, fragments = calls[0], calls[1:]
    assert head["index"] == 0 and head["type"] == "function" and head["id"].startswith("call_")
    assert head["function"] == {"name": "get_weather", "arguments": ""}
    assert len(fragments) > 1 and all(set(f) == {"index", "function"} for f in fragments)
    arguments = "".join(f["function"]["arguments"] for f in fragments)
    assert json.loads(arguments) == {"city": "x", "unit": "C"}


def test_auto_returns_a_call_when_the_output_is_one_and_content_otherwise(client) -> None:
    called = chat(client, "[call:get_weather] Paris?", tools=[WEATHER])
    assert called.json()["choices"][0]["message"]["tool_calls"][0]["function"] == {
        "name": "get_weather", "arguments": '{"city": "Paris", "unit": "C"}'}
    plain = chat(client, "hello", tools=[WEATHER])
    assert plain.json()["choices"][0]["message"] == {"role": "assistant", "content": "Hello world, this is a fake model.",
                                                     "refusal": None}
    assert plain.json()["choices"][0]["finish_reason"] == "stop"
    unknown = chat(client, "[call:launch_rockets]", tools=[WEATHER])  # not an offered tool: content
    assert unknown.json()["choices"][0]["message"]["content"].startswith('{"name": "launch_rockets"')


def test_auto_streaming_holds_a_call_back_and_sends_it_as_tool_calls(client) -> None:
    chunks = stream_chunks(client, messages=[{"role": "user", "content": "[call:get_weather]"}], tools=[WEATHER])
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert [d for d in deltas if d.get("content")] == []
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0]["function"]["name"] == "get_weather"
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {"city": "Paris", "unit": "C"}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]] == ["tool_calls"]
    text = stream_chunks(client, messages=[{"role": "user", "content": "hi"}], tools=[WEATHER])
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in text)
    assert content == "Hello world, this is a fake model."


def test_tool_choice_none_never_calls_and_hides_the_tools(client, pool) -> None:
    reply = chat(client, "[call:get_weather]", tools=[WEATHER], tool_choice="none")
    choice = reply.json()["choices"][0]
    assert "tool_calls" not in choice["message"] and choice["finish_reason"] == "stop"
    assert "get_weather" not in pool.requests[-1][1].prompt.replace("[call:get_weather]", "")


def test_legacy_functions_answer_with_function_call(client) -> None:
    reply = chat(client, functions=[WEATHER["function"]], function_call={"name": "get_weather"})
    choice = reply.json()["choices"][0]
    assert choice["finish_reason"] == "function_call"
    assert choice["message"]["function_call"]["name"] == "get_weather"
    assert json.loads(choice["message"]["function_call"]["arguments"]) == {"city": "x", "unit": "C"}
    chunks = stream_chunks(client, messages=[{"role": "user", "content": "w"}], functions=[WEATHER["function"]],
                           function_call={"name": "get_weather"})
    deltas = [c["choices"][0]["delta"] for c in chunks if "function_call" in c["choices"][0]["delta"]]
    assert deltas[0]["function_call"] == {"name": "get_weather", "arguments": ""}
    assert json.loads("".join(d["function_call"]["arguments"] for d in deltas[1:])) == {"city": "x", "unit": "C"}


def test_a_tool_result_round_trips_into_the_prompt(client, pool) -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "C"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees, sunny"},
    ]
    reply = client.post("/v1/chat/completions", json={"model": "chat", "messages": messages, "tools": [WEATHER]})
    assert reply.status_code == 200
    prompt = pool.requests[-1][1].prompt
    assert '<tool>18 degrees, sunny' in prompt
    # This chat_message never shows .FunctionCall: as in LocalAI, the call turn renders empty.
    assert "<assistant>\n<tool>18 degrees" in prompt
    assert prompt.index("Weather in Paris?") < prompt.index("18 degrees")


@pytest.mark.parametrize(("body", "param", "message"), [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}]},
     "tools[0].function.parameters", "is not a valid JSON Schema"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name", "1-64 letters"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice",
     "names function 'nope', which is not among the tools (get_weather)"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice", "must be 'none', 'auto', 'required'"),
    ({"tool_choice": "required"}, "tool_choice", "only allowed when tools are given"),
    ({"tools": [WEATHER], "functions": [WEATHER["function"]]}, "functions", "not both"),
    ({"tools": [WEATHER, WEATHER]}, "tools", "two tools have the same name"),
    ({"tools": [WEATHER], "tool_choice": "required", "response_format": {"type": "json_object"}},
     "response_format", "cannot be combined"),
])
def test_bad_tool_requests_are_400s_naming_the_problem(client, body, param, message) -> None:
    reply = chat(client, **body)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["param"] == param and message in error["message"], error


def test_a_tool_message_without_a_matching_call_is_rendered(client, pool) -> None:
    """LocalAI renders every message it is sent (core/templates/evaluator.go TemplateMessages)."""
    reply = client.post("/v1/chat/completions", json={"model": "chat", "tools": [WEATHER], "messages": [
        {"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_zzz", "content": "18"},
        {"role": "tool", "content": "19"}]})
    assert reply.status_code == 200
    assert "<tool>18" in pool.requests[-1][1].prompt and "<tool>19" in pool.requests[-1][1].prompt


def test_raw_grammars_pass_to_llama_cpp_models_only(client, pool) -> None:
    reply = client.post("/v1/completions", json={"model": "plain", "prompt": "x", "grammar": 'root ::= "yes"'})
    assert reply.status_code == 200 and pool.requests[-1][1].grammar == 'root ::= "yes"'
    refused = client.post("/v1/embeddings", json={"model": "embed", "input": "x", "grammar": "root ::= x"})
    assert refused.status_code == 200  # embeddings ignore unknown fields
    wrong = client.post("/v1/chat/completions", json={"model": "embed", "messages": [{"role": "user", "content": "x"}],
                                                      "grammar": 'root ::= "a"'})
    assert wrong.status_code == 400


def test_bounded_adds_runaway_guards_only_where_the_schema_sets_none() -> None:
    schema = {"type": "object", "properties": {
        "a": {"type": "string"}, "b": {"type": "string", "maxLength": 5}, "c": {"type": "string", "enum": ["x"]},
        "d": {"type": "array", "items": {"type": "string"}}, "e": {"type": "string", "minLength": 500}}}
    out = bounded(schema)
    props = out["properties"]
    assert props["a"]["maxLength"] == MAX_STRING_CHARS and props["b"]["maxLength"] == 5
    assert "maxLength" not in props["c"] and props["d"]["maxItems"] == 16 and props["d"]["items"]["maxLength"] == 200
    assert props["e"]["maxLength"] == 500 and out["additionalProperties"] is False
    assert "maxLength" not in schema["properties"]["a"]  # the caller's schema is untouched
    nullable = bounded({"type": ["string", "null"], "description": "d"})
    assert nullable == {"anyOf": [{"type": "string", "description": "d", "maxLength": MAX_STRING_CHARS},
                                  {"type": "null", "description": "d"}]}


@given(st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=40),
       st.dictionaries(st.text(min_size=1, max_size=5), st.one_of(st.integers(), st.text(max_size=8),
                       st.lists(st.booleans(), max_size=3), st.dictionaries(st.text(max_size=3), st.none(), max_size=2)),
                       max_size=4),
       st.sampled_from(["", " "]))
def test_call_stream_splits_name_and_arguments_at_any_token_boundary(cuts, arguments, space) -> None:
    args_text = json.dumps(arguments, separators=("," + space, ":" + space), ensure_ascii=False)
    text = f'{{{space}"name":{space}"get_weather",{space}"arguments":{space}{args_text}{space}}}'
    stream, events, position = CallStream(), [], 0
    for cut in cuts * (len(text) // sum(cuts) + 1):
        if position >= len(text):
            break
        events += stream.feed(text[position:position + cut])
        position += cut
    events += stream.finish()
    assert events[0] == ("name", "get_weather") and [k for k, _ in events[1:]] == ["arguments"] * (len(events) - 1)
    assert json.loads("".join(v for _, v in events[1:])) == arguments


def test_calls_are_read_back_from_json_and_from_tool_call_blocks() -> None:
    tools = parse_tool_request([WEATHER, TIME], None, None, None)
    tagged = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome", "unit": "C"}}\n</tool_call>\n'
              '<tool_call>{"name": "get_time", "arguments": {"zone": "CET"}}</tool_call>')
    assert [(c.name, json.loads(c.arguments)) for c in parse_calls(tagged, tools)] == [
        ("get_weather", {"city": "Rome", "unit": "C"}), ("get_time", {"zone": "CET"})]
    listed = '[{"name": "get_time", "parameters": {"zone": "UTC"}}]'  # LocalAI's templates say "parameters"
    assert [(c.name, c.arguments) for c in parse_calls(listed, tools)] == [("get_time", '{"zone": "UTC"}')]
    for content in ("Sunny.", '{"answer": 42}', "<tool_call>{broken</tool_call>",
                    '<tool_call>{"name": "get_time", "arguments": {}}</tool_call> and some text'):
        assert parse_calls(content, tools) is None, content


def test_tools_reach_tokenizer_templates_that_take_them_and_a_note_serves_the_others() -> None:
    from modelyard.compiler.plan import Template
    from modelyard.launcher.prompts import PromptMessage, chat_prompt

    [model] = make_plan("- name: tok\n  backend: llama-cpp\n  parameters: {model: chat.gguf}\n"
                        "  template: {use_tokenizer_template: true}\n").models
    tools = parse_tool_request([WEATHER], "auto", None, None)
    plain = chat_prompt(model, [PromptMessage("user", "hi")], tools)
    assert "You can call these functions" in plain  # "{{ messages }}" has no place for tools
    taking = model.model_copy(update={"templates": model.templates.model_copy(update={
        "tokenizer_template": Template(dialect="tokenizer", source="{{ tools | length }} {{ messages | length }}")})})
    assert chat_prompt(taking, [PromptMessage("user", "hi")], tools) == "1 1"


def test_json_schema_grammars_keep_raw_control_characters_out_of_strings() -> None:
    pytest.importorskip("llama_cpp")
    from modelyard.launcher.backends.llama_cpp import json_schema_grammar

    grammar = json_schema_grammar({"type": "object", "properties": {"a": {"type": "string", "maxLength": 5}}})
    [char_rule] = [line for line in grammar.splitlines() if line.startswith("char ::=")]
    assert char_rule.startswith('char ::= [^"\\\\\\x7F\\x00-\\x1F] |'), char_rule


def test_raw_control_characters_in_streamed_arguments_are_escaped() -> None:
    stream = CallStream()
    raw = '{"name": "f", "arguments": {"note": "line one\nline\ttwo \\"q\\" \x1b", "n": [1,\n2]}}'
    events = []
    for piece in (raw[:30], raw[30:45], raw[45:]):
        events += stream.feed(piece)
    events += stream.finish()
    arguments = "".join(value for kind, value in events if kind == "arguments")
    assert json.loads(arguments) == {"note": 'line one\nline\ttwo "q" \x1b', "n": [1, 2]}  # strict JSON
    assert stream.arguments == arguments


def _base_prompt(base: str, messages: list) -> str:
    """The prompt LocalAI's gallery base ``base`` makes of ``messages`` (an S4 tool conversation)."""
    from modelyard.launcher.prompts import chat_prompt

    from ..compiler.fakes import compile_yaml
    from ..compiler.localai_corpus import base_configs

    config = dict(base_configs())[base] + "\nname: m\nparameters: {model: m.gguf}\n"
    model = compile_yaml({"models/m.yaml": config}, check_files=False).plan.models[0]
    return chat_prompt(model, messages)


def _s4():
    from modelyard.launcher.prompts import PromptMessage

    return [PromptMessage("user", "Weather in Boston?"),
            PromptMessage("assistant", "", (ToolCall("call_1", "get_weather", '{"city":"Boston"}'),)),
            PromptMessage("tool", '{"temp": 21}', (), "call_1")]


def test_function_call_is_openais_tool_calls_as_localai_passes_them() -> None:
    # chatml prints {{toJson .FunctionCall}}: LocalAI's schema.ToolCall, fields in Go's order.
    assert ('[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather",'
            '"arguments":"{\\"city\\":\\"Boston\\"}"}}]') in _base_prompt("chatml.yaml", _s4())
    # llama3.2-quantized walks it ({{range .FunctionCall}}{{.FunctionCall.Name}}): a 500 before.
    assert '[get_weather({"city":"Boston"})]' in _base_prompt("llama3.2-quantized.yaml", _s4())


def test_forced_call_schemas_move_each_tools_definitions_to_the_root() -> None:
    from modelyard.launcher.tools import Tool, ToolRequest

    a = {"type": "object", "properties": {"x": {"$ref": "#/$defs/Item"}}, "$defs": {"Item": {"type": "integer"}}}
    b = {"type": "object", "properties": {"y": {"$ref": "#/definitions/Item"}, "self": {"$ref": "#"}},
         "definitions": {"Item": {"type": "string", "maxLength": 5}}}
    schema = ToolRequest((Tool("a", "", a), Tool("b", "", b)), "required", False).call_schema()
    assert set(schema["$defs"]) == {"t0_Item", "t1_Item", "t1_root"}
    first, second = (alt["properties"]["arguments"] for alt in schema["anyOf"])
    assert first["properties"]["x"] == {"$ref": "#/$defs/t0_Item"} and "$defs" not in first
    assert second["properties"]["y"] == {"$ref": "#/$defs/t1_Item"}
    assert second["properties"]["self"] == {"$ref": "#/$defs/t1_root"} and schema["$defs"]["t1_root"] == second
    valid = {"name": "b", "arguments": {"y": "abc", "self": {"y": "d"}}}
    jsonschema.validate(valid, schema)


ANSWER = {"type": "object", "properties": {"city": {"type": "string"}, "summary": {"$ref": "#/$defs/Summary"}},
          "required": ["city", "summary"], "$defs": {"Summary": {"type": "string", "maxLength": 40}}}
STRUCTURED = {"type": "json_schema", "json_schema": {"name": "report", "schema": ANSWER}}


def test_an_object_holding_a_tool_name_is_a_call_only_when_its_arguments_fit() -> None:
    tools = parse_tool_request([WEATHER], "auto", None, None)
    assert parse_calls('{"name": "get_weather", "country": "France"}', tools) is None  # no arguments: content
    assert parse_calls('{"name": "get_weather", "arguments": {"city": "Paris"}}', tools) is None  # unit missing
    assert parse_calls('{"name": "get_weather", "arguments": {"city": 3, "unit": "C"}}', tools) is None
    [call] = parse_calls('{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\", \\"unit\\": \\"F\\"}"}',
                         tools)  # arguments written as a JSON text
    assert json.loads(call.arguments) == {"city": "Paris", "unit": "F"}


def test_structured_output_with_auto_tools_is_a_call_or_an_answer() -> None:
    """OpenAI applies response_format to the final answer: the grammar is the union of the
    calls and the answer schema (its $defs hoisted beside the tools')."""
    union = parse_tool_request([WEATHER, TIME], "auto", None, None).call_schema(answer=ANSWER)
    validator = jsonschema.Draft202012Validator(union)
    assert len(union["anyOf"]) == 3 and "answer_Summary" in union["$defs"]
    assert validator.is_valid({"name": "get_time", "arguments": {"zone": "UTC"}})
    assert validator.is_valid({"city": "Paris", "summary": "sunny"})
    assert not validator.is_valid({"name": "get_weather", "country": "France"})
    assert not validator.is_valid({"city": "Paris", "summary": "x" * 41})


def test_structured_output_with_auto_tools_over_http_both_ways(client, pool) -> None:
    called = chat(client, "weather?", tools=[WEATHER], response_format=STRUCTURED).json()["choices"][0]
    assert pool.requests[-1][1].json_schema["anyOf"][-1]["required"] == ["city", "summary"]  # the union went out
    assert called["finish_reason"] == "tool_calls"  # the fake writes the union's first alternative: a call
    assert json.loads(called["message"]["tool_calls"][0]["function"]["arguments"]) == {"city": "x", "unit": "C"}
    answered = chat(client, "weather?", response_format=STRUCTURED).json()["choices"][0]
    assert answered["finish_reason"] == "stop" and json.loads(answered["message"]["content"])["city"] == "x"
