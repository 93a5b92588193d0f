"""The compile pipeline: sources in, ``CompileResult(plan, diagnostics)`` out.

load (positions kept) → interpolate ``${VAR}`` → ``--set`` overrides → refuse non-text backends
→ JSON Schema validation (every error) → normalization (templates, paths, options, env) →
cross-model checks (duplicate names) → implicit configs for bare GGUF files → ``LaunchPlan``.

Pure: the environment and the host are passed in (``env``, ``probe``); nothing is printed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import PurePath
from typing import Any

from . import backends
from .diagnostics import Diagnostic, DiagnosticSink, Position, Problem, Severity, sorted_diagnostics
from .localai_values import read_like_localai
from .normalize import TEXT_USECASES, ModelContext, normalize_model
from .overrides import SetOverride, apply_overrides, server_settings
from .paths import Path, display_path
from .plan import LaunchPlan, ModelPlan, ServerPlan
from .schema_validation import validate_model
from .sources import GGML_DEPRECATED, HostProbe, Source
from .yaml_loader import LoadedDocument, load_yaml

# LocalAI backends for images, audio, speech and reranking: not text generation.
NON_TEXT_BACKENDS = frozenset({
    "diffusers", "stablediffusion", "stablediffusion-ggml", "whisper", "faster-whisper", "piper", "bark",
    "bark-cpp", "coqui", "kokoro", "kokoros", "parler-tts", "rerankers", "sentencetransformers",
    "sentence-transformers", "sherpa-onnx", "ced", "liquid-audio", "pocket-tts", "supertonic", "vibevoice",
    "trellis2cpp", "huggingface-embeddings", "silero-vad", "chatterbox", "kitten-tts", "neutts",
    "moonshine", "rfdetr", "transformers-musicgen", "outetts", "voxcpm",
})
# LocalAI text-generation backends modelyard does not serve.
OTHER_TEXT_BACKENDS = frozenset({
    "sglang", "mlx", "mlx-vlm", "mlx-audio", "mlx-distributed", "mamba", "vllm-omni", "vllm-cpp", "rwkv", "gpt4all",
    "ik-llama-cpp", "turboquant", "ds4", "cloud-proxy",
})


@dataclass(frozen=True)
class CompileOptions:
    env: Mapping[str, str]
    probe: HostProbe
    overrides: tuple[SetOverride, ...] = ()
    check_files: bool = True  # False validates a config before its files exist (gallery installs)
    server: ServerPlan = field(default_factory=ServerPlan)
    strict: bool = False  # every warning is an error (for CI that wants LocalAI leftovers cleaned up)


@dataclass(frozen=True)
class CompileResult:
    plan: LaunchPlan | None
    diagnostics: list[Diagnostic]

    @property
    def ok(self) -> bool:
        return self.plan is not None


@dataclass
class _Item:
    """One model mapping as found in a document."""

    source: Source
    document: LoadedDocument
    base: Path
    raw: Any
    sink: DiagnosticSink

    @property
    def fallback_name(self) -> str:
        return PurePath(self.source.path).stem


def compile_sources(sources: Sequence[Source], options: CompileOptions) -> CompileResult:
    diagnostics: list[Diagnostic] = []
    items: list[_Item] = []
    for source in sources:
        if source.kind == "yaml":
            sink = DiagnosticSink(source.path)
            for document in load_yaml(source.text, sink, options.env):
                items.extend(_split_models(source, document, sink))
            diagnostics.extend(sink.items)
            sink.items.clear()  # the sink is shared by this file's models, read again per model

    names = {name for i in items if isinstance(name := i.raw.get("name"), str)}
    set_paths = apply_overrides(items, options.overrides, names)
    server, server_problems = server_settings(options.server, options.overrides)
    diagnostics.extend(Diagnostic("<command line>", Position(), "server", p) for p in server_problems)

    plans: list[tuple[ModelPlan, _Item]] = []
    for item in items:
        plan = _compile_item(item, options, set_paths)
        diagnostics.extend(item.sink.items)
        item.sink.items.clear()
        if plan is not None:
            plans.append((plan, item))

    diagnostics.extend(_duplicate_names(plans))
    plans.extend(_implicit_gguf_models(sources, plans, options, diagnostics))
    if options.strict:
        diagnostics = [replace(d, severity=Severity.ERROR) for d in diagnostics]
    ordered = sorted_diagnostics(diagnostics)
    if any(d.is_error for d in ordered):
        return CompileResult(None, ordered)
    models = tuple(sorted((p for p, _ in plans), key=lambda m: m.name))
    return CompileResult(LaunchPlan(server=server, models=models), ordered)


def _split_models(source: Source, document: LoadedDocument, sink: DiagnosticSink) -> list[_Item]:
    data = document.data
    if isinstance(data, dict):
        return [_Item(source, document, (), data, sink)]
    if isinstance(data, list):
        items = []
        for index, entry in enumerate(data):
            if isinstance(entry, dict):
                items.append(_Item(source, document, (index,), entry, sink))
            else:
                sink.error(document.value_position((index,)), f"[{index}]", "expected a model mapping")
        return items
    sink.error(document.value_position(()), "", "expected a model mapping or a list of models")
    return []


def _compile_item(item: _Item, options: CompileOptions, set_paths: set[tuple[int, Path]]) -> ModelPlan | None:
    doc, base, sink = item.document, item.base, item.sink
    label = lambda path: display_path(doc.data, base + path, item.fallback_name)  # noqa: E731

    def report(problem: Problem) -> None:
        """The one place a model's problem gets its file, line and column."""
        full = base + problem.path
        where = doc.key_position(full) if problem.at_key else doc.value_position(full)
        sink.items.append(Diagnostic(sink.file, where, label(problem.path), problem.message, problem.severity))

    backend = item.raw.get("backend")
    if isinstance(backend, str) and (backend in NON_TEXT_BACKENDS or backend in OTHER_TEXT_BACKENDS):
        report(Problem(("backend",), _refusal(backend)))
        return None
    usecases = item.raw.get("known_usecases")
    if isinstance(usecases, list) and usecases and all(isinstance(u, str) for u in usecases) and not any(
            u.lower().removeprefix("flag_") in TEXT_USECASES for u in usecases):
        # A text backend running something else (LocalAI serves text-to-speech through transformers).
        report(Problem(("known_usecases",), f"not a text-generation model (known_usecases: {', '.join(usecases)}): "
                                            f"modelyard serves {', '.join(TEXT_USECASES)}"))
        return None

    if isinstance(item.raw, dict) and item.raw.get("router") and not item.raw.get("backend") \
            and not (item.raw.get("parameters") or {}).get("model"):
        # A LocalAI router is a name that forwards to other models: nothing to load here.
        report(Problem(("router",), "a LocalAI router config (it forwards requests to other models); modelyard does "
                                    "not route, so this model is left out", Severity.WARNING, at_key=True))
        return None
    problems = read_like_localai(item.raw) + validate_model(item.raw)
    for problem in problems:
        report(problem)
    if any(p.is_error for p in problems):
        return None

    def origin_of(path: Path) -> str:
        if (id(item), base + path) in set_paths:
            return "--set"
        where = doc.value_position(base + path)
        return f"{item.source.path}:{where.line}:{where.column}"

    start = doc.value_position(base)
    ctx = ModelContext(
        file=item.source.path, models_dir=item.source.models_dir, env=options.env, probe=options.probe,
        check_files=options.check_files, origin_of=origin_of, report=report,
    )
    return normalize_model(item.raw, ctx, item.fallback_name, f"{item.source.path}:{start.line}")


