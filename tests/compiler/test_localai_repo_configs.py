"""LocalAI's own configs (AIO images, embedded models, test fixtures, examples, docs: 135 YAML
files in ``shared/compat/localai-repo-configs``, classified in its ``RESULTS.md`` by the audit in
``shared/reference/localai-gap.md`` §6): every one a LocalAI user can run as text generation
compiles. The audit's DEFECT class (a URL ``parameters.model``, LocalAI keys the schema did not
know, ``top_p: 80`` / ``top_k: 0.9``) is compiled too, and what is still refused is refused for
the reason the audit gives."""

from __future__ import annotations

import re

import pytest

from modelyard.compiler import CompileOptions, LocalProbe, compile_sources, discover

from ..conftest import SHARED

CORPUS = SHARED / "compat" / "localai-repo-configs"
ROW = re.compile(r"^\| `(?P<file>[^`]+)` \| (?P<exit>\d) \| (?P<klass>[^|]+) \|")


def _rows() -> list[tuple[str, str]]:
    if not (CORPUS / "RESULTS.md").is_file():
        return []
    rows = []
    for line in (CORPUS / "RESULTS.md").read_text().splitlines():
        match = ROW.match(line)
        if match:
            rows.append((match["file"], match["klass"].strip()))
    return rows


ROWS = _rows()


def _compile(relative: str):
    sources, problems = discover([str(CORPUS / relative)], None)
    assert not problems
    return compile_sources(sources, CompileOptions(env={}, probe=LocalProbe(), check_files=False))


def test_the_corpus_is_there() -> None:
    if not ROWS:
        pytest.skip(f"{CORPUS} is not in this checkout")
    assert len(ROWS) == 135


@pytest.mark.parametrize("relative,klass", [r for r in ROWS if r[1].startswith(("OK", "DEFECT"))],
                         ids=[r[0] for r in ROWS if r[1].startswith(("OK", "DEFECT"))])
def test_every_config_localai_runs_as_text_generation_compiles(relative, klass) -> None:
    result = _compile(relative)
    assert result.ok, [f"{d.path}: {d.message}" for d in result.diagnostics if d.is_error]


@pytest.mark.parametrize("relative", [r[0] for r in ROWS if r[1].startswith(("NON-TEXT", "UNSUPPORTED"))])
def test_what_is_not_text_generation_here_is_still_refused(relative) -> None:
    result = _compile(relative)
    assert not result.ok
    errors = [d.message for d in result.diagnostics if d.is_error]
    assert any("not a text-generation" in m or "does not serve" in m or "not one of" in m or "missing required key"
               in m for m in errors), errors


def test_a_tmpl_file_beside_the_model_is_its_template() -> None:
    """LocalAI's EvaluateTemplateForPrompt (core/templates/evaluator.go l.62): ``<model>.tmpl`` in
    the models directory is every template the YAML leaves unset, except chat_message."""
    from .fakes import compile_yaml, default_probe

    probe = default_probe()
    probe.files["models/model.gguf.tmpl"] = "Q: {{.Input}}\nA:"
    result = compile_yaml({"models/m.yaml": "name: m\nparameters: {model: model.gguf}\n"
                                            "template: {edit: 'E {{.Input}}'}\n"}, probe=probe)
    assert result.plan is not None, result.diagnostics
    [model] = result.plan.models
    assert model.templates.completion is not None and model.templates.completion.from_file == "models/model.gguf.tmpl"
    assert model.templates.chat is not None and model.templates.function is not None
    assert model.templates.edit is not None and model.templates.edit.from_file is None  # the YAML's wins
    assert model.templates.chat_message is None
    assert model.origins["templates.completion"] == "model.gguf.tmpl beside the model file"
