"""Function calling and JSON Schema outputs on the real Gemma 3 270M, through the openai client.

A 270M base model picks poor arguments, but the grammar makes every forced call parse and fit
its tool's schema: that is what these tests hold the server to.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import openai
import pytest

from ..conftest import REPO
from .server import launched

pytestmark = [pytest.mark.real_model, pytest.mark.slow]


def obj(properties: dict, required: list[str] | None = None) -> dict:
    return {"type": "object", "properties": properties, "required": list(properties) if required is None else required}


S = {"type": "string"}
SCHEMAS = [  # 20 tool schemas: flat, enums, numbers, booleans, arrays, nesting, optional keys, unions
    obj({"city": S}),
    obj({"city": S, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}),
    obj({"a": {"type": "integer"}, "b": {"type": "integer"}}),
    obj({"amount": {"type": "number"}, "currency": {"type": "string", "enum": ["EUR", "USD", "JPY"]}}),
    obj({"enabled": {"type": "boolean"}}),
    obj({"tags": {"type": "array", "items": S, "minItems": 1, "maxItems": 3}}),
    obj({"ids": {"type": "array", "items": {"type": "integer"}, "maxItems": 4}}),
    obj({"user": obj({"name": S, "age": {"type": "integer"}})}),
    obj({"address": obj({"street": S, "city": S, "geo": obj({"lat": {"type": "number"}, "lon": {"type": "number"}})})}),
    obj({"query": S, "limit": {"type": "integer"}}, required=["query"]),
    obj({"title": {"type": "string", "maxLength": 20}, "priority": {"type": "string", "enum": ["low", "high"]}}),
    obj({"items": {"type": "array", "items": obj({"sku": S, "qty": {"type": "integer"}}), "minItems": 1,
                   "maxItems": 2}}),
    obj({"mode": {"const": "fast"}, "level": {"type": "integer", "enum": [1, 2, 3]}}),
    obj({"value": {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 10}]}}),
    obj({"note": {"type": ["string", "null"]}}),
    obj({"matrix": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}, "maxItems": 2},
                    "maxItems": 2}}),
    obj({"email": S, "subscribe": {"type": "boolean"}, "topics": {"type": "array", "items": S, "maxItems": 2}}),
    obj({"from": S, "to": S, "date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}}),
    obj({"config": obj({"retries": {"type": "integer"}, "verbose": {"type": "boolean"}}, required=["retries"])}),
    obj({}),
]
PROMPTS = ["What is the weather in Paris?", "Add 2 and 3.", "Convert 10 euros.", "Turn it on.",
           "Tag this post.", "Find users 1 and 2.", "Create Ann, 31.", "Where is the office?"]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    directory = tmp_path_factory.mktemp("models")
    config = (REPO / "gallery" / "gemma-3-270m.yaml").read_text()
    config = config.replace("context_size: 4096", "context_size: 4096\noptions:\n  - parallel:4")
    (directory / "gemma.yaml").write_text(config)
    # The same model with a `function:` block: LocalAI's call grammar holds its `auto` requests.
    localai = config.replace("name: gemma-3-270m", "name: gemma-localai") + "function:\n  grammar: {parallel_calls: true}\n"
    (directory / "gemma-localai.yaml").write_text(localai)
    # LocalAI's GBNF refinements: a prefix before the call, and mixed text (llama.cpp grammars).
    prefixed = config.replace("name: gemma-3-270m", "name: gemma-prefix") + \
        "function:\n  grammar: {prefix: \"<tool_call>\\n\"}\n"
    (directory / "gemma-prefix.yaml").write_text(prefixed)
    mixed = config.replace("name: gemma-3-270m", "name: gemma-mixed") + \
        "function:\n  grammar: {mixed_mode: true, expect_strings_after_json: true}\n"
    (directory / "gemma-mixed.yaml").write_text(mixed)
    with launched([str(directory)], directory / "server.log") as running:
        yield openai.OpenAI(base_url=running["base"] + "/v1", api_key="unused", max_retries=0, timeout=300)


def tool(index: int) -> dict:
    return {"type": "function", "function": {"name": f"tool_{index}", "description": f"Tool number {index}",
                                             "parameters": SCHEMAS[index]}}


def forced_call(client, index: int, stream: bool) -> tuple[str, str]:
    """(name, arguments) of a required call to tool ``index``, checking the response's shape."""
    kwargs = dict(model="gemma-3-270m", messages=[{"role": "user", "content": PROMPTS[index % len(PROMPTS)]}],
                  tools=[tool(index)], tool_choice="required", temperature=0.8, seed=index, max_tokens=400)
    if not stream:
        choice = client.chat.completions.create(**kwargs).choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        [call] = choice.message.tool_calls
        return call.function.name, call.function.arguments
    name, arguments, finishes, ids = None, "", [], set()
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        choice = chunk.choices[0]
        assert not choice.delta.content, "call JSON leaked into content"
        for call in choice.delta.tool_calls or ():
            name = call.function.name or name
            arguments += call.function.arguments or ""
            if call.id:
                ids.add(call.id)
        if choice.finish_reason:
            finishes.append(choice.finish_reason)
    assert finishes == ["tool_calls"] and len(ids) == 1, (index, finishes, ids)
    return name, arguments


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_required_tool_calls_always_parse_and_fit_their_schema(client, stream) -> None:
    with ThreadPoolExecutor(4) as pool:  # the model serves four slots
        calls = list(pool.map(lambda i: forced_call(client, i, stream), range(len(SCHEMAS))))
    for index, (name, arguments) in enumerate(calls):
        assert name == f"tool_{index}"
        jsonschema.validate(json.loads(arguments), SCHEMAS[index])