def _refusal(backend: str) -> str:
    supported = ", ".join(backends.names())
    if backend in OTHER_TEXT_BACKENDS:
        return f"backend {backend!r} is a LocalAI text backend that modelyard does not serve (supported: {supported})"
    hint = "; for embeddings use backend: transformers with embeddings: true" \
        if "sentence" in backend or "embeddings" in backend else ""
    return f"{backend!r} is not a text-generation backend: modelyard serves {supported}{hint}"


def _duplicate_names(plans: list[tuple[ModelPlan, _Item]]) -> list[Diagnostic]:
    first: dict[str, ModelPlan] = {}
    found = []
    for plan, item in plans:
        if plan.name in first:
            where = item.document.value_position(item.base + ("name",))
            found.append(Diagnostic(item.source.path, where, plan.name,
                                    f"duplicate model name {plan.name!r} (also defined at {first[plan.name].source})"))
        else:
            first[plan.name] = plan
    return found


def _implicit_gguf_models(
    sources: Sequence[Source], plans: list[tuple[ModelPlan, _Item]], options: CompileOptions,
    diagnostics: list[Diagnostic],
) -> list[tuple[ModelPlan, _Item]]:
    """A GGUF or ggml file no YAML refers to becomes a model of its own (LocalAI does the same)."""
    claimed = {options.probe.real_path(p.model) for p, _ in plans if p.model and p.model_is_local}
    names = {p.name for p, _ in plans}
    implicit = []
    for source in sources:
        if source.kind == "yaml" or options.probe.real_path(source.path) in claimed:
            continue
        if source.kind == "ggml":
            diagnostics.append(Diagnostic(source.path, Position(), "", GGML_DEPRECATED))
            continue
        name = PurePath(source.path).name
        if name in names:
            continue
        metadata = options.probe.gguf_metadata(source.path)
        if metadata is None:
            diagnostics.append(Diagnostic(source.path, Position(), name, "not a readable GGUF file"))
            continue
        gguf_backend = next(spec.name for spec in backends.all_backends() if spec.gguf)
        raw: dict[str, Any] = {"name": name, "backend": gguf_backend, "parameters": {"model": PurePath(source.path).name}}
        if metadata.chat_template:
            raw["template"] = {"use_tokenizer_template": True}
            raw["options"] = ["use_jinja:true"]
        sink = DiagnosticSink(source.path)
        document = LoadedDocument(raw)
        item = _Item(Source(source.path, "yaml", "", str(PurePath(source.path).parent)), document, (), raw, sink)
        plan = _compile_item(item, options, set())
        diagnostics.extend(d for d in sink.items if d.is_error)
        if plan is not None:
            origins = {k: ("implicit (bare GGUF file)" if v.startswith(source.path + ":") else v)
                       for k, v in plan.origins.items()}
            implicit.append((plan.model_copy(update={"origins": origins, "source": f"{source.path}:1"}), item))
    return implicit

