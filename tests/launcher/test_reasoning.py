"""Reasoning blocks leave the content, whole and streamed, as LocalAI's pkg/reasoning does."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from modelyard.compiler.plan import Reasoning
from modelyard.launcher.app import create_app
from modelyard.launcher.reasoning import ReasoningStream, opened_in_prompt, split

from .fakes import FakePool, make_plan

ON = Reasoning()


@pytest.mark.parametrize(("text", "reasoning", "content"), [
    ("<think>plan</think> hello", "plan", " hello"),
    ("a<think> one </think>b<thinking>two</thinking>c", "one\n\ntwo", "abc"),
    ("x [THINK]still going", "still going", "x "),  # never closed: to the end
    ("no tags at all", "", "no tags at all"),
    ("<think></think>answer", "", "answer"),
])
def test_blocks_are_split_off(text, reasoning, content) -> None:
    assert split(text, ON) == (reasoning, content)


def test_settings_disable_strip_and_add_tags() -> None:
    assert split("<think>p</think>a", Reasoning(extract=False)) == ("", "<think>p</think>a")
    assert split("<think>p</think>a", Reasoning(return_reasoning=False)) == ("", "a")
    assert split("<<mine>>p<</mine>>a", Reasoning(tag_pairs=(("<<mine>>", "<</mine>>"),))) == ("p", "a")


def test_a_prompt_that_opens_a_block_puts_the_answer_inside_it() -> None:
    assert opened_in_prompt("<|user|>hi<|assistant|><think>\n", ON) == "<think>"
    assert opened_in_prompt("<think>old</think> reply", ON) is None
    assert opened_in_prompt("<think>\n", Reasoning(prefill=False)) is None
    assert split("weighing it</think>The answer.", ON, "<think>") == ("weighing it", "The answer.")


@given(st.lists(st.sampled_from(["<", "th", "ink>", "</", "think", ">", "a", " b", "\n", "<think>", "</think>",
                                 "[TH", "INK]", "x"]), max_size=20))
def test_streamed_deltas_add_up_to_the_whole_split(pieces) -> None:
    stream = ReasoningStream(ON)
    reasoning = content = ""
    for piece in pieces:
        r, c = stream.feed(piece)
        reasoning, content = reasoning + r, content + c
    r, c = stream.flush()
    whole = split("".join(pieces), ON)
    assert (reasoning + r, content + c) == whole


PLAN = """
- name: thinker
  backend: llama-cpp
  parameters: {model: model.gguf}
  template: {chat_message: "{{ Content }}"}
"""


def test_chat_answers_carry_reasoning_content_whole_and_streamed() -> None:
    plan = make_plan(PLAN)
    with TestClient(create_app(plan, pool=FakePool(plan))) as client:
        body = {"model": "thinker", "messages": [{"role": "user", "content": "[echo]<think>plan it</think>Hello"}]}
        message = client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]
        assert (message["content"], message["reasoning_content"], message["reasoning"]) == (
            "[echo]Hello", "plan it", "plan it")
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
            chunks = [json.loads(line[6:]) for line in response.iter_lines()
                      if line.startswith("data: ") and line != "data: [DONE]"]
        deltas = [c["choices"][0]["delta"] for c in chunks]
        assert "".join(d.get("reasoning_content", "") for d in deltas) == "plan it"
        assert "".join(d.get("content") or "" for d in deltas) == "[echo]Hello"
        plain = client.post("/v1/chat/completions", json={
            "model": "thinker", "messages": [{"role": "user", "content": "hi"}]}).json()["choices"][0]["message"]
        assert "reasoning_content" not in plain


EFFORT_PLAN = """
- name: go
  backend: llama-cpp
  reasoning_effort: low
  parameters: {model: model.gguf}
  template: {chat_message: "{{.Content}}", chat: "{{.Input}} effort={{.ReasoningEffort}}",
             completion: "{{.Input}} effort={{.ReasoningEffort}}",
             edit: "{{.Instruction}}: {{.Input}} effort={{.ReasoningEffort}}"}
- name: hf
  backend: llama-cpp
  reasoning_effort: low
  chat_template_kwargs: {enable_thinking: false, messages: "cannot replace the conversation"}
  parameters: {model: chat.gguf}
  template:
    use_tokenizer_template: true
