"""The tool-call syntaxes LocalAI's gallery templates ask models for (``launcher/tool_formats.py``),
read whole and streamed: a reply made of calls becomes ``tool_calls``; prose stays content."""

from __future__ import annotations

import json

import pytest

from modelyard.launcher.tools import ChoiceDeltas, parse_calls, parse_tool_request

from .test_tools import TIME, WEATHER

TOOLS = parse_tool_request([WEATHER, TIME], "auto", None, None)
PARIS = {"city": "Paris", "unit": "C"}
BOTH = [("get_weather", PARIS), ("get_time", {"zone": "CET"})]


@pytest.mark.parametrize("reply,expected", [
    ('{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}', BOTH[:1]),
    # Llama 3.x's JSON tool format: "parameters", after <|python_tag|>
    ('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "unit": "C"}}', BOTH[:1]),
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}\n</tool_call>\n'
     '<tool_call>{"name": "get_time", "arguments": {"zone": "CET"}}</tool_call>', BOTH),
    # Hermes 2 Pro: its template asks for a scratchpad first
    ('<scratchpad>The user wants the weather.</scratchpad>\n<tool_call>\n{"name": "get_weather", '
     '"arguments": {"city": "Paris", "unit": "C"}}\n</tool_call>', BOTH[:1]),
    # llama3.1-instruct (168 gallery entries) and LocalAI's AIO response_regex
    ('<function=get_weather>{"city": "Paris", "unit": "C"}</function>', BOTH[:1]),
    ('<function=get_weather>{"city": "Paris", "unit": "C"}</function>\n<function=get_time>{"zone": "CET"}</function>',
     BOTH),
    # mistral-0.3 (38 entries), and Mistral's newer [ARGS] syntax
    ('[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}]', BOTH[:1]),
    ('[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "unit": "C"}[TOOL_CALLS]get_time[ARGS]{"zone": "CET"}', BOTH),
    # pythonic: LocalAI's AIO gpt-4 function template, Llama 3.2
    ('[get_weather(city="Paris", unit="C"), get_time(zone="CET")]', BOTH),
    # LocalAI's XML presets: qwen3-coder / qwen3.5, glm-4.5, minimax-m2
    ('<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=unit>\nC\n'
     '</parameter>\n</function>\n</tool_call>\n<tool_call>\n<function=get_time>\n<parameter=zone>\nCET\n'
     '</parameter>\n</function>\n</tool_call>', BOTH),
    ('<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n<arg_key>unit</arg_key>\n'
     '<arg_value>C</arg_value>\n</tool_call>', BOTH[:1]),
    ('<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city">Paris</parameter>\n'
     '<parameter name="unit">C</parameter>\n</invoke>\n<invoke name="get_time">\n<parameter name="zone">CET'
     '</parameter>\n</invoke>\n</minimax:tool_call>', BOTH),
    # apriel-1.5's and kimi-k2's JSON-shaped ones
    ('<tool_calls>[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}]</tool_calls>', BOTH[:1]),
    ('<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>'
     '{"city": "Paris", "unit": "C"}<|tool_call_end|><|tool_call_begin|>functions.get_time:1'
     '<|tool_call_argument_begin|>{"zone": "CET"}<|tool_call_end|><|tool_calls_section_end|>', BOTH),
])
def test_each_gallery_syntax_reads_as_calls(reply, expected) -> None:
    calls = parse_calls(reply, TOOLS)
    assert calls is not None, reply
    assert [(c.name, json.loads(c.arguments)) for c in calls] == expected


@pytest.mark.parametrize("reply", [
    "The weather in Paris is mild.",
    'I will call <function=get_weather>{"city": "Paris", "unit": "C"}</function> now',  # prose around it
    '<function=get_weather>{"city": "Paris"}</function>',  # misses a required argument
    '<function=unknown>{"city": "Paris", "unit": "C"}</function>',
    '[get_weather(city=__import__("os").getcwd(), unit="C")]',  # not a literal: never evaluated
    '[get_weather("Paris", "C")]',  # positional arguments name nothing
    "[1, 2, 3]",
    '[TOOL_CALLS] not json',
    '<scratchpad>thinking</scratchpad> and then an answer',
    '<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call> and more',
    '<minimax:tool_call><invoke name="get_weather">Paris</invoke></minimax:tool_call>',  # not its arguments
])
def test_anything_else_stays_content(reply) -> None:
    assert parse_calls(reply, TOOLS) is None


