"""Validated model mapping → ``ModelPlan``, with the origin of every value.

Runs only on models that passed schema validation, so types are right; what is checked here
needs more than one field or the host: backend inference, model paths, templates, options,
environment overrides and backend-specific rules.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, get_args

from .backend_rules import check_backend_rules
from .diagnostics import Severity
from .env_overrides import apply_env_overrides
from .gguf_metadata import GgufMetadata
from .options import parse_options
from .paths import SAFE_NAME, Path
from .plan import (
    Exllama2,
    LlamaCpp,
    ModelPlan,
    OutputRules,
    Sampling,
    Template,
    Templates,
    Transformers,
    Usecase,
    Vllm,
)
from .schema_validation import model_schema
from .sources import GGML_DEPRECATED, PACKAGE_SCHEME, HostProbe
from .templates import resolve_template, tokenizer_template

TEXT_USECASES = get_args(Usecase)
GGUF_CONTEXT_CAP = 8192
DEFAULT_CONTEXT = 4096
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_TEMPLATE_KINDS = ("chat", "chat_message", "completion", "edit", "function")


@dataclass
class ModelContext:
    """What normalization needs beyond the mapping itself."""

    file: str
    models_dir: str
    env: Mapping[str, str]
    probe: HostProbe
    check_files: bool
    origin_of: Callable[[Path], str]  # YAML path → "file:line:col" or "--set"
    report: Callable[[Path, str, Severity, bool], None]  # path, message, severity, at_key
    origins: dict[str, str] = field(default_factory=dict)
    errors: int = 0

    def add(self, path: Path, message: str, severity: Severity, at_key: bool = False) -> None:
        self.errors += severity is Severity.ERROR
        self.report(path, message, severity, at_key)

    def error(self, path: Path, message: str, at_key: bool = False) -> None:
        self.add(path, message, Severity.ERROR, at_key)

    def warning(self, path: Path, message: str, at_key: bool = False) -> None:
        self.add(path, message, Severity.WARNING, at_key)


class _Reader:
    """Reads values out of the raw mapping, recording where each one came from."""

    def __init__(self, raw: Mapping[str, Any], ctx: ModelContext) -> None:
        self.raw = raw
        self.ctx = ctx

    def get(self, path: Path, dest: str, default: Any = None, default_origin: str = "default") -> Any:
        value = _lookup(self.raw, path)
        if value is None:
            self.ctx.origins[dest] = default_origin
            return default
        self.ctx.origins[dest] = self.ctx.origin_of(path)
        return value

    def set(self, dest: str, value: Any, origin: str) -> Any:
        self.ctx.origins[dest] = origin
        return value


def _lookup(raw: Mapping[str, Any], path: Path) -> Any:
    value: Any = raw
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)  # type: ignore[arg-type]
    return value


def normalize_model(raw: Mapping[str, Any], ctx: ModelContext, fallback_name: str, source: str) -> ModelPlan | None:
    r = _Reader(raw, ctx)
    errors_before = ctx.errors

    model_value = r.get(("parameters", "model"), "model")
    backend = _backend(r, model_value, ctx)
    name = _name(r, model_value, fallback_name, ctx)
    model, model_is_local = _model_path(model_value, backend, ctx)
    if backend is None or name is None:
        return None

    metadata = _gguf_metadata(model, backend, ctx) if model_is_local and model else None
    hf_dir = model if backend in ("transformers", "vllm", "exllama2") and model_is_local and model else None
    templates = _templates(r, ctx, metadata, backend, hf_dir)
    embeddings = bool(r.get(("embeddings",), "embeddings", False))
    declared = [str(u).lower().removeprefix("flag_") for u in raw.get("known_usecases") or []]
    if not embeddings and "embeddings" in declared:
        embeddings = r.set("embeddings", True, "inferred from known_usecases")
    roles = dict(r.get(("roles",), "roles", {}))
    usecases = _usecases(r, templates, roles, embeddings, ctx)
    plan_fields: dict[str, Any] = dict(
        name=name,
        backend=backend,
        source=source,
        description=r.get(("description",), "description"),
        grammar=r.get(("grammar",), "grammar") or None,
        usecases=usecases,
        model=model,
        model_is_local=model_is_local,
        context_size=_context_size(r, backend, metadata, ctx),
        threads=_threads(r),
        system_prompt=r.get(("system_prompt",), "system_prompt"),
        roles=roles,
        sampling=_sampling(r),
        output=_output_rules(r, ctx),
        templates=templates,
        embeddings=embeddings,
    )
    options, option_problems = parse_options(list(raw.get("options") or []), backend)
    for problem in option_problems:
        ctx.add(("options", problem.index), problem.message, Severity.ERROR if problem.is_error else Severity.WARNING)
    section = _BACKEND_SECTIONS[backend](r, options, ctx)
    if backend == "llama-cpp":
        section = apply_env_overrides(section, options, ctx)
    plan_fields[backend.replace("-", "_")] = section
    plan_fields["origins"] = dict(sorted(ctx.origins.items()))
    if ctx.errors > errors_before:
        return None
    plan = ModelPlan(**plan_fields)
    check_backend_rules(plan, raw, ctx)
    return None if ctx.errors > errors_before else plan


def _backend(r: _Reader, model_value: str | None, ctx: ModelContext) -> str | None:
    given = r.get(("backend",), "backend")
    if given is not None:
        return model_schema()["properties"]["backend"]["x-aliases"].get(given, given)
    if isinstance(model_value, str) and (model_value.lower().endswith(".gguf") or model_value.startswith(PACKAGE_SCHEME)):
        return r.set("backend", "llama-cpp", "inferred from parameters.model (.gguf)")
    if isinstance(model_value, str) and ctx.probe.is_dir(os.path.join(ctx.models_dir, model_value)):
        return r.set("backend", "transformers", "inferred from parameters.model (a directory)")
    ctx.error((), "missing required key 'backend' (it cannot be inferred from parameters.model)")
    return None


def _name(r: _Reader, model_value: str | None, fallback: str, ctx: ModelContext) -> str | None:
    name = r.get(("name",), "name")
    if name is not None:
        return name
    # LocalAI names a nameless model after its model file.
    candidate = posixpath.basename(model_value) if isinstance(model_value, str) else fallback
    if SAFE_NAME.match(candidate or ""):
        return r.set("name", candidate, "inferred from parameters.model" if model_value else "inferred from the file name")
    ctx.error((), "missing required key 'name'")
    return None


def _model_path(value: str | None, backend: str | None, ctx: ModelContext) -> tuple[str | None, bool]:
    """Resolve ``parameters.model`` inside the models directory; refuse anything that escapes it."""
    where = ("parameters", "model")
    if value is None:
        if backend is not None:
            ctx.error((), "missing required key 'parameters.model'")
        return None, True
    if value.startswith(PACKAGE_SCHEME):
        if not ctx.check_files:
            return value, True
        if ctx.probe.resolve_package(value) is None:
            ctx.error(where, f"{value!r}: no installed package provides this model "
                             "(package://MODULE needs MODULE installed, with an assemble() function)")
            return None, True
        return value, True
    if _URL.match(value):
        ctx.error(where, f"{value!r} is a URL: modelyard loads local files; install it with the gallery "
                         "or download it into the models directory")
        return None, True
    normalized = posixpath.normpath(value.replace("\\", "/"))
    models_dir = ctx.models_dir
    if posixpath.isabs(normalized):
        real_dir = ctx.probe.real_path(models_dir)
        if not _inside(ctx.probe.real_path(normalized), real_dir):
            ctx.error(where, f"absolute path {value!r} is outside the models directory {models_dir!r}")
            return None, True
        candidate = normalized
    else:
        if normalized == ".." or normalized.startswith("../"):
            ctx.error(where, f"{value!r} escapes the models directory {models_dir!r}")
            return None, True
        candidate = posixpath.join(models_dir, normalized)
    if backend in ("transformers", "vllm", "exllama2") and _HUB_ID.match(value) and not ctx.probe.is_dir(candidate):
        return value, False  # a Hugging Face repo id, fetched by the backend's own hub client
    if not ctx.check_files:
        return candidate, True
    exists = ctx.probe.is_file(candidate) or ctx.probe.is_dir(candidate)
    if not exists:
        ctx.error(where, f"model file {value!r} not found in the models directory {models_dir!r}")
        return None, True
    if not _inside(ctx.probe.real_path(candidate), ctx.probe.real_path(models_dir)):
        ctx.error(where, f"{value!r} is a link to a file outside the models directory {models_dir!r}")
        return None, True
    if candidate.lower().endswith(".bin") and backend == "llama-cpp":
        ctx.error(where, GGML_DEPRECATED)
        return None, True
    return candidate, True


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def _gguf_metadata(model: str, backend: str, ctx: ModelContext) -> GgufMetadata | None:
    if backend != "llama-cpp" or not ctx.check_files:
        return None
    path = ctx.probe.resolve_package(model) if model.startswith(PACKAGE_SCHEME) else model
    if path is None or not path.lower().endswith(".gguf"):
        return None
    metadata = ctx.probe.gguf_metadata(path)
    if metadata is None:
        ctx.error(("parameters", "model"), f"{model!r} is not a readable GGUF file")
    return metadata


def _context_size(r: _Reader, backend: str, metadata: GgufMetadata | None, ctx: ModelContext) -> int | None:
    given = r.get(("context_size",), "context_size")
    trained = metadata.context_length if metadata else None
    arch = metadata.architecture if metadata else None
    if given == -1:
        return r.set("context_size", trained, f"gguf {arch}.context_length (context_size: -1)") if trained else None
    if given:
        return given
    if trained:
        return r.set("context_size", min(trained, GGUF_CONTEXT_CAP),
                     f"gguf {arch}.context_length ({trained}, capped at {GGUF_CONTEXT_CAP})")
    if backend in ("llama-cpp", "transformers", "exllama2"):
        return r.set("context_size", DEFAULT_CONTEXT, "default")
    return r.set("context_size", None, "default (the engine decides)")


def _threads(r: _Reader) -> int | None:
    threads = r.get(("threads",), "threads", None, "default (physical cores)")
    return threads or None


_SAMPLING_KEYS = (
    "temperature", "top_p", "top_k", "min_p", "max_tokens", "seed", "typical_p", "repeat_penalty",
    "repeat_last_n", "frequency_penalty", "presence_penalty", "n_keep", "n", "ignore_eos", "echo",
)


def _sampling(r: _Reader) -> Sampling:
    defaults = Sampling()
    values: dict[str, Any] = {}
    for key in _SAMPLING_KEYS:
        value = r.get(("parameters", key), f"sampling.{key}", getattr(defaults, key))
        if key == "max_tokens" and value == 0:
            value = None  # LocalAI: 0 means "no cap beyond the context"
        if key == "seed" and value == -1:
            value = None
        values[key] = value
    return Sampling(**values)


def _output_rules(r: _Reader, ctx: ModelContext) -> OutputRules:
    for index, pattern in enumerate(r.raw.get("cutstrings") or []):
        try:
            re.compile(pattern)
        except re.error as exc:
            ctx.error(("cutstrings", index), f"invalid regular expression: {exc}")
    return OutputRules(**{
        key: tuple(r.get((key,), f"output.{key}", ()))
        for key in ("stopwords", "cutstrings", "trimspace", "trimsuffix")
    })


def _templates(r: _Reader, ctx: ModelContext, metadata: GgufMetadata | None, backend: str,
               hf_dir: str | None) -> Templates:
    resolved: dict[str, Template | None] = {}
    for kind in _TEMPLATE_KINDS:
        value = r.get(("template", kind), f"templates.{kind}")
        if value is None:
            resolved[kind] = None
            continue
        result = resolve_template(value, ctx.models_dir, ctx.probe)
        if result.error:
            ctx.error(("template", kind), result.error)
        elif result.warning:
            ctx.warning(("template", kind), result.warning)
        resolved[kind] = result.template
    use_tokenizer = bool(r.get(("template", "use_tokenizer_template"), "templates.use_tokenizer_template", False))
    if backend == "llama-cpp" and not use_tokenizer and not any(resolved.values()) and not r.raw.get("roles") \
            and (metadata.chat_template if metadata is not None else not ctx.check_files):
        # No template at all: LocalAI uses the chat template the GGUF carries, and so do we
        # (without the file at hand, it is checked once the file is there).
        use_tokenizer = r.set("templates.use_tokenizer_template", True,
                              "guessed: no template in the YAML, the GGUF's tokenizer.chat_template is used")
    tokenizer = None
    if use_tokenizer and hf_dir is not None and ctx.check_files:
        found = _hf_chat_template(hf_dir, ctx)
        if found is None:
            ctx.error(("template", "use_tokenizer_template"),
                      f"{hf_dir!r} has no chat template (chat_template.jinja, or chat_template in "
                      "tokenizer_config.json); set template.chat_message and template.chat")
        else:
            text, where = found
            result = tokenizer_template(text)
            if result.error:
                ctx.error(("template", "use_tokenizer_template"), result.error)
            tokenizer = r.set("templates.tokenizer_template", result.template, where)
    elif use_tokenizer and metadata is not None:
        if metadata.chat_template:
            result = tokenizer_template(metadata.chat_template)
            if result.error:
                ctx.error(("template", "use_tokenizer_template"), result.error)
            tokenizer = r.set("templates.tokenizer_template", result.template, "gguf tokenizer.chat_template")
        else:
            ctx.error(("template", "use_tokenizer_template"),
                      "the GGUF file has no tokenizer.chat_template; set template.chat_message and template.chat")
    join = r.get(("template", "join_chat_messages_by_character"), "templates.join_chat_messages_by_character", "\n")
    return Templates(**resolved, use_tokenizer_template=use_tokenizer, tokenizer_template=tokenizer,
                     join_chat_messages_by_character=join)


def _hf_chat_template(directory: str, ctx: ModelContext) -> tuple[str, str] | None:
    """A Hugging Face model directory's chat template and the file it came from."""
    jinja = posixpath.join(directory, "chat_template.jinja")
    text = ctx.probe.read_text(jinja) if ctx.probe.is_file(jinja) else None
    if text:
        return text, jinja
    config_path = posixpath.join(directory, "tokenizer_config.json")
    raw = ctx.probe.read_text(config_path) if ctx.probe.is_file(config_path) else None
    try:
        template = json.loads(raw).get("chat_template") if raw else None
    except (ValueError, AttributeError):
        return None
    if isinstance(template, list):  # named templates: the default one
        template = next((t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"),
                        None)
    return (template, f"{config_path} chat_template") if isinstance(template, str) and template else None


def _usecases(r: _Reader, templates: Templates, roles: dict, embeddings: bool, ctx: ModelContext) -> tuple[str, ...]:
    can_chat = bool(templates.chat or templates.chat_message or templates.use_tokenizer_template or roles)
    declared = r.get(("known_usecases",), "usecases")
    if declared is None:
        # An embeddings model serves embeddings unless it declares more.
        inferred = ["completion"] if not embeddings else []
        if can_chat and not embeddings:
            inferred += ["chat", "edit"]
        if embeddings:
            inferred.append("embeddings")
        if not can_chat and not embeddings:
            ctx.warning((), "no chat template and no use_tokenizer_template: /v1/chat/completions will refuse "
                            "this model (set template.chat_message, or template.use_tokenizer_template)")
        return r.set("usecases", tuple(sorted(inferred)), "inferred from the templates")
    usecases = set()
    for index, item in enumerate(declared):
        usecase = item.lower().removeprefix("flag_")
        if usecase in TEXT_USECASES:
            usecases.add(usecase)
        else:
            ctx.warning(("known_usecases", index), f"usecase {item!r} is not served by modelyard (ignored)")
    if "chat" in usecases and not can_chat:
        ctx.error(("known_usecases",), "chat is declared but there is no chat template: set template.chat_message "
                                       "(and template.chat), or template.use_tokenizer_template")
    return tuple(sorted(usecases))


# --- backend sections ----------------------------------------------------------------------------


def _llama_cpp(r: _Reader, options: dict, ctx: ModelContext) -> LlamaCpp:
    defaults = LlamaCpp()
    main_gpu = r.get(("main_gpu",), "llama_cpp.main_gpu", "0")
    try:
        main_gpu_index = int(main_gpu)
    except ValueError:
        ctx.error(("main_gpu",), f"llama-cpp takes a GPU index for main_gpu, got {main_gpu!r}")
        main_gpu_index = 0
    values: dict[str, Any] = dict(
        gpu_layers=r.get(("gpu_layers",), "llama_cpp.gpu_layers", None, "default (all layers where a GPU build is installed)"),
        mmap=r.get(("mmap",), "llama_cpp.mmap", True),
        mlock=r.get(("mmlock",), "llama_cpp.mlock", False),
        f16_kv=r.get(("f16",), "llama_cpp.f16_kv", True),
        main_gpu=main_gpu_index,
        batch=r.get(("parameters", "batch"), "llama_cpp.batch", defaults.batch) or defaults.batch,
        rope_freq_base=r.get(("parameters", "rope_freq_base"), "llama_cpp.rope_freq_base", 0.0),
        rope_freq_scale=r.get(("parameters", "rope_freq_scale"), "llama_cpp.rope_freq_scale", 0.0),
        flash_attention=_flash_attention(r.get(("flash_attention",), "llama_cpp.flash_attention", "auto"), ctx),
    )
    option_fields = {"use_jinja": "use_jinja", "context_shift": "context_shift", "cache_ram": "cache_ram_mib",
                     "parallel": "parallel", "grpc_servers": "grpc_servers", "repack": "repack"}
    for option, field_name in option_fields.items():
        parsed = options.get(option)
        if parsed is None:
            ctx.origins[f"llama_cpp.{field_name}"] = "default"
            continue
        values[field_name] = r.set(f"llama_cpp.{field_name}", parsed.value, ctx.origin_of(("options", parsed.index)))
    if values.get("cache_ram_mib") == -1:
        values["cache_ram_mib"] = None
    return LlamaCpp(**values)


_FLASH_ATTENTION = {"auto": "auto", "on": "on", "enabled": "on", "true": "on", "off": "off", "disabled": "off",
                    "false": "off"}


def _flash_attention(value: Any, ctx: ModelContext) -> str:
    """LocalAI's ``flash_attention``: a boolean, or ``auto`` / ``on`` / ``off`` (llama.cpp's words)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    mode = _FLASH_ATTENTION.get(str(value).strip().lower())
    if mode is None:
        ctx.error(("flash_attention",), f"expected auto, on or off (or true / false), got {value!r}")
        return "auto"
    return mode


def _transformers(r: _Reader, options: dict, ctx: ModelContext) -> Transformers:
    return Transformers(
        model_class=r.get(("type",), "transformers.model_class", "AutoModelForCausalLM"),
        quantization=r.get(("quantization",), "transformers.quantization"),
        device=r.get(("main_gpu",), "transformers.device", None, "default (CUDA if present, else CPU)"),
        f16=r.get(("f16",), "transformers.f16", False),
        trust_remote_code=r.get(("trust_remote_code",), "transformers.trust_remote_code", False),
        low_vram=r.get(("low_vram",), "transformers.low_vram", False),
    )


def _vllm(r: _Reader, options: dict, ctx: ModelContext) -> Vllm:
    keys = ("quantization", "dtype", "gpu_memory_utilization", "tensor_parallel_size", "pipeline_parallel_size",
            "distributed_executor_backend", "max_model_len", "enforce_eager", "swap_space", "load_format",
            "disable_log_stats", "trust_remote_code", "engine_args")
    defaults = Vllm()
    values = {key: r.get((key,), f"vllm.{key}", getattr(defaults, key)) for key in keys}
    return Vllm(**values)


def _exllama2(r: _Reader, options: dict, ctx: ModelContext) -> Exllama2:
    split = r.get(("gpu_split",), "exllama2.gpu_split", ())
    if isinstance(split, str):
        split = tuple(float(part) for part in split.split(","))
    return Exllama2(gpu_split=tuple(split))


_BACKEND_SECTIONS = {"llama-cpp": _llama_cpp, "transformers": _transformers, "vllm": _vllm, "exllama2": _exllama2}

