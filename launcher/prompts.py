"""Render prompts from a model's templates: chat (per message, then the whole), completion, edit.

Variables follow LocalAI's names (``Input``, ``RoleName``, ``Content``, ...) for every dialect;
chat templates also get ``messages`` and ``add_generation_prompt`` in the Hugging Face shape.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from typing import Any

from jinja2 import TemplateError

from modelyard.compiler.plan import ModelPlan, Template
from modelyard.compiler.template_env import GoStruct, RenderBudgetExceeded, compiled_template, go_json, render_budget
from modelyard.compiler.templates import TEMPLATE_DATA

from .errors import OpenAIError
from .tools import ToolCall, ToolRequest, template_functions, tools_system_prompt

log = logging.getLogger("modelyard.prompts")

RENDER_BUDGET_S = 5.0  # a chat template renders in milliseconds; one that takes seconds is looping on input
CHARS_PER_TOKEN_BOUND = 32  # no tokenizer packs more characters in a token: a longer prompt cannot fit
DEFAULT_PROMPT_CHARS = 4 * 1024 * 1024  # where the context size is the engine's to decide


def _render(model: ModelPlan, kind: str, template: Template, variables: dict[str, Any]) -> str | None:
    """A template's output for this request. It fails on what the client sent (a chat template's
    ``raise_exception`` on roles it does not take, arithmetic on a client's values, the sandbox's
    bounds): a 400 naming the template, never a 500. A Go template that fails is None instead:
    LocalAI then goes on without it (evaluator.go l.150 and l.232), and so must its configs here."""
    try:
        with render_budget(RENDER_BUDGET_S):
            if template.dialect == "go":  # rendered with LocalAI's data, each field there
                variables = {**TEMPLATE_DATA[kind], **variables}
            return compiled_template(template.dialect, template.source).render(**variables)
    except RenderBudgetExceeded:
        raise OpenAIError(400, f"model {model.name!r}: template.{kind} took more than {RENDER_BUDGET_S:g} s for this "
                               "request", code="template_error") from None
    except (TemplateError, ArithmeticError, LookupError, TypeError, ValueError, RecursionError) as exc:
        if template.dialect == "go":
            log.warning("model %r: template.%s failed (%s); going on without it, as LocalAI does",
                        model.name, kind, exc)
            return None
        if isinstance(exc, TemplateError):
            raise OpenAIError(400, f"model {model.name!r}: template.{kind} refused this request: {exc}",
                              code="template_error") from None
        raise OpenAIError(400, f"model {model.name!r}: template.{kind} failed on this request: "
                               f"{type(exc).__name__}: {exc}", code="template_error") from None


def check_prompt_size(model: ModelPlan, prompt: str) -> str:
    """``prompt``, unless it is so long that it cannot fit the model's context whatever the
    tokenizer: then a 400 before the worker spends its time tokenizing it."""
    limit = model.context_size * CHARS_PER_TOKEN_BOUND if model.context_size else DEFAULT_PROMPT_CHARS
    if len(prompt) > limit:
        raise OpenAIError(400, f"the prompt is {len(prompt)} characters: more than model {model.name!r}'s context "
                               f"can hold (at most {limit})", param="messages", code="context_length_exceeded")
    return prompt


@dataclass(frozen=True)
class PromptMessage:
    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant's calls
    tool_call_id: str | None = None  # a tool result's call
    name: str = ""  # the message's `name` (a tool result's function, a participant): LocalAI's .FunctionName

    def hf(self) -> dict[str, Any]:
        """The Hugging Face chat-template shape (arguments as objects, as those templates expect)."""
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [{"id": c.id, "type": "function",
                                      "function": {"name": c.name, "arguments": _as_object(c.arguments)}}
                                     for c in self.tool_calls]
        if self.tool_call_id:
            message["tool_call_id"] = self.tool_call_id
        return message


def _as_object(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except json.JSONDecodeError:
        return arguments


# Variables a tokenizer template gets from the conversation itself: chat_template_kwargs cannot replace them.
_CONVERSATION_VARIABLES = frozenset({"messages", "tools", "add_generation_prompt", "bos_token", "eos_token"})


def chat_prompt(model: ModelPlan, messages: list[PromptMessage], tools: ToolRequest | None = None, *,
                reasoning_effort: str | None = None, template_kwargs: dict[str, Any] | None = None,
                constrained: bool = False) -> str:
    """``messages`` are validated; ``tools`` offered to the model are described to it through
    the tokenizer template's ``tools``, else the YAML's ``template.function`` (LocalAI's way),
    else a system message. ``reasoning_effort`` and ``template_kwargs`` (the request's) win over
    the YAML's. ``constrained``: a grammar holds the reply (LocalAI's ``.Function``, set on the
    last message)."""
    effort = reasoning_effort or model.reasoning_effort or ""
    offered = tools.offered if tools is not None else ()
    templates = model.templates
    chat_templates = templates.chat_message is not None or templates.chat is not None or model.roles
    # LocalAI's templates see the YAML's system_prompt as .SystemPrompt only; a tokenizer template
    # has no such variable, so there it is the conversation's system message when it has none.
    if model.system_prompt and not chat_templates and not any(m.role in ("system", "developer") for m in messages):
        messages = [PromptMessage("system", model.system_prompt), *messages]
    messages = [replace(m, role="system") if m.role == "developer" else m for m in messages]
    # A tokenizer template that never mentions `tools` would drop them, and so would joined
    # texts: then a system note tells the model. LocalAI's templates get them as .Functions
    # (or not at all: the grammar alone holds the model to them), as here.
    tokenizer_takes_tools = templates.tokenizer_template is not None and "tools" in templates.tokenizer_template.source
    if offered and not chat_templates and not tokenizer_takes_tools:
        messages = _with_system_note(messages, tools_system_prompt(tools))
    system = model.system_prompt or ""
    hf_messages = [m.hf() for m in messages]
    if not chat_templates:
        if templates.tokenizer_template is not None:
            extra = {**model.chat_template_kwargs, **(template_kwargs or {})}
            variables: dict[str, Any] = {key: value for key, value in extra.items()
                                         if key not in _CONVERSATION_VARIABLES}
            if effort:
                variables.setdefault("reasoning_effort", effort)
            variables.update({"messages": hf_messages, "add_generation_prompt": True, "bos_token": "", "eos_token": ""})
            if offered:
                variables["tools"] = [{"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.parameters}} for t in offered]
            prompt = _render(model, "tokenizer", templates.tokenizer_template, variables)
            assert prompt is not None  # only a Go template has LocalAI's way out
            return prompt
        # No template at all: the messages' texts joined, as LocalAI sends them (evaluator.go
        # TemplateMessages without chat_message or roles).
    rendered = []
    suppress_system_prompt = False
    for index, message in enumerate(messages):
        # The steps of LocalAI's TemplateMessages (core/templates/evaluator.go).
        role = message.role
        if message.tool_calls and role == "assistant" and model.roles.get("assistant_function_call"):
            role = "assistant_function_call"
        prefix = model.roles.get(role, "")
        calls = _go_calls(message) if message.tool_calls else None
        if templates.chat_message is not None:
            text = _render(model, "chat_message", templates.chat_message, {
                "RoleName": role, "Role": prefix, "Content": message.content, "FunctionCall": calls,
                "FunctionName": message.name,  # the message's name (evaluator.go l.136)
                "MessageIndex": index, "LastMessage": index == len(messages) - 1, "SystemPrompt": system,
                # a grammar is in force, on the last message only (evaluator.go l.135)
                "Function": constrained and index == len(messages) - 1,
            })
            if text == "":  # a message whose template renders nothing is left out
                continue
            if text is not None:
                rendered.append(text)
                continue
        # No chat_message template (or it failed): the role's prefix and the text, then the calls as JSON.
        text = prefix + message.content if message.content else ""
        if calls is not None:
            marshalled = (prefix + " " if prefix else "") + go_json(calls)
            text = f"{text}\n{marshalled}" if message.content else marshalled
        rendered.append(text)
        # A system message printed this way stands for the YAML's system prompt (evaluator.go l.196).
        suppress_system_prompt = suppress_system_prompt or (message.role == "system" and bool(message.content))
    joined = templates.join_chat_messages_by_character.join(rendered)
    outer, kind = (templates.function, "function") if offered and templates.function is not None \
        else (templates.chat, "chat")
    if outer is None:
        return joined
    prompt = _render(model, kind, outer, {
        "Input": joined, "SystemPrompt": system, "SuppressSystemPrompt": suppress_system_prompt,
        "Functions": template_functions(tools) if offered else [],
        "ReasoningEffort": effort, "messages": hf_messages, "add_generation_prompt": True,
    })
    return joined if prompt is None else prompt


def _go_calls(message: PromptMessage) -> Any:
    """``.FunctionCall`` as LocalAI passes it: the message's ``tool_calls`` as OpenAI sent them
    (``schema.ToolCall``: index, id, type, function {name, arguments as a string}), or a legacy
    ``function_call``'s map (a call with no id)."""
    calls = message.tool_calls
    if len(calls) == 1 and not calls[0].id:
        return {"name": calls[0].name, "arguments": calls[0].arguments}
    return [GoStruct(("Index", "index", call.index), ("ID", "id", call.id), ("Type", "type", "function"),
                     ("FunctionCall", "function", GoStruct(("Name", "name", call.name),
                                                           ("Arguments", "arguments", call.arguments))))
            for call in calls]


def _with_system_note(messages: list[PromptMessage], note: str) -> list[PromptMessage]:
    if messages and messages[0].role == "system":
        return [replace(messages[0], content=f"{messages[0].content}\n\n{note}"), *messages[1:]]
    return [PromptMessage("system", note), *messages]


def completion_prompt(model: ModelPlan, prompt: str, reasoning_effort: str | None = None) -> str:
    if model.templates.completion is None:
        return prompt
    rendered = _render(model, "completion", model.templates.completion, {  # completion.go l.133
        "Input": prompt, "SystemPrompt": model.system_prompt or "",
        "ReasoningEffort": reasoning_effort or model.reasoning_effort or ""})
    return prompt if rendered is None else rendered


def edit_prompt(model: ModelPlan, instruction: str, text: str, reasoning_effort: str | None = None) -> str:
    if model.templates.edit is not None:
        rendered = _render(model, "edit", model.templates.edit, {  # edit.go l.50
            "Input": text, "Instruction": instruction, "SystemPrompt": model.system_prompt or "",
            "ReasoningEffort": reasoning_effort or model.reasoning_effort or ""})
        return text if rendered is None else rendered  # edit.go l.57: the input alone
    # No edit template: OpenAI's mapping, instruction as the system message, input as the user's.
    return chat_prompt(model, [PromptMessage("system", instruction), PromptMessage("user", text)],
                       reasoning_effort=reasoning_effort)
