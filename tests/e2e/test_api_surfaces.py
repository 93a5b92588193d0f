"""The other API surfaces on the real Gemma 3 270M, each driven by its own official client against
`modelyard launch` started as a user starts it: OpenAI's Responses API (``openai``), Anthropic's
Messages (``anthropic``), Ollama's API (``ollama``). A 270M model answers poorly: what is checked
is that each client gets what it parses, and that forced calls (a grammar) round-trip."""

from __future__ import annotations

import json
import typing

import anthropic
import ollama
import openai
import pytest
from openai.types.responses import ResponseStreamEvent

from ..conftest import REPO
from .server import gemma_gallery_over_http, launched
from .test_embeddings import CONFIG as EMBEDDINGS_MODEL

pytestmark = [pytest.mark.real_model, pytest.mark.slow]
MODEL = "gemma-3-270m"
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}
EVENT_TYPES = {typing.get_args(cls.model_fields["type"].annotation)[0]: cls
               for cls in typing.get_args(typing.get_args(ResponseStreamEvent)[0])}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    directory = tmp_path_factory.mktemp("models")
    (directory / "gemma.yaml").write_text((REPO / "examples" / "gemma-3-270m.yaml").read_text())
    (directory / "embed.yaml").write_text(EMBEDDINGS_MODEL)
    with launched([str(directory)], directory / "server.log") as running:
        yield running["base"]


# --- OpenAI's Responses API ------------------------------------------------------------------


@pytest.fixture(scope="module")
def responses(base):
    return openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120).responses


def test_responses_plain_and_streamed_agree_at_temperature_0(responses) -> None:
    whole = responses.create(model=MODEL, input="Name three colours.", max_output_tokens=24, temperature=0)
    assert whole.status in ("completed", "incomplete") and whole.output_text
    assert whole.usage.output_tokens > 0 and whole.usage.input_tokens > 0
    # Not responses.stream(): its final-response helper knows only response.completed, and a reply
    # cut by max_output_tokens ends with response.incomplete (as OpenAI's own do).
    events = list(responses.create(model=MODEL, input="Name three colours.", max_output_tokens=24, temperature=0,
                                   stream=True))
    final = events[-1].response
    for event in events:  # each against the spec's schema for its type
        EVENT_TYPES[event.type].model_validate(event.model_dump(mode="json", exclude_unset=True, warnings=False))
    assert events[0].type == "response.created" and events[-1].type == f"response.{final.status}"
    assert final.status == whole.status and final.output_text == whole.output_text


def test_responses_function_tool_round_trip_and_previous_response_id(responses) -> None:
    tool = {"type": "function", "name": "get_weather", "description": "The weather in a city",
            "parameters": WEATHER_SCHEMA}
    first = responses.create(model=MODEL, input="What is the weather in Paris?", tools=[tool],
                             tool_choice="required", max_output_tokens=60)
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and isinstance(json.loads(call.arguments)["city"], str)
    second = responses.create(model=MODEL, previous_response_id=first.id, tools=[tool], max_output_tokens=24,
                              input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert second.previous_response_id == first.id and second.output
    assert responses.retrieve(second.id).id == second.id


def test_responses_structured_output_parses(responses) -> None:
    schema = {"type": "object", "properties": {"colour": {"type": "string", "maxLength": 16}}, "required": ["colour"],
              "additionalProperties": False}
    response = responses.create(model=MODEL, input="Name a colour.", max_output_tokens=40, text={"format": {
        "type": "json_schema", "name": "colour", "schema": schema, "strict": True}})
    assert isinstance(json.loads(response.output_text)["colour"], str)


# --- Anthropic's Messages --------------------------------------------------------------------


@pytest.fixture(scope="module")
def claude(base):
    return anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0, timeout=120)


