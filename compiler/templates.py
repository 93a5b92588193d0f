"""Turn a ``template.*`` value into a render-ready ``Template``, or say why it cannot be."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from jinja2 import TemplateSyntaxError

from .diagnostics import Problem, Severity
from .go_template import TranslationError, looks_like_go_template, root_fields, translate
from .plan import Dialect, Template
from .sources import HostProbe
from .template_env import template_environment

_TEMPLATE_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")

# The fields of the data LocalAI renders each template with (core/templates/evaluator.go:
# PromptTemplateData for the prompt templates, ChatMessageTemplateData per message), each with
# its zero value: a Go template reading any other field fails where it reads it.
PROMPT_DATA = {"SystemPrompt": "", "SuppressSystemPrompt": False, "Input": "", "Instruction": "", "Functions": [],
               "MessageIndex": 0, "ReasoningEffort": "", "Metadata": {}}
CHAT_MESSAGE_DATA = {"SystemPrompt": "", "Role": "", "RoleName": "", "FunctionName": "", "Content": "",
                     "MessageIndex": 0, "Function": False, "FunctionCall": None, "LastMessage": False}
TEMPLATE_DATA = {"chat": PROMPT_DATA, "completion": PROMPT_DATA, "edit": PROMPT_DATA, "function": PROMPT_DATA,
                 "chat_message": CHAT_MESSAGE_DATA}


@dataclass(frozen=True)
class TemplateResult:
    template: Template | None
    problems: tuple[Problem, ...] = ()  # at the template's own value (the caller says where that is)


def _error(message: str) -> TemplateResult:
    return TemplateResult(None, (Problem((), message),))


def _warning(template: Template | None, *messages: str) -> TemplateResult:
    return TemplateResult(template, tuple(Problem((), message, Severity.WARNING) for message in messages))


def resolve_template(value: str, models_dir: str, probe: HostProbe, kind: str = "chat") -> TemplateResult:
    """Inline Jinja, inline Go (translated), or the name of ``<models_dir>/<value>.tmpl``;
    ``kind`` says which data a Go template is rendered with."""
    from_file = None
    text = value
    if _TEMPLATE_FILE_NAME.match(value) and "{" not in value:
        candidate = os.path.join(models_dir, value + ".tmpl")
        content = probe.read_text(candidate) if probe.is_file(candidate) else None
        if content is None:
            return _error(f"no template file {value + '.tmpl'!r} in {models_dir!r}, and the value is not a template")
        from_file, text = candidate, content
    if looks_like_go_template(text):
        try:
            translated = translate(text)
        except TranslationError as exc:
            if exc.unsupported:
                return _error(f"Go template cannot be translated: {exc}")
            # Go's own parser rejects it too: LocalAI fails on it at request time, so a LocalAI
            # config carrying it still compiles; the requests that need it are refused.
            return _warning(None, "invalid Go template, ignored (Go's text/template rejects it too, so LocalAI "
                                  f"cannot render it either): {exc}")
        checked = _check("go", translated)
        if checked:
            return _error(f"internal error translating the Go template ({checked}); please report it")
        template = Template(dialect="go", source=translated, original=text, from_file=from_file)
        return _warning(template, "Go template translated to Jinja2 (see --explain)", *_unknown_fields(text, kind))
    checked = _check("jinja", text)
    if checked:
        return _error(f"Jinja2 syntax error: {checked}")
    return TemplateResult(Template(dialect="jinja", source=text, from_file=from_file))


def _unknown_fields(text: str, kind: str) -> list[str]:
    """One warning for the fields of LocalAI's data that ``text`` reads and the data lacks."""
    data = TEMPLATE_DATA.get(kind)
    if data is None:
        return []
    unknown: dict[str, tuple[int, int]] = {}
    for name, line, column in root_fields(text):
        if name not in data:
            unknown.setdefault(name, (line, column))
    if not unknown:
        return []
    (first, (line, column)), *others = unknown.items()
    also = "".join(f", .{name} at {at[0]}:{at[1]}" for name, at in others)
    data_type = "ChatMessageTemplateData" if data is CHAT_MESSAGE_DATA else "PromptTemplateData"
    return [f"template line {line}:{column}: .{first}{also}: not in the data template.{kind} is rendered with "
            f"({data_type}: {', '.join('.' + f for f in data)}); where one is read, LocalAI's rendering fails "
            f"and it goes on without this template{' for that message' if kind == 'chat_message' else ''}, "
            "and so does modelyard"]


def tokenizer_template(text: str) -> TemplateResult:
    checked = _check("tokenizer", text)
    if checked:
        return _error(f"the model's own chat template does not compile: {checked}")
    return TemplateResult(Template(dialect="tokenizer", source=text))


def _check(dialect: Dialect, source: str) -> str | None:
    try:
        template_environment(dialect).parse(source)
    except TemplateSyntaxError as exc:
        return f"line {exc.lineno}: {exc.message}"
    return None
