"""No template, tool or reasoning input makes a 500: random conversations (roles in any order,
tool calls and results, empty and hostile content, names) and random tools through every chat
template of LocalAI's gallery bases, then random model outputs through the tool-call and
reasoning parsers. A prompt either renders or is refused as the client's fault (a 4xx)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelyard.compiler.plan import Reasoning
from modelyard.launcher.errors import OpenAIError
from modelyard.launcher.prompts import PromptMessage, chat_prompt
from modelyard.launcher.reasoning import ReasoningStream, split
from modelyard.launcher.tools import ChoiceDeltas, ToolCall, assistant_message, parse_tool_request

from ..compiler.fakes import compile_yaml, default_probe
from ..compiler.localai_corpus import GALLERY, base_configs, gallery_dir

# Text that stresses templates and parsers: Go and Jinja delimiters, JSON, tags, unicode.
PIECES = st.sampled_from(["{{", "}}", "{%", "%}", "<think>", "</think>", "<tool_call>", "</tool_call>", "[TOOL_CALLS]",
                          '{"name": "f", "arguments": {}}', "[f(a=1)]", "<function=f>", "</function>", "\n", " ",
                          "é", "🙂", "\\", '"', "'", "<|im_end|>", "[INST]", "hello", "0", "null"])
TEXT = st.lists(PIECES | st.text(max_size=8), max_size=6).map("".join)
NAMES = st.sampled_from(["f", "get_weather", "answer", "a-b_c", "x" * 64])
CALLS = st.lists(st.builds(ToolCall, id=st.sampled_from(["", "call_1", "c2"]), name=NAMES,
                           arguments=st.sampled_from(["{}", '{"city": "Paris"}', '{"a": [1, {"b": null}]}', "[1]",
                                                      "not json", '"s"'])), max_size=3)
MESSAGES = st.lists(st.builds(
    PromptMessage, role=st.sampled_from(["system", "user", "assistant", "tool", "developer", "function"]),
    content=TEXT, tool_calls=CALLS.map(tuple), tool_call_id=st.sampled_from([None, "", "call_1", "zzz"]),
    name=st.sampled_from(["", "ann", "get_weather"])), min_size=1, max_size=6)
TOOLS = st.lists(st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries({
    "name": NAMES, "description": TEXT, "parameters": st.sampled_from([
        {"type": "object", "properties": {}}, {"type": "object", "properties": {"city": {"type": "string"}}},
        {"type": "object", "properties": {"n": {"type": "integer"}, "tags": {"type": "array", "items": {
            "type": "string"}}}, "required": ["n"]}])})}), max_size=3, unique_by=lambda t: t["function"]["name"])
CHOICES = st.sampled_from(["auto", "none", "required"])


def _corpus_models() -> list:
    """The corpus bases' chat models ([] without the corpus: the test below says it is missing)."""
    if not (GALLERY / "bases").is_dir():
        return []
    probe = default_probe()
    probe.backends = {"llama-cpp", "transformers", "vllm", "exllama2"}
    models = []
    for name, config in base_configs():
        stem = name.removesuffix(".yaml")
        result = compile_yaml({f"bases/{name}": config}, probe=probe, check_files=False,
                              sets=(f"name={stem}", "parameters.model=model.gguf"))
        if result.plan is not None:
            models += [m for m in result.plan.models if m.templates.chat_message or m.templates.chat
                       or m.templates.tokenizer_template]
    return models


MODELS = _corpus_models()


def test_the_corpus_has_templates_to_fuzz() -> None:
    gallery_dir()  # skips, saying where it looked, without the corpus
    assert len(MODELS) >= 40


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(messages=MESSAGES, tools=TOOLS, choice=CHOICES, effort=st.sampled_from([None, "low", "{{x}}"]),
       constrained=st.booleans())
def test_any_conversation_renders_or_is_a_client_error(model, messages, tools, choice, effort, constrained) -> None:
    try:
        request = parse_tool_request(tools, choice, None, None) if tools else None
        if request is not None and constrained:
            request = request.with_no_action("answer", "no action")
        prompt = chat_prompt(model, messages, request, reasoning_effort=effort, constrained=constrained)
    except OpenAIError as exc:
        assert 400 <= exc.status < 500, exc.message
        return
    assert isinstance(prompt, str)


@settings(max_examples=300, deadline=None)
@given(text=TEXT, tools=TOOLS, choice=CHOICES, no_action=st.booleans(), pieces=st.lists(TEXT, max_size=6))
def test_any_model_output_parses_or_is_content(text, tools, choice, no_action, pieces) -> None:
    """Whatever the model writes, the answer is a message (calls, content or reasoning), whole
    and streamed: the parsers never raise."""
    request = parse_tool_request(tools, choice, None, None) if tools else None
    if request is not None and no_action:
        request = request.with_no_action("answer", "no action")
    settings_ = Reasoning()
    reasoning, content = split(text, settings_)
    message, finish = assistant_message(content, "stop", request)
    assert finish in ("stop", "tool_calls") and isinstance(message.get("content") or "", str)
    stream, deltas = ReasoningStream(settings_), ChoiceDeltas(request)
    sent = []
    for piece in [*pieces, text]:
        _, shown = stream.feed(piece)
        if shown:
            sent += deltas.text(shown)
    last, streamed_finish = deltas.finish("stop")
    assert streamed_finish in ("stop", "tool_calls")
    assert all(set(delta) <= {"content", "tool_calls", "function_call"} for delta in [*sent, *last])
