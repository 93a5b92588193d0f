"""Chat requests make the prompt LocalAI makes, byte for byte, for every gallery base with a Go
chat template: the template *data* (which messages, roles, ``.FunctionCall``'s shape,
``.Functions`` with the no-action ``answer``, ``.Function``, ``.SystemPrompt``), not only the
template's translation (tests/compiler/test_go_template_differential.py holds that).

LocalAI's side is tests/compiler/gorender/localai_prompt.go, LocalAI's request decoding,
tool-grammar set-up and ``TemplateMessages`` rewritten in Go from its source; modelyard's side is
``serving.prepare_chat``, the function every chat surface builds its prompt with.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from modelyard.launcher.errors import OpenAIError
from modelyard.launcher.protocol import ChatCompletionRequest, validate
from modelyard.launcher.serving import prepare_chat
from modelyard.launcher.tools import parse_tool_request

from ..compiler.fakes import compile_yaml, default_probe
from ..compiler.localai_corpus import chat_template_bases

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The time in a timezone",
    "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}}
TOOLS = [WEATHER, TIME]


def _call(call_id: str, name: str, arguments: dict) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


SYSTEM = {"role": "system", "content": "You are helpful."}
USER = {"role": "user", "content": "What's the weather in Paris?"}
CALLED = {"role": "assistant", "content": None, "tool_calls": [_call("call_1", "get_weather", {"city": "Paris"})]}
RESULT = {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21.5}'}
ANSWER = {"role": "assistant", "content": "It is 21.5 °C in Paris."}

# The S1-S4, then parallel calls, a longer history, empty content, the other tool
# choices, content parts and reasoning effort.
CONVERSATIONS: dict[str, dict[str, Any]] = {
    "S1-system-user": {"messages": [SYSTEM, USER]},
    "S2-user-only": {"messages": [USER]},
    "S3-tools": {"messages": [SYSTEM, USER], "tools": TOOLS},
    "S4-tool-result": {"messages": [USER, CALLED, RESULT], "tools": TOOLS},
    "parallel-calls": {"messages": [USER, {"role": "assistant", "content": None, "tool_calls": [
        _call("call_1", "get_weather", {"city": "Paris"}), _call("call_2", "get_time", {"tz": "Europe/Paris"})]},
        RESULT, {"role": "tool", "tool_call_id": "call_2", "content": "14:05"}], "tools": TOOLS},
    "multi-turn": {"messages": [SYSTEM, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                                USER, CALLED, RESULT, ANSWER, {"role": "user", "content": "And in Rome?"}],
                   "tools": TOOLS},
    "call-with-text": {"messages": [USER, {**CALLED, "content": "Let me check."}, RESULT], "tools": TOOLS},
    "empty-content": {"messages": [USER, {"role": "assistant", "content": ""}, {"role": "user", "content": "?"}]},
    "required": {"messages": [USER], "tools": TOOLS, "tool_choice": "required"},
    "named": {"messages": [USER], "tools": TOOLS,
              "tool_choice": {"type": "function", "function": {"name": "get_time"}}},
    "none": {"messages": [USER, CALLED, RESULT], "tools": TOOLS, "tool_choice": "none"},
    "content-parts": {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hello "},
                                                                {"type": "text", "text": "there"}]}]},
    "reasoning-effort": {"messages": [SYSTEM, USER], "tools": TOOLS, "reasoning_effort": "high"},
}

SYSTEM_PROMPT = "You are a pirate."

# LocalAI bugs modelyard does not copy; the Go side fixes each (localai_prompt.go, config.fixes).
LOCALAI_BUGS = {
    # chat.go l.342 adds the no-action function to the grammar and to .Functions whatever the
    # tool_choice: under "required" the model may then answer without calling a tool, which
    # OpenAI's "required" rules out. modelyard offers the request's tools alone there.
    "required_without_no_action": True,
}


def _localai_config(config: str, system_prompt: str | None) -> dict:
    """The YAML keys LocalAI's prompt building reads, as its config loader reads them."""
    data = yaml.safe_load(config)
    function = data.get("function") or {}
    out = {"template": {k: v for k, v in (data.get("template") or {}).items()
                        if k in ("chat", "chat_message", "function", "join_chat_messages_by_character")},
           "roles": data.get("roles") or {},
           "system_prompt": system_prompt or data.get("system_prompt") or "",
           "no_grammar": bool((function.get("grammar") or {}).get("disable")),
           "disable_no_action": bool(function.get("disable_no_action")),
           "no_action_function_name": function.get("no_action_function_name") or "",
           "no_action_description_name": function.get("no_action_description_name") or "",
           "fixes": LOCALAI_BUGS}
    return out


def _modelyard_prompt(model, request: dict) -> dict:
    body = validate({"model": model.name, **request}, ChatCompletionRequest)
    try:
        tools = parse_tool_request(body.tools, body.tool_choice, body.functions, body.function_call)
        return {"output": prepare_chat(model, body, tools).prompt}
    except OpenAIError as exc:
        assert 400 <= exc.status < 500, exc.message
        return {"error": exc.message}


def _cases() -> list[tuple[str, Any, dict, dict]]:
    probe = default_probe()
    cases = []
    for name, config in chat_template_bases():
        stem = name.removesuffix(".yaml")
        for system_prompt in (None, SYSTEM_PROMPT):
            sets = (f"name={stem}", "parameters.model=model.gguf")
            if system_prompt:
                sets += (f"system_prompt={system_prompt}",)
            result = compile_yaml({f"bases/{name}": config}, probe=probe, check_files=False, sets=sets)
            assert result.plan is not None, (name, [str(d) for d in result.diagnostics])
            model = result.plan.models[0]
            localai = _localai_config(config, system_prompt)
            label = f"{stem}{'+system_prompt' if system_prompt else ''}"
            cases += [(f"{label}:{conversation}", model, localai, request)
                      for conversation, request in CONVERSATIONS.items()]
    return cases


def test_chat_prompts_are_localais(go_render, capsys) -> None:
    cases = _cases()
    bases = {label.split(":")[0].removesuffix("+system_prompt") for label, *_ in cases}
    assert len(bases) >= 40
    theirs = go_render([{"localai": {"config": localai, "request": request}} for _, _, localai, request in cases])
    mismatches = []
    for (label, model, _, request), go in zip(cases, theirs):
        ours = _modelyard_prompt(model, request)
        if "error" in go or "error" in ours:
            if set(go) != set(ours):
                mismatches.append((label, go, ours))
        elif go["output"] != ours["output"]:
            mismatches.append((label, go["output"], ours["output"]))
    with capsys.disabled():
        by_conversation: dict[str, int] = {}
        for label, *_ in mismatches:
            by_conversation[label.split(":")[1]] = by_conversation.get(label.split(":")[1], 0) + 1
        print(f"\nLocalAI prompt differential: {len(cases) - len(mismatches)}/{len(cases)} identical "
              f"({len(bases)} bases x {len(CONVERSATIONS)} conversations, with and without system_prompt); "
              f"differing: {by_conversation}")
    assert mismatches == []
