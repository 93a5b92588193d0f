"""Anthropic's Messages API over the fake backend, driven by the official ``anthropic`` client
(its requests, its parsing of our answers and events), plus the raw shapes it does not check."""

from __future__ import annotations

import json
import re
import typing

import anthropic
import pytest
from anthropic.types import RawMessageStreamEvent
from starlette.testclient import TestClient

from modelyard.launcher.app import create_app

from .fakes import FakePool, make_plan

# Each event type's model in the SDK, by its `type`: the raw events are validated against them.
EVENT_TYPES = {typing.get_args(cls.model_fields["type"].annotation)[0]: cls
               for cls in typing.get_args(typing.get_args(RawMessageStreamEvent)[0])}
# Anthropic's documented order: message_start, then blocks (start, deltas, stop), message_delta, message_stop.
ORDER = re.compile(r"^S(B(D)*E)*MX$")
LETTERS = {"message_start": "S", "content_block_start": "B", "content_block_delta": "D", "content_block_stop": "E",
           "message_delta": "M", "message_stop": "X"}

WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                            "required": ["city"]}}


@pytest.fixture
def sdk(client):
    return anthropic.Anthropic(api_key="unused", base_url=str(client.base_url), http_client=client, max_retries=0)


def test_a_plain_message_comes_back_as_a_text_block_with_usage(sdk, pool) -> None:
    message = sdk.messages.create(model="chat", max_tokens=32, system="Be brief.",
                                  messages=[{"role": "user", "content": "hello"}])
    assert message.type == "message" and message.role == "assistant" and message.model == "chat"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "Hello world, this is a fake model."
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens > 0 and message.usage.output_tokens == 9
    # The system text and the turn went through the model's chat template.
    assert pool.requests[-1][1].prompt == "<system>Be brief.\n<user>hello\n<assistant>"
    assert pool.requests[-1][1].max_tokens == 32


def test_sampling_and_stop_sequences_reach_the_generation(sdk, pool) -> None:
    # The SDK dropped temperature/top_p/top_k from its signature; older clients still send them.
    message = sdk.messages.create(model="chat", max_tokens=32, extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 7},
                                  stop_sequences=[" fake"], messages=[{"role": "user", "content": "hi"}])
    generation = pool.requests[-1][1]
    assert (generation.temperature, generation.top_p, generation.top_k) == (0.5, 0.9, 7)
    assert message.content[0].text == "Hello world, this is a"
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == " fake"


def test_the_models_own_end_of_turn_stop_is_end_turn_not_a_stop_sequence(sdk, pool) -> None:
    message = sdk.messages.create(model="chat", max_tokens=32,
                                  messages=[{"role": "user", "content": "[echo] <end> and more"}])
    assert message.stop_reason == "end_turn" and message.stop_sequence is None


def test_max_tokens_cuts_the_answer_with_max_tokens(sdk) -> None:
    message = sdk.messages.create(model="chat", max_tokens=3, messages=[{"role": "user", "content": "hi"}])
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 3


def test_a_streamed_message_follows_anthropics_event_order(sdk) -> None:
    with sdk.messages.stream(model="chat", max_tokens=32, messages=[{"role": "user", "content": "hi"}]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds[1] == "content_block_start" and "content_block_stop" in kinds
    assert kinds[-2] == "message_delta"
    assert final.content[0].text == "Hello world, this is a fake model."
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 9 and final.usage.input_tokens > 0


def test_a_tool_use_round_trip(sdk, pool) -> None:
    first = sdk.messages.create(model="chat", max_tokens=64, tools=[WEATHER],
                                messages=[{"role": "user", "content": "[call:get_weather] Paris?"}])
    assert first.stop_reason == "tool_use"
    [use] = [block for block in first.content if block.type == "tool_use"]
    assert use.name == "get_weather" and use.input == {"city": "Paris", "unit": "C"} and use.id
    second = sdk.messages.create(model="chat", max_tokens=64, tools=[WEATHER], messages=[
        {"role": "user", "content": "Paris?"},
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18 C"},
                                     {"type": "text", "text": "And so?"}]},
    ])
    assert second.stop_reason == "end_turn" and second.content[0].type == "text"
    prompt = pool.requests[-1][1].prompt
    assert "18 C" in prompt and "And so?" in prompt and prompt.index("18 C") < prompt.index("And so?")


def test_a_streamed_tool_use_is_one_block_with_input_json_deltas(sdk) -> None:
    with sdk.messages.stream(model="chat", max_tokens=64, tools=[WEATHER],
                             tool_choice={"type": "tool", "name": "get_weather"},
                             messages=[{"role": "user", "content": "Paris?"}]) as stream:
        events = list(stream)
        final = stream.get_final_message()
    starts = [e.content_block.type for e in events if e.type == "content_block_start"]
    assert starts == ["tool_use"]
    assert any(e.type == "content_block_delta" and e.delta.type == "input_json_delta" for e in events)
    assert final.stop_reason == "tool_use" and final.content[0].name == "get_weather"
    assert isinstance(final.content[0].input, dict)


