"""OpenAI's Responses API over the fake backend, driven by the official ``openai`` client; every
streamed event is validated against the SDK's event types (generated from OpenAI's OpenAPI spec)."""

from __future__ import annotations

import json
import typing

import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from modelyard.launcher import responses_api

# Each event type's model in the SDK (generated from OpenAI's OpenAPI spec), by its `type`.
EVENT_TYPES = {typing.get_args(cls.model_fields["type"].annotation)[0]: cls
               for cls in typing.get_args(typing.get_args(ResponseStreamEvent)[0])}


def check_event(event: dict) -> None:
    """The event validated, field by field, against the spec's schema for its type."""
    EVENT_TYPES[event["type"]].model_validate(event)
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture
def sdk(client):
    return openai.OpenAI(api_key="unused", base_url=f"{client.base_url}/v1", http_client=client, max_retries=0)


def _strict(response: openai.types.responses.Response) -> Response:
    """The response validated field by field (the SDK itself constructs it without checking)."""
    return Response.model_validate(response.model_dump(mode="json", exclude_unset=True, warnings=False))


def test_a_string_input_answers_a_message_item(sdk, pool) -> None:
    response = sdk.responses.create(model="chat", input="hello", instructions="Be brief.", max_output_tokens=32)
    _strict(response)
    assert response.status == "completed" and response.object == "response"
    assert response.output_text == "Hello world, this is a fake model."
    assert [item.type for item in response.output] == ["message"]
    assert response.usage.output_tokens == 9 and response.usage.input_tokens > 0
    assert pool.requests[-1][1].prompt == "<system>Be brief.\n<user>hello\n<assistant>"
    assert pool.requests[-1][1].max_tokens == 32


def test_max_output_tokens_makes_it_incomplete(sdk) -> None:
    response = sdk.responses.create(model="chat", input="hello", max_output_tokens=2)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"


def test_the_stream_is_typed_events_in_order(sdk) -> None:
    with sdk.responses.stream(model="chat", input="hello") as stream:
        events = list(stream)
        final = stream.get_final_response()
    for event in events:
        check_event(event.model_dump(mode="json", exclude_unset=True, warnings=False))
    kinds = [event.type for event in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == final.output_text
    assert final.output_text == "Hello world, this is a fake model."


def test_a_function_tool_round_trip_with_previous_response_id(sdk, pool) -> None:
    first = sdk.responses.create(model="chat", input="Paris?", tools=[WEATHER], tool_choice="required")
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and set(json.loads(call.arguments)) == {"city"}
    second = sdk.responses.create(model="chat", previous_response_id=first.id, tools=[WEATHER], input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": "18 C"}])
    assert second.output_text and second.previous_response_id == first.id
    prompt = pool.requests[-1][1].prompt
    # The stored turn (the question, the call: an assistant turn) came first, then the result.
    assert prompt.endswith("<user>Paris?\n<assistant>\n<tool>18 C\n<assistant>")


def test_a_streamed_function_call_has_argument_deltas(sdk) -> None:
    with sdk.responses.stream(model="chat", input="Paris?", tools=[WEATHER],
                              tool_choice={"type": "function", "name": "get_weather"}) as stream:
        events = list(stream)
        final = stream.get_final_response()
    for event in events:
        check_event(event.model_dump(mode="json", exclude_unset=True, warnings=False))
    kinds = [event.type for event in events]
    assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    [call] = final.output
    assert call.type == "function_call" and call.name == "get_weather" and json.loads(call.arguments)


def test_structured_output_follows_the_schema(sdk, pool) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False}
    response = sdk.responses.create(model="chat", input="n?", text={"format": {
        "type": "json_schema", "name": "answer", "schema": schema, "strict": True}})
    assert set(json.loads(response.output_text)) == {"n"}
    assert pool.requests[-1][1].json_schema == schema


def test_stored_responses_can_be_read_listed_and_deleted(sdk) -> None:
    response = sdk.responses.create(model="chat", input="hello")
    assert sdk.responses.retrieve(response.id).output_text == response.output_text
    items = sdk.responses.input_items.list(response.id)
    assert [item.type for item in items.data] == ["message"]
    with pytest.raises(openai.BadRequestError, match="background"):
        sdk.responses.cancel(response.id)
    sdk.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(response.id)
    unstored = sdk.responses.create(model="chat", input="hello", store=False)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(unstored.id)


def test_the_store_is_bounded(monkeypatch) -> None:
    monkeypatch.setattr(responses_api, "MAX_STORED", 3)
    store = responses_api.ResponseStore()
    for i in range(5):
        store.put({"id": f"r{i}", "output": []}, [])
    assert list(store.entries) == ["r2", "r3", "r4"]
    monkeypatch.setattr(responses_api, "MAX_STORED", 10)
    monkeypatch.setattr(responses_api, "MAX_STORED_CHARS", 200)
    store.put({"id": "big", "output": [], "text": "x" * 90}, [])
    assert list(store.entries) == ["r3", "r4", "big"]
    assert store.chars == sum(stored.size for stored in store.entries.values()) <= 200


@pytest.mark.parametrize(("body", "status", "fragment"), [
    ({"model": "chat", "input": "x", "tools": [{"type": "web_search"}]}, 400, "web_search"),
    ({"model": "chat", "input": [{"type": "message", "role": "user", "content": [
        {"type": "input_image", "image_url": "x"}]}]}, 400, "input_image"),
    ({"model": "chat", "input": "x", "previous_response_id": "resp_nope"}, 404, "resp_nope"),
    ({"model": "chat", "input": "x", "background": True}, 400, "background"),
    ({"model": "chat", "input": [{"type": "item_reference", "id": "x"}]}, 400, "item_reference"),
    ({"model": "chat", "input": "x", "text": {"format": {"type": "xml"}}}, 400, "xml"),
    ({"model": "chat", "input": ""}, 400, "input"),
    ({"model": "nope", "input": "x"}, 404, "nope"),
])
def test_bad_requests_are_openai_4xx(client, body, status, fragment) -> None:
    response = client.post("/v1/responses", json=body)
    assert response.status_code == status
    assert fragment in response.json()["error"]["message"]


def test_a_failure_mid_stream_is_response_failed(client) -> None:
    with client.stream("POST", "/v1/responses", json={"model": "chat", "input": "[dead]", "stream": True}) as response:
        assert response.status_code == 200
        data = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1]["type"] == "response.failed" and data[-1]["response"]["error"]["message"]
    for event in data:
        check_event(event)
