"""Turn a ``template.*`` value into a render-ready ``Template``, or say why it cannot be."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from jinja2 import TemplateSyntaxError

from .diagnostics import Problem, Severity
from .go_template import TranslationError, looks_like_go_template, translate
from .plan import Dialect, Template
from .sources import HostProbe
from .template_env import template_environment

_TEMPLATE_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class TemplateResult:
    template: Template | None
    problem: Problem | None = None  # at the template's own value (the caller says where that is)


def _error(message: str) -> TemplateResult:
    return TemplateResult(None, Problem((), message))


def _warning(template: Template | None, message: str) -> TemplateResult:
    return TemplateResult(template, Problem((), message, Severity.WARNING))


def resolve_template(value: str, models_dir: str, probe: HostProbe) -> TemplateResult:
    """Inline Jinja, inline Go (translated), or the name of ``<models_dir>/<value>.tmpl``."""
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
        return _warning(template, "Go template translated to Jinja2 (see --explain)")
    checked = _check("jinja", text)
    if checked:
        return _error(f"Jinja2 syntax error: {checked}")
    return TemplateResult(Template(dialect="jinja", source=text, from_file=from_file))


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
