"""Ollama's API over the fake backend, driven by the official ``ollama`` client, plus the raw
NDJSON lines and error shapes it does not check."""

from __future__ import annotations

import json
import math

import ollama
import pytest

from modelyard.launcher.ollama_api import OLLAMA_VERSION, keep_alive_seconds

from .fakes import make_plan

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


@pytest.fixture
def sdk(client):
    sdk = ollama.Client(host=str(client.base_url))
    sdk._client = client  # the same httpx API, served in-process
    return sdk


def test_chat_answers_whole_with_counts(sdk, pool) -> None:
    reply = sdk.chat(model="chat", messages=[{"role": "system", "content": "Be brief."},
                                             {"role": "user", "content": "hello"}], stream=False)
    assert reply.message.role == "assistant" and reply.message.content == "Hello world, this is a fake model."
    assert reply.done and reply.done_reason == "stop" and reply.eval_count == 9 and reply.prompt_eval_count > 0
    assert reply.total_duration > 0
    assert pool.requests[-1][1].prompt == "<system>Be brief.\n<user>hello\n<assistant>"


def test_chat_streams_ndjson_by_default(sdk) -> None:
    parts = list(sdk.chat(model="chat", messages=[{"role": "user", "content": "hello"}], stream=True))
    assert "".join(p.message.content for p in parts) == "Hello world, this is a fake model."
    assert [p.done for p in parts].count(True) == 1 and parts[-1].done
    assert parts[-1].done_reason == "stop" and parts[-1].eval_count == 9 and parts[-1].eval_duration > 0


def test_options_map_onto_sampling(sdk, pool) -> None:
    reply = sdk.chat(model="chat", messages=[{"role": "user", "content": "hi"}], stream=False, options={
        "num_predict": 3, "temperature": 0.4, "top_k": 5, "top_p": 0.8, "min_p": 0.1, "repeat_penalty": 1.2,
        "seed": 7, "stop": ["zzz"], "num_gpu": 99})
    generation = pool.requests[-1][1]
    assert (generation.max_tokens, generation.temperature, generation.top_k, generation.top_p) == (3, 0.4, 5, 0.8)
    assert (generation.min_p, generation.repeat_penalty, generation.seed) == (0.1, 1.2, 7)
    assert "zzz" in generation.stop
    assert reply.done_reason == "length" and reply.eval_count == 3


def test_num_ctx_below_the_models_context_bounds_the_answer(sdk, client, pool) -> None:
    sdk.chat(model="chat", messages=[{"role": "user", "content": "hi"}], stream=False, options={"num_ctx": 100})
    prompt_tokens = len(pool.backends["chat"].tokenize(pool.requests[-1][1].prompt, True))
    assert pool.requests[-1][1].max_tokens == min(64, 100 - prompt_tokens)  # the YAML says 64
    sdk.chat(model="chat", messages=[{"role": "user", "content": "hi"}], stream=False, options={"num_ctx": 30})
    assert pool.requests[-1][1].max_tokens == 30 - prompt_tokens
    response = client.post("/api/chat", json={"model": "chat", "messages": [{"role": "user", "content": "hi " * 50}],
                                              "options": {"num_ctx": 4}})
    assert response.status_code == 400 and "num_ctx" in response.json()["error"]


def test_format_json_and_a_schema_constrain_the_answer(sdk, pool) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    reply = sdk.chat(model="chat", messages=[{"role": "user", "content": "n?"}], format=schema, stream=False)
    assert set(json.loads(reply.message.content)) == {"n"} and pool.requests[-1][1].json_schema == schema
    sdk.chat(model="chat", messages=[{"role": "user", "content": "n?"}], format="json", stream=False)
    assert pool.requests[-1][1].json_object


def test_a_tool_call_round_trip(sdk, pool) -> None:
    reply = sdk.chat(model="chat", messages=[{"role": "user", "content": "[call:get_weather] Paris?"}],
                     tools=[WEATHER], stream=False)
    [call] = reply.message.tool_calls
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Paris", "unit": "C"}
    streamed = list(sdk.chat(model="chat", messages=[{"role": "user", "content": "[call:get_weather] Paris?"}],
                             tools=[WEATHER], stream=True))
    calls = [c for p in streamed for c in (p.message.tool_calls or ())]
    assert [c.function.name for c in calls] == ["get_weather"]
    second = sdk.chat(model="chat", tools=[WEATHER], stream=False, messages=[
        {"role": "user", "content": "Paris?"}, reply.message,
        {"role": "tool", "content": "18 C", "tool_name": "get_weather"}])
    assert second.message.content and "18 C" in pool.requests[-1][1].prompt


def test_generate_renders_the_chat_template_and_raw_skips_it(sdk, pool) -> None:
    reply = sdk.generate(model="chat", prompt="hello", system="Be brief.", stream=False)
    assert reply.response == "Hello world, this is a fake model." and reply.done
    assert pool.requests[-1][1].prompt == "<system>Be brief.\n<user>hello\n<assistant>"
    sdk.generate(model="chat", prompt="Q: raw", raw=True, stream=False)
    assert pool.requests[-1][1].prompt == "Q: raw"
    parts = list(sdk.generate(model="chat", prompt="hello", stream=True))
    assert "".join(p.response for p in parts) == "Hello world, this is a fake model." and parts[-1].done