"""


def test_reasoning_effort_and_chat_template_kwargs_reach_the_templates() -> None:
    from modelyard.compiler.plan import Template
    from modelyard.launcher.prompts import PromptMessage, chat_prompt, completion_prompt, edit_prompt

    plan = make_plan(EFFORT_PLAN)
    go, hf = plan.models
    hf = hf.model_copy(update={"templates": hf.templates.model_copy(update={"tokenizer_template": Template(
        dialect="tokenizer", source="{{ messages[0].content }} effort={{ reasoning_effort }} "
                                   "thinking={{ enable_thinking }}")})})
    messages = [PromptMessage("user", "hi")]
    assert chat_prompt(go, messages) == "hi effort=low"
    assert chat_prompt(go, messages, reasoning_effort="high") == "hi effort=high"
    # LocalAI's completion and edit endpoints pass the request's effort too (completion.go l.133, edit.go l.50).
    assert completion_prompt(go, "hi") == "hi effort=low"
    assert edit_prompt(go, "fix", "hi", reasoning_effort="high") == "fix: hi effort=high"
    assert chat_prompt(hf, messages) == "hi effort=low thinking=False"
    assert chat_prompt(hf, messages, reasoning_effort="high", template_kwargs={"enable_thinking": True}) == \
        "hi effort=high thinking=True"
    with TestClient(create_app(plan, pool=FakePool(plan))) as client:  # and the request fields are accepted
        response = client.post("/v1/chat/completions", json={
            "model": "go", "messages": [{"role": "user", "content": "[echo]x"}], "reasoning_effort": "medium",
            "chat_template_kwargs": {"enable_thinking": True}})
        assert response.json()["choices"][0]["message"]["content"] == "[echo]x effort=medium"


def test_every_surface_carries_reasoning_in_its_own_shape() -> None:
    """Anthropic's thinking blocks (first, then the text), the Responses API's reasoning item,
    Ollama's ``thinking``; whole and streamed."""
    plan = make_plan(PLAN)
    thinking = "<think>plan it</think>Hello [echo]"  # the fake model echoes it: the block comes first
    with TestClient(create_app(plan, pool=FakePool(plan))) as client:
        message = client.post("/v1/messages", json={"model": "thinker", "max_tokens": 64, "messages": [
            {"role": "user", "content": thinking}]}).json()
        assert message["content"] == [{"type": "thinking", "thinking": "plan it", "signature": ""},
                                      {"type": "text", "text": "Hello [echo]"}]
        with client.stream("POST", "/v1/messages", json={"model": "thinker", "max_tokens": 64, "stream": True,
                                                         "messages": [{"role": "user", "content": thinking}]}) as r:
            data = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
        starts = [d["content_block"]["type"] for d in data if d["type"] == "content_block_start"]
        assert starts == ["thinking", "text"]
        assert "".join(d["delta"].get("thinking", "") for d in data if d["type"] == "content_block_delta") == "plan it"

        response = client.post("/v1/responses", json={"model": "thinker", "input": thinking}).json()
        assert [item["type"] for item in response["output"]] == ["reasoning", "message"]
        assert response["output"][0]["content"] == [{"type": "reasoning_text", "text": "plan it"}]
        with client.stream("POST", "/v1/responses", json={"model": "thinker", "input": thinking, "stream": True}) as r:
            data = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
        assert "".join(d["delta"] for d in data if d["type"] == "response.reasoning_text.delta") == "plan it"
        assert [i["type"] for i in data[-1]["response"]["output"]] == ["reasoning", "message"]

        reply = client.post("/api/chat", json={"model": "thinker", "stream": False, "messages": [
            {"role": "user", "content": thinking}]}).json()
        assert (reply["message"]["thinking"], reply["message"]["content"]) == ("plan it", "Hello [echo]")
        with client.stream("POST", "/api/chat", json={"model": "thinker", "messages": [
                {"role": "user", "content": thinking}]}) as r:
            lines = [json.loads(line) for line in r.iter_lines() if line]
        assert "".join(line["message"].get("thinking", "") for line in lines) == "plan it"
        assert "".join(line["message"]["content"] for line in lines) == "Hello [echo]"