def test_messages_plain_and_streamed(claude) -> None:
    message = claude.messages.create(model=MODEL, max_tokens=24, system="Answer briefly.",
                                     messages=[{"role": "user", "content": "Name three colours."}])
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason in ("end_turn", "max_tokens") and message.usage.output_tokens > 0
    with claude.messages.stream(model=MODEL, max_tokens=24,
                                messages=[{"role": "user", "content": "Name three colours."}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].text == text and final.usage.output_tokens > 0


def test_messages_tool_use_round_trip(claude) -> None:
    tool = {"name": "get_weather", "description": "The weather in a city", "input_schema": WEATHER_SCHEMA}
    question = {"role": "user", "content": "What is the weather in Paris?"}
    first = claude.messages.create(model=MODEL, max_tokens=60, tools=[tool], messages=[question],
                                   tool_choice={"type": "tool", "name": "get_weather"})
    [use] = [block for block in first.content if block.type == "tool_use"]
    assert first.stop_reason == "tool_use" and isinstance(use.input["city"], str)
    second = claude.messages.create(model=MODEL, max_tokens=24, tools=[tool], messages=[
        question, {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]}])
    assert second.content and second.stop_reason in ("end_turn", "max_tokens", "tool_use")
    counted = claude.messages.count_tokens(model=MODEL, messages=[question])
    assert 5 < counted.input_tokens < 100


# --- Ollama's API ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local(base):
    return ollama.Client(host=base, timeout=120)


def test_ollama_chat_streamed_chat_and_generate(local) -> None:
    options = {"temperature": 0, "num_predict": 16, "seed": 1}
    reply = local.chat(model=MODEL, messages=[{"role": "user", "content": "Name three colours."}], options=options)
    assert reply.done and reply.message.content and reply.eval_count > 0
    streamed = list(local.chat(model=MODEL, messages=[{"role": "user", "content": "Name three colours."}],
                               options=options, stream=True))
    assert "".join(part.message.content for part in streamed) == reply.message.content
    assert streamed[-1].done and streamed[-1].eval_count == reply.eval_count
    generated = local.generate(model=f"{MODEL}:latest", prompt="Name three colours.", options=options)
    assert generated.response == reply.message.content  # the same chat template, the same prompt
    schema = {"type": "object", "properties": {"colour": {"type": "string", "maxLength": 16}}, "required": ["colour"]}
    shaped = local.chat(model=MODEL, messages=[{"role": "user", "content": "Name a colour."}], format=schema,
                        options={"num_predict": 40})
    assert isinstance(json.loads(shaped.message.content)["colour"], str)


def test_ollama_embed_tags_show_and_ps(local) -> None:
    vectors = local.embed(model="gemma-embed", input=["a cat", "a dog"]).embeddings
    assert len(vectors) == 2 and len(vectors[0]) == 640
    assert abs(sum(x * x for x in vectors[0]) - 1) < 1e-4
    assert len(local.embeddings(model="gemma-embed", prompt="a cat").embedding) == 640
    listed = {m.model: m for m in local.list().models}
    assert set(listed) == {MODEL, "gemma-embed"}
    assert listed[MODEL].details.family == "gemma3" and listed[MODEL].details.quantization_level == "Q4_K_M"
    assert listed[MODEL].size > 200_000_000
    shown = local.show(MODEL)
    assert shown.modelinfo["gemma3.context_length"] == 4096 and "<start_of_turn>" in shown.template
    assert MODEL in {m.model for m in local.ps().models}  # loaded by the requests above


def test_ollama_pull_installs_from_the_gallery_with_progress(tmp_path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    with gemma_gallery_over_http(tmp_path) as (index, _, weights):
        with launched([str(REPO / "examples" / "gemma-3-270m.yaml"), "--models-dir", str(models),
                       "--gallery", f"local={index}"], tmp_path / "server.log") as running:
            local = ollama.Client(host=running["base"], timeout=300)
            parts = list(local.pull("local@gemma-http", stream=True))
            assert parts[0].status == "pulling manifest" and parts[-1].status == "success"
            downloads = [part for part in parts if part.status == "pulling gemma.gguf"]
            assert downloads and downloads[-1].completed == downloads[-1].total == len(weights)
            assert "gemma-http" in {m.model for m in local.list().models}
            reply = local.chat(model="gemma-http", messages=[{"role": "user", "content": "Say hello."}],
                               options={"num_predict": 8})
            assert reply.message.content
            with pytest.raises(ollama.ResponseError):  # an entry no gallery has: an error line
                list(local.pull("local@nothing", stream=True))