@pytest.mark.parametrize("pieces,calls", [
    (["<func", "tion=get_weather>", '{"city": "Paris", ', '"unit": "C"}</function>'], ["get_weather"]),
    (["[TOOL", "_CALLS] ", '[{"name": "get_time", "arguments": {"zone": "CET"}}]'], ["get_time"]),
    (["<scr", "atchpad>plan</scratchpad><tool_call>", '{"name": "get_time", "arguments": {"zone": "CET"}}',
      "</tool_call>"], ["get_time"]),
])
def test_a_stream_holds_call_syntax_back_and_sends_openai_fragments(pieces, calls) -> None:
    deltas = ChoiceDeltas(TOOLS)
    assert all(deltas.text(piece) == [] for piece in pieces)  # nothing leaks into content
    sent, finish = deltas.finish("stop")
    assert finish == "tool_calls"
    assert [d["tool_calls"][0]["function"]["name"] for d in sent if "id" in d["tool_calls"][0]] == calls


def test_a_yaml_xml_format_is_read_and_held_back_while_streaming() -> None:
    from modelyard.compiler.plan import FunctionParsing, XmlToolFormat

    syntax = XmlToolFormat(scope_start="<calls>", tool_start="<call:", tool_sep=">", key_start="<", key_val_sep="=",
                           val_end="/>", tool_end="</call>", scope_end="</calls>", raw_values=True)
    tools = parse_tool_request([WEATHER], "auto", None, None)
    tools = type(tools)(tools.tools, tools.choice, parsing=FunctionParsing(xml_format=syntax))
    reply = "<calls><call:get_weather><city=Paris/><unit=C/></call></calls>"
    [call] = parse_calls(reply, tools)
    assert (call.name, json.loads(call.arguments)) == ("get_weather", PARIS)
    deltas = ChoiceDeltas(tools)
    assert deltas.text("<cal") == [] and deltas.text(reply[4:]) == []
    assert deltas.finish("stop")[1] == "tool_calls"


def test_a_stream_of_prose_is_sent_at_once() -> None:
    deltas = ChoiceDeltas(TOOLS)
    assert deltas.text("<f") == []  # could still open <function=
    assert deltas.text("oo> bar") == [{"content": "<foo> bar"}]
    assert deltas.text(" more") == [{"content": " more"}]


def _base_parsing(base: str):
    """The ``function:`` parsing settings of a LocalAI gallery base, compiled."""
    from ..compiler.fakes import compile_yaml
    from ..compiler.localai_corpus import base_configs

    configs = dict(base_configs())
    if f"{base}.yaml" not in configs:
        pytest.skip("the LocalAI gallery corpus is not in this checkout")
    result = compile_yaml({f"bases/{base}.yaml": configs[f"{base}.yaml"]}, check_files=False,
                          sets=(f"name={base}", "parameters.model=model.gguf"))
    assert result.plan is not None, result.diagnostics
    return result.plan.models[0].function_parsing


@pytest.mark.parametrize("base,reply,expected,content", [
    # response_regex <function=(?P<name>\w+)>(?P<arguments>.*)</function>
    ("llama3.1-instruct", 'Sure. <function=get_time>{"zone": "CET"}</function>', [("get_time", {"zone": "CET"})], None),
    # json_regex_match over <tool_call> blocks; the scratchpad is the content beside the call
    ("hermes-2-pro-mistral", '<scratchpad>time asked</scratchpad>\n<tool_call>\n{"arguments": {"zone": "CET"}, '
     '"name": "get_time"}\n</tool_call>', [("get_time", {"zone": "CET"})], "time asked"),
    # json_regex_match after [TOOL_CALLS], replace_function_results trimming the rest
    ("mistral-0.3", '[TOOL_CALLS] [{"name": "get_time", "arguments": {"zone": "CET"}}] trailing',
     [("get_time", {"zone": "CET"})], None),
    # response_regex \[(?P<name>\w+)\((?P<arguments>.*)\)\] with argument_regex key=value pairs
    ("llama3.2-quantized", "[get_time(zone='CET')]", [("get_time", {"zone": "CET"})], None),
    # <Output> JSON, <Thought> captured as content
    ("qwen-fcall", '<Thought>need the time</Thought><Output>{"name": "get_time", "arguments": {"zone": "CET"}}</Output>',
     [("get_time", {"zone": "CET"})], "need the time"),
])
def test_gallery_function_blocks_read_calls_as_localai(base, reply, expected, content) -> None:
    """LocalAI's ParseFunctionCall / ParseTextContent (pkg/functions/parse.go l.931, l.286) with
    each base's own ``function:`` settings."""
    import dataclasses

    from modelyard.launcher.tools import assistant_message

    tools = dataclasses.replace(TOOLS, parsing=_base_parsing(base))
    message, finish = assistant_message(reply, "stop", tools)
    assert finish == "tool_calls", message
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message["tool_calls"]] == expected
    assert message["content"] == content


def test_replace_llm_results_cleans_a_reply_without_calls() -> None:
    import dataclasses

    from modelyard.launcher.tools import assistant_message

    tools = dataclasses.replace(TOOLS, parsing=_base_parsing("hermes-2-pro-mistral"))
    message, finish = assistant_message("<scratchpad>no tool fits</scratchpad>It is sunny.", "stop", tools)
    assert (message["content"], finish) == ("It is sunny.", "stop")
