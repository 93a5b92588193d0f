"""Render prompts from a model's templates: chat (per message, then the whole), completion, edit.

Variables follow LocalAI's names (``Input``, ``RoleName``, ``Content``, ...) for every dialect;
chat templates also get ``messages`` and ``add_generation_prompt`` in the Hugging Face shape.
"""

from __future__ import annotations

from typing import Any

from jinja2 import TemplateError
from modelyard.compiler.plan import ModelPlan, Template
from modelyard.compiler.template_env import compiled_template

from .errors import OpenAIError


def _render(model: ModelPlan, kind: str, template: Template, variables: dict[str, Any]) -> str:
    try:
        return compiled_template(template.dialect, template.source).render(**variables)
    except TemplateError as exc:
        raise OpenAIError(500, f"model {model.name!r}: template.{kind} failed to render: {exc}",
                          code="template_error") from None


def chat_prompt(model: ModelPlan, messages: list[tuple[str, str]]) -> str:
    """``messages`` are (role, text) pairs, already validated."""
    if model.system_prompt and not any(role in ("system", "developer") for role, _ in messages):
        messages = [("system", model.system_prompt), *messages]
    messages = [("system" if role == "developer" else role, text) for role, text in messages]
    system = next((text for role, text in messages if role == "system"), "")
    hf_messages = [{"role": role, "content": text} for role, text in messages]
    templates = model.templates
    if templates.chat_message is None and templates.chat is None and not model.roles:
        if templates.tokenizer_template is not None:
            return _render(model, "tokenizer", templates.tokenizer_template, {
                "messages": hf_messages, "add_generation_prompt": True, "bos_token": "", "eos_token": ""})
        raise OpenAIError(400, f"model {model.name!r} has no chat template, so it cannot serve chat completions; "
                               "use /v1/completions", param="model", code="chat_not_supported")
    rendered = []
    for index, (role, text) in enumerate(messages):
        if templates.chat_message is not None:
            rendered.append(_render(model, "chat_message", templates.chat_message, {
                "RoleName": role, "Role": model.roles.get(role, role), "Content": text, "FunctionCall": None,
                "FunctionName": "", "MessageIndex": index, "LastMessage": index == len(messages) - 1,
                "SystemPrompt": system, "Function": False, "ReasoningEffort": "",
            }))
        else:  # LocalAI's legacy role prefixes (none: the text alone)
            rendered.append(model.roles.get(role, "") + text)
    joined = templates.join_chat_messages_by_character.join(rendered)
    if templates.chat is None:
        return joined
    return _render(model, "chat", templates.chat, {
        "Input": joined, "SystemPrompt": system, "Functions": [], "ReasoningEffort": "",
        "messages": hf_messages, "add_generation_prompt": True,
    })


def completion_prompt(model: ModelPlan, prompt: str) -> str:
    if model.templates.completion is None:
        return prompt
    return _render(model, "completion", model.templates.completion, {"Input": prompt, "SystemPrompt": ""})


def edit_prompt(model: ModelPlan, instruction: str, text: str) -> str:
    if model.templates.edit is not None:
        return _render(model, "edit", model.templates.edit, {"Input": text, "Instruction": instruction})
    # No edit template: OpenAI's mapping, instruction as the system message, input as the user's.
    return chat_prompt(model, [("system", instruction), ("user", text)])