def with_bounded_strings(schema: object) -> object:
    """Give every open string a maxLength, as a user of a small model should: response_format
    schemas are taken as they are (tool arguments get a guard of their own)."""
    if isinstance(schema, list):
        return [with_bounded_strings(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: with_bounded_strings(v) if k not in ("enum", "const") else v for k, v in schema.items()}
    if "string" in (out.get("type") if isinstance(out.get("type"), list) else [out.get("type")]) \
            and not {"maxLength", "pattern", "enum", "const"} & out.keys():
        out["maxLength"] = 60
    return out


def test_json_schema_outputs_validate(client) -> None:
    def answer(index: int) -> str:
        schema = with_bounded_strings(SCHEMAS[index])
        reply = client.chat.completions.create(
            model="gemma-3-270m", messages=[{"role": "user", "content": "Answer in JSON."}], temperature=0.8,
            seed=100 + index, max_tokens=400,
            response_format={"type": "json_schema", "json_schema": {"name": f"s{index}", "schema": schema,
                                                                     "strict": True}})
        assert reply.choices[0].finish_reason == "stop", index
        return reply.choices[0].message.content

    with ThreadPoolExecutor(4) as pool:
        outputs = list(pool.map(answer, range(len(SCHEMAS))))
    for index, text in enumerate(outputs):
        jsonschema.validate(json.loads(text), SCHEMAS[index])


def test_a_tool_result_round_trips_and_none_never_calls(client) -> None:
    weather = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                                "parameters": SCHEMAS[0]}}
    first = client.chat.completions.create(
        model="gemma-3-270m", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[weather],
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, temperature=0, max_tokens=100)
    call = first.choices[0].message.tool_calls[0]
    followup = client.chat.completions.create(model="gemma-3-270m", tools=[weather], temperature=0, max_tokens=20,
                                              tool_choice="none", messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"},
    ])
    choice = followup.choices[0]
    assert choice.message.tool_calls is None and choice.finish_reason in ("stop", "length")
    assert choice.message.content
    for seed in range(5):  # none: never a call, whatever the model writes
        reply = client.chat.completions.create(
            model="gemma-3-270m", messages=[{"role": "user", "content": "Call get_weather for Rome."}],
            tools=[weather], tool_choice="none", temperature=1.0, seed=seed, max_tokens=30)
        assert reply.choices[0].message.tool_calls is None