def test_structured_output_constrains_the_answer_to_the_schema(sdk, pool) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    message = sdk.messages.create(model="chat", max_tokens=64, messages=[{"role": "user", "content": "2+2?"}],
                                  output_config={"format": {"type": "json_schema", "schema": schema}, "effort": "low"})
    assert json.loads(message.content[0].text) == {"answer": 1}  # the fake backend: a small instance of the schema
    assert pool.requests[-1][1].json_schema == schema


def test_count_tokens_counts_the_rendered_prompt(sdk) -> None:
    short = sdk.messages.count_tokens(model="chat", messages=[{"role": "user", "content": "hi"}])
    longer = sdk.messages.count_tokens(model="chat", system="You answer questions about the weather.",
                                       messages=[{"role": "user", "content": "hi"}])
    assert 0 < short.input_tokens < longer.input_tokens


@pytest.mark.parametrize(("body", "status", "fragment"), [
    ({"max_tokens": 8, "messages": []}, 400, "messages"),
    ({"max_tokens": 8, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}, 400, "image"),
    ({"max_tokens": 8, "messages": [{"role": "user", "content": "x"}],
      "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, 400, "web_search"),
    ({"model": "nope", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}, 404, "nope"),
    ({"max_tokens": 8, "messages": [{"role": "robot", "content": "x"}]}, 400, "role"),
])
def test_bad_requests_get_anthropics_error_shape(client, body, status, fragment) -> None:
    response = client.post("/v1/messages", json=body)
    assert response.status_code == status
    error = response.json()
    assert error["type"] == "error" and fragment in error["error"]["message"]
    assert error["error"]["type"] == ("not_found_error" if status == 404 else "invalid_request_error")


def test_the_sdk_raises_its_own_error_types(sdk) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        sdk.messages.create(model="nope", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert "nope" in caught.value.message


def test_x_api_key_authenticates_and_a_wrong_key_is_anthropics_401() -> None:
    app = create_app(make_plan(), pool=FakePool(make_plan()), api_keys=["s3cret"])
    with TestClient(app) as client:
        good = anthropic.Anthropic(api_key="s3cret", base_url=str(client.base_url), http_client=client,
                                   max_retries=0)
        assert good.messages.create(model="chat", max_tokens=8, messages=[{"role": "user", "content": "x"}]).content
        response = client.post("/v1/messages", headers={"x-api-key": "wrong"},
                               json={"max_tokens": 8, "messages": [{"role": "user", "content": "x"}]})
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("extra", [
    {"messages": [{"role": "user", "content": "hi"}]},
    {"messages": [{"role": "user", "content": "[call:get_weather] Paris?"}], "tools": [WEATHER]},
    {"messages": [{"role": "user", "content": "Paris?"}], "tools": [WEATHER],
     "tool_choice": {"type": "tool", "name": "get_weather"}},
])
def test_raw_events_follow_the_documented_order_and_schemas(client, extra) -> None:
    with client.stream("POST", "/v1/messages", json={"model": "chat", "max_tokens": 64, "stream": True,
                                                     **extra}) as response:
        lines = list(response.iter_lines())
    events = [(lines[i].removeprefix("event: "), json.loads(lines[i + 1].removeprefix("data: ")))
              for i in range(len(lines) - 1) if lines[i].startswith("event: ")]
    for name, data in events:
        assert name == data["type"]
        EVENT_TYPES[name].model_validate(data)  # field by field, against the SDK's schema
    assert ORDER.match("".join(LETTERS[name] for name, _ in events)), [name for name, _ in events]
    indexes = [data["index"] for name, data in events if name == "content_block_start"]
    assert indexes == list(range(len(indexes)))
    assert events[-2][1]["usage"]["output_tokens"] > 0


def test_a_failure_mid_stream_is_an_error_event(client) -> None:
    with client.stream("POST", "/v1/messages", json={
            "model": "chat", "max_tokens": 64, "stream": True,
            "messages": [{"role": "user", "content": "[dead]"}]}) as response:
        assert response.status_code == 200
        events = [line.removeprefix("event: ") for line in response.iter_lines() if line.startswith("event: ")]
    assert events[0] == "message_start" and events[-1] == "error"


def test_the_messages_routes_are_in_the_openapi_document(client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "post" in paths["/v1/messages"] and "post" in paths["/v1/messages/count_tokens"]
    body = paths["/v1/messages"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/AnthropicMessagesRequest"}