def test_an_empty_prompt_loads_and_keep_alive_zero_unloads(sdk, pool) -> None:
    assert sdk.generate(model="chat", prompt="").done_reason == "load"
    assert sdk.generate(model="chat", prompt="", keep_alive=0).done_reason == "unload"
    assert "chat" in pool.unloaded
    assert sdk.chat(model="chat", messages=[], keep_alive="10m").done_reason == "load"


def test_keep_alive_reaches_the_pool(sdk, pool) -> None:
    sdk.chat(model="chat", messages=[{"role": "user", "content": "hi"}], stream=False, keep_alive="1h30m")
    assert pool.keep_alive_s["chat"] == 5400
    sdk.chat(model="chat", messages=[{"role": "user", "content": "hi"}], stream=False, keep_alive=-1)
    assert pool.keep_alive_s["chat"] is None  # forever
    [running] = [m for m in sdk.ps().models if m.model == "chat"]
    assert running.expires_at.year == 9999


@pytest.mark.parametrize(("value", "seconds"), [
    (300, 300.0), ("5m", 300.0), ("1h30m", 5400.0), ("0", 0.0), ("-1", math.inf), (-1, math.inf), ("250ms", 0.25),
    ("30s", 30.0), ("2.5", 2.5)])
def test_keep_alive_durations(value, seconds) -> None:
    assert keep_alive_seconds(value) == seconds


def test_embed_normalizes_and_embeddings_does_not(sdk) -> None:
    reply = sdk.embed(model="embed", input=["a", "bb"])
    assert len(reply.embeddings) == 2
    assert all(abs(sum(x * x for x in vector) - 1) < 1e-6 for vector in reply.embeddings)
    assert reply.prompt_eval_count > 0
    assert len(sdk.embeddings(model="embed", prompt="a").embedding) == len(reply.embeddings[0])


def test_tags_show_and_version(sdk, client) -> None:
    names = [m.model for m in sdk.list().models]
    assert names == [m.name for m in make_plan().models]
    shown = sdk.show("chat")
    assert "completion" in shown.capabilities and "temperature 0.3" in shown.parameters
    assert 'stop "<end>"' in shown.parameters and "<assistant>" in shown.template
    assert "embedding" in sdk.show("embed").capabilities
    assert sdk.show("chat:latest").parameters == shown.parameters  # Ollama's default tag
    assert client.get("/api/version").json() == {"version": OLLAMA_VERSION}


def test_pull_without_a_gallery_is_an_ollama_error(client) -> None:
    response = client.post("/api/pull", json={"model": "gemma3"})
    assert response.status_code == 400 and "gallery" in response.json()["error"]


@pytest.mark.parametrize(("path", "body", "status", "fragment"), [
    ("/api/chat", {"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404, "nope"),
    ("/api/chat", {"model": "chat", "messages": [{"role": "user", "content": "x", "images": ["aGk="]}]}, 400,
     "images"),
    ("/api/chat", {"model": "chat", "messages": [{"role": "robot", "content": "x"}]}, 400, "role"),
    ("/api/chat", {"model": "chat", "messages": [{"role": "user", "content": "x"}], "keep_alive": "soon"}, 400,
     "keep_alive"),
    ("/api/generate", {"model": "chat", "prompt": "x", "template": "{{ .Prompt }}"}, 400, "template"),
    ("/api/generate", {"model": "chat", "prompt": "x", "options": {"temperature": -1}}, 400, "temperature"),
    ("/api/show", {}, 400, "model"),
    ("/api/show", {"model": "nope"}, 404, "nope"),
    ("/api/embed", {"model": "chat", "input": "x"}, 400, "embeddings"),
    ("/api/nothing", {}, 404, "/api/nothing"),
])
def test_bad_requests_get_ollamas_error_shape(client, path, body, status, fragment) -> None:
    response = client.post(path, json=body)
    assert response.status_code == status
    assert list(response.json()) == ["error"] and fragment in response.json()["error"]


def test_a_failure_mid_stream_is_an_error_line(client) -> None:
    with client.stream("POST", "/api/chat", json={"model": "chat", "messages": [{"role": "user", "content": "[dead]"}]}) as response:
        assert response.status_code == 200 and response.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert "error" in lines[-1] and not lines[-1].get("done")


def test_a_client_that_stops_reading_an_ndjson_stream_is_dropped_and_its_lines_closed() -> None:
    import asyncio

    from modelyard.launcher.serving import NdjsonResponse

    closed = []

    async def lines():
        try:
            for i in range(1000):
                yield f'{{"n": {i}}}\n'
        finally:
            closed.append(True)

    async def run() -> list[str]:
        sent: list[str] = []

        async def send(message) -> None:  # the client takes the head and one line, then nothing
            if message["type"] == "http.response.body" and message.get("body"):
                sent.append(message["body"].decode())
                if len(sent) > 1:
                    await asyncio.sleep(3600)

        async def receive():
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        response = NdjsonResponse(lines(), send_timeout=0.2)
        await asyncio.wait_for(response({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send), 5)
        return sent

    sent = asyncio.run(run())
    assert sent[0] == '{"n": 0}\n' and len(sent) == 2 and closed == [True]