@pytest.mark.parametrize("stream", [False, True])
def test_localais_call_grammar_makes_every_auto_reply_a_fitting_call_or_an_answer(client, stream) -> None:
    weather = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                                "parameters": with_bounded_strings(SCHEMAS[1])}}
    kinds = set()
    for seed, prompt in enumerate(PROMPTS[:4]):
        request = dict(model="gemma-localai", messages=[{"role": "user", "content": prompt}], tools=[weather],
                       temperature=1.0, seed=seed, max_tokens=100)
        if stream:
            calls: dict[int, dict] = {}
            content, finish = "", None
            for chunk in client.chat.completions.create(**request, stream=True):
                choice = chunk.choices[0]
                content += choice.delta.content or ""
                finish = choice.finish_reason or finish
                for part in choice.delta.tool_calls or ():
                    held = calls.setdefault(part.index, {"name": "", "arguments": ""})
                    held["name"] += part.function.name or ""
                    held["arguments"] += part.function.arguments or ""
            found = list(calls.values())
        else:
            choice = client.chat.completions.create(**request).choices[0]
            content, finish = choice.message.content or "", choice.finish_reason
            found = [{"name": c.function.name, "arguments": c.function.arguments}
                     for c in choice.message.tool_calls or ()]
        if finish == "length":
            continue  # cut inside the grammar: neither, and said so
        if found:
            assert finish == "tool_calls" and not content
            for call in found:
                assert call["name"] == "get_weather"
                jsonschema.validate(json.loads(call["arguments"]), weather["function"]["parameters"])
            kinds.add("call")
        else:  # the answer function: its message is the reply, never the JSON around it
            assert finish == "stop" and '"arguments"' not in content and not content.startswith("{")
            kinds.add("answer")
    assert kinds, "every reply was cut by max_tokens"


def test_a_pydantic_tool_schema_with_defs_is_forced_and_fits(client) -> None:
    pydantic = pytest.importorskip("pydantic")

    class Address(pydantic.BaseModel):
        city: str = pydantic.Field(max_length=20)
        zip_code: str = pydantic.Field(max_length=8)

    class Person(pydantic.BaseModel):
        name: str = pydantic.Field(max_length=20)
        home: Address
        others: list[Address] = pydantic.Field(max_length=2)

    schema = Person.model_json_schema()
    assert "$defs" in schema  # what every pydantic model with a nested one produces
    reply = client.chat.completions.create(
        model="gemma-3-270m", messages=[{"role": "user", "content": "Register Ann from Paris."}], max_tokens=300,
        tools=[{"type": "function", "function": {"name": "register", "parameters": schema}}],
        tool_choice={"type": "function", "function": {"name": "register"}}, temperature=0.5, seed=3)
    [call] = reply.choices[0].message.tool_calls
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, schema)
    Person.model_validate(arguments)


def test_a_forced_calls_unusable_schema_names_tools(client) -> None:
    broken = {"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}}
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="gemma-3-270m", messages=[{"role": "user", "content": "Go."}], max_tokens=20,
            tools=[{"type": "function", "function": {"name": "f", "parameters": broken}}], tool_choice="required")
    error = refused.value.body
    assert error["param"] == "tools" and error["message"].startswith("tools: the JSON Schema cannot be used: ")


def test_structured_output_with_auto_tools_is_a_valid_call_or_a_valid_answer(client) -> None:
    """response_format applies to the final answer: with tools on auto the model may call one
    (its arguments fitting the tool) or answer in the schema, never a half-call holding the
    answer (the Agents SDK's output_type with tools, pydantic-ai's NativeOutput, langchain's
    with_structured_output on a model with bound tools)."""
    weather = obj({"city": {"type": "string", "maxLength": 30}})
    answer = obj({"country": {"type": "string", "maxLength": 30}, "capital": {"type": "string", "maxLength": 30}})
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                               "parameters": weather}}]
    ways = set()
    for seed, question in enumerate(["What is the weather in Paris? Call get_weather.",
                                     "Which country has Paris as its capital? Answer in JSON.",
                                     "Tell me about France.", "Weather in Rome please."]):
        reply = client.chat.completions.create(
            model="gemma-3-270m", messages=[{"role": "user", "content": question}], tools=tools, tool_choice="auto",
            temperature=0.7, seed=seed, max_tokens=120,
            response_format={"type": "json_schema", "json_schema": {"name": "fact", "schema": answer}})
        choice = reply.choices[0]
        if choice.message.tool_calls:
            [call] = choice.message.tool_calls
            assert call.function.name == "get_weather" and choice.finish_reason == "tool_calls"
            jsonschema.validate(json.loads(call.function.arguments), weather)
            ways.add("call")
        else:
            jsonschema.validate(json.loads(choice.message.content), answer)
            ways.add("answer")
    # Under the answer schema alone (before the union) no call could be written at all.
    assert "call" in ways, ways


WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                                 "parameters": obj({"city": S})}}
FORMATS = [  # what each gallery template family asks the model to write (launcher/tool_formats.py)
    '<function=get_weather>{"city": "Boston"}</function>',  # llama3.1-instruct
    '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Boston"}}]',  # mistral-0.3
    '<scratchpad>Weather is asked.</scratchpad>\n<tool_call>\n{"name": "get_weather", '
    '"arguments": {"city": "Boston"}}\n</tool_call>',  # hermes-2-pro
    '[get_weather(city="Boston")]',  # pythonic: LocalAI's AIO gpt-4
]


def _literal_grammar(text: str) -> str:
    return "root ::= " + json.dumps(text)


@pytest.mark.parametrize("written", FORMATS, ids=["function-tag", "mistral", "hermes-scratchpad", "pythonic"])
def test_each_gallery_call_syntax_comes_back_as_tool_calls_on_the_real_model(client, written) -> None:
    """The model is held to the syntax by a grammar (a 270M model would not write it unaided);
    tool_choice auto, whole and streamed, then the second turn of the conversation."""
    ask = dict(model="gemma-3-270m", messages=[{"role": "user", "content": "Weather in Boston?"}],
               tools=[WEATHER_TOOL], tool_choice="auto", max_tokens=80, extra_body={"grammar": _literal_grammar(written)})
    reply = client.chat.completions.create(**ask).choices[0]
    assert reply.finish_reason == "tool_calls" and reply.message.content is None
    [call] = reply.message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Boston"})
    chunks = list(client.chat.completions.create(**ask, stream=True))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    streamed = "".join(tc.function.arguments or "" for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ())
    assert content == "" and json.loads(streamed) == {"city": "Boston"}
    follow_up = client.chat.completions.create(
        model="gemma-3-270m", max_tokens=8, tools=[WEATHER_TOOL],
        messages=[*ask["messages"], reply.message.model_dump(exclude_none=True),
                  {"role": "tool", "tool_call_id": call.id, "content": "12 degrees, rain"}])
    assert follow_up.choices[0].message.content


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_grammar_prefix_is_written_before_the_call_and_read_past(client, stream) -> None:
    """function.grammar.prefix: llama.cpp's grammar makes the model write it, then the call;
    the call comes back as tool_calls, the prefix in neither content nor arguments."""
    weather = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                                "parameters": with_bounded_strings(SCHEMAS[1])}}
    request = dict(model="gemma-prefix", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[weather],
                   tool_choice="required", temperature=0.8, seed=3, max_tokens=120)
    if stream:
        chunks = list(client.chat.completions.create(**request, stream=True))
        assert not "".join(c.choices[0].delta.content or "" for c in chunks)
        arguments = "".join(part.function.arguments or "" for c in chunks for part in c.choices[0].delta.tool_calls or ())
        assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["tool_calls"]
    else:
        choice = client.chat.completions.create(**request).choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        [call] = choice.message.tool_calls
        arguments = call.function.arguments
    jsonschema.validate(json.loads(arguments), weather["function"]["parameters"])


def test_mixed_mode_lets_the_model_write_text_or_calls_and_either_comes_back_well_formed(client) -> None:
    """function.grammar.mixed_mode: llama.cpp takes the composed grammar (a 400 otherwise), and
    each reply is text, or a call that fits, found in the text around it."""
    weather = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                                "parameters": with_bounded_strings(SCHEMAS[1])}}
    for seed, prompt in enumerate(PROMPTS[:4]):
        choice = client.chat.completions.create(
            model="gemma-mixed", messages=[{"role": "user", "content": prompt}], tools=[weather], temperature=1.0,
            seed=seed, max_tokens=60).choices[0]
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls"
            for call in choice.message.tool_calls:
                jsonschema.validate(json.loads(call.function.arguments), weather["function"]["parameters"])
        else:
            assert choice.finish_reason in ("stop", "length") and choice.message.content, choice
