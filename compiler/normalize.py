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
from typing import Any, get_args

from . import backends, go_regex, xml_tool_formats
from .backend_rules import check_backend_rules
from .context import ModelContext, Reader
from .gguf_metadata import GgufMetadata
from .inference_defaults import family_defaults
from .model_urls import MODEL_URL_PREFIXES, is_model_url, listed_downloads, local_file_name, model_download
from .options import parse_options
from .paths import SAFE_NAME
from .plan import (
    FunctionParsing,
    ModelDownload,
    ModelPlan,
    OutputRules,
    Reasoning,
    Sampling,
    Template,
    Templates,
    ToolGrammar,
    Usecase,
    XmlToolFormat,
)
from .sources import GGML_DEPRECATED, PACKAGE_SCHEME
from .templates import resolve_template, tokenizer_template

TEXT_USECASES = get_args(Usecase)
GGUF_CONTEXT_CAP = 8192
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_TEMPLATE_KINDS = ("chat", "chat_message", "completion", "edit", "function")
_TEMPLATE_BESIDE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")  # a model file right in the models directory


def normalize_model(raw: Mapping[str, Any], ctx: ModelContext, fallback_name: str, source: str) -> ModelPlan | None:
    r = Reader(raw, ctx)
    errors_before = ctx.errors

    model_value = r.get(("parameters", "model"), "model")
    downloads = _downloads(r, model_value, ctx)
    if isinstance(model_value, str) and is_model_url(model_value):
        model_value = local_file_name(model_value)  # what LocalAI loads once it is fetched
    backend = _backend(r, model_value, ctx)
    name = _name(r, model_value, fallback_name, ctx)
    pending = {d.filename for d in downloads}
    model, model_is_local = _model_path(model_value, backend, ctx, fetched=model_value in pending)
    if backend is None or name is None:
        return None

    # A file still to be fetched is read once it is there (the launcher compiles again then).
    metadata = _gguf_metadata(model, backend, ctx) if model_is_local and model and model_value not in pending else None
    spec = backends.get(backend)
    hf_dir = model if spec.model_directories and model_is_local and model else None
    templates = _templates(r, ctx, metadata, backend, hf_dir, file_known=ctx.check_files and model_value not in pending)
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
        downloads=downloads,
        context_size=_context_size(r, backend, metadata, ctx),
        threads=_threads(r),
        system_prompt=r.get(("system_prompt",), "system_prompt"),
        reasoning_effort=r.get(("reasoning_effort",), "reasoning_effort"),
        chat_template_kwargs=dict(r.get(("chat_template_kwargs",), "chat_template_kwargs", {})),
        roles=roles,
        sampling=_sampling(r, name, model_value),
        output=_output_rules(r, ctx),
        reasoning=_reasoning(r),
        function_parsing=_function_parsing(r, ctx),
        tool_grammar=_tool_grammar(r, templates, backend, ctx),
        templates=templates,
        embeddings=embeddings,
    )
    options, option_problems = parse_options(list(raw.get("options") or []), backend)
    for problem in option_problems:
        ctx.problem(problem)
    if spec.section is not None and spec.read_section is not None:
        plan_fields[spec.section] = spec.read_section(r, options, ctx)
    plan_fields["origins"] = dict(sorted(ctx.origins.items()))
    if ctx.errors > errors_before:
        return None
    plan = ModelPlan(**plan_fields)
    check_backend_rules(plan, raw, ctx)
    return None if ctx.errors > errors_before else plan


def _backend(r: Reader, model_value: str | None, ctx: ModelContext) -> str | None:
    given = r.get(("backend",), "backend")
    if given is not None:
        spec = backends.resolve(given)
        return spec.name if spec is not None else given
    if isinstance(model_value, str) and (model_value.lower().endswith(".gguf") or model_value.startswith(PACKAGE_SCHEME)):
        return r.set("backend", _first(lambda b: b.gguf), "inferred from parameters.model (.gguf)")
    if isinstance(model_value, str) and ctx.probe.is_dir(os.path.join(ctx.models_dir, model_value)):
        return r.set("backend", _first(lambda b: b.model_directories), "inferred from parameters.model (a directory)")
    if not isinstance(model_value, str):
        ctx.error((), "missing required key 'backend' (it cannot be inferred without parameters.model)")
        return None
    gguf = _first(lambda b: b.gguf)
    path = os.path.join(ctx.models_dir, model_value)
    if ctx.check_files and ctx.probe.is_file(path) and ctx.probe.gguf_metadata(path) is not None:
        return r.set("backend", gguf, "inferred from parameters.model (a GGUF file)")
    # LocalAI tries every installed backend on such a file (pkg/model/autoload.go); llama.cpp is
    # the one that loads a model file, so it is assumed, and said.
    ctx.warning((), f"no backend, and {model_value!r} is neither a .gguf file nor a directory: {gguf} is assumed "
                    "(LocalAI tries each installed backend; set 'backend' to choose)")
    return r.set("backend", gguf, "assumed (LocalAI tries each installed backend)")


def _first(has: Callable[[backends.BackendSpec], bool]) -> str:
    """The first backend (in the registry's order) with a capability: what a model file implies."""
    return next(spec.name for spec in backends.all_backends() if has(spec))


def _name(r: Reader, model_value: str | None, fallback: str, ctx: ModelContext) -> str | None:
    name = r.get(("name",), "name")
    if name is not None:
        return name
    # LocalAI names a nameless model after its model file.
    candidate = posixpath.basename(model_value) if isinstance(model_value, str) else fallback
    if SAFE_NAME.match(candidate or ""):
        return r.set("name", candidate, "inferred from parameters.model" if model_value else "inferred from the file name")
    ctx.error((), "missing required key 'name'")
    return None


def _downloads(r: Reader, model_value: Any, ctx: ModelContext) -> tuple[ModelDownload, ...]:
    """The model URL's download, then ``download_files``'s (a later one of the same file wins)."""
    found: dict[str, ModelDownload] = {}
    if isinstance(model_value, str) and is_model_url(model_value):
        download, problem = model_download(model_value, ctx.models_dir)
        if problem is not None:
            ctx.problem(problem)
        if download is not None:
            found[download.filename] = download
    for item in listed_downloads(r.get(("download_files",), "downloads"), ctx.models_dir):
        if isinstance(item, ModelDownload):
            found[item.filename] = item
        else:
            ctx.problem(item)
    if found:
        r.set("downloads", None, ctx.origin_of(("download_files",)) if r.raw.get("download_files")
              else ctx.origin_of(("parameters", "model")))
    return tuple(found.values())


def _model_path(value: str | None, backend: str | None, ctx: ModelContext, *,
                fetched: bool = False) -> tuple[str | None, bool]:
    """Resolve ``parameters.model`` inside the models directory; refuse anything that escapes it.
    A file the launcher will ``fetch`` first need not be there yet."""
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
        ctx.error(where, f"{value!r}: unsupported URL (LocalAI's are {', '.join(MODEL_URL_PREFIXES)})")
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
    if backend is not None and backends.get(backend).model_directories and _HUB_ID.match(value) and not ctx.probe.is_dir(candidate):
        return value, False  # a Hugging Face repo id, fetched by the backend's own hub client
    if not ctx.check_files or fetched:
        return candidate, True
    exists = ctx.probe.is_file(candidate) or ctx.probe.is_dir(candidate)
    if not exists:
        ctx.error(where, f"model file {value!r} not found in the models directory {models_dir!r}")
        return None, True
    if not _inside(ctx.probe.real_path(candidate), ctx.probe.real_path(models_dir)):
        ctx.error(where, f"{value!r} is a link to a file outside the models directory {models_dir!r}")
        return None, True
    if candidate.lower().endswith(".bin") and backend is not None and backends.get(backend).gguf:
        ctx.error(where, GGML_DEPRECATED)
        return None, True
    return candidate, True


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def _gguf_metadata(model: str, backend: str, ctx: ModelContext) -> GgufMetadata | None:
    if not backends.get(backend).gguf or not ctx.check_files:
        return None
    path = ctx.probe.resolve_package(model) if model.startswith(PACKAGE_SCHEME) else model
    if path is None or not path.lower().endswith(".gguf"):
        return None
    metadata = ctx.probe.gguf_metadata(path)
    if metadata is None:
        ctx.error(("parameters", "model"), f"{model!r} is not a readable GGUF file")
    return metadata


def _context_size(r: Reader, backend: str, metadata: GgufMetadata | None, ctx: ModelContext) -> int | None:
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
    default = backends.get(backend).default_context
    if default is not None:
        return r.set("context_size", default, "default")
    return r.set("context_size", None, "default (the engine decides)")


def _threads(r: Reader) -> int | None:
    threads = r.get(("threads",), "threads", None, "default (physical cores)")
    return threads or None


_SAMPLING_KEYS = (
    "temperature", "top_p", "top_k", "min_p", "max_tokens", "seed", "typical_p", "repeat_penalty",
    "repeat_last_n", "frequency_penalty", "presence_penalty", "n_keep", "n", "ignore_eos", "echo",
)


def _sampling(r: Reader, name: str, model_value: str | None) -> Sampling:
    """The YAML's sampling defaults; where it sets none, LocalAI's for the model's family (by its
    name, then its model file), then LocalAI's generic ones."""
    defaults = Sampling()
    family = family_defaults(name, model_value)
    values: dict[str, Any] = {}
    for key in _SAMPLING_KEYS:
        if family is not None and key in family[2]:
            matched, pattern, table = family
            value = r.get(("parameters", key), f"sampling.{key}", type(getattr(defaults, key))(table[key]),
                          f"LocalAI's inference defaults for the {pattern} family ({matched!r})")
        else:
            value = r.get(("parameters", key), f"sampling.{key}", getattr(defaults, key))
        if key == "max_tokens" and value == 0:
            value = None  # LocalAI: 0 means "no cap beyond the context"
        if key == "seed" and value == -1:
            value = None
        values[key] = value
    return Sampling(**values)


def _function_parsing(r: Reader, ctx: ModelContext) -> FunctionParsing:
    """LocalAI's ``function:`` parsing keys; its Go patterns put in Python's syntax (one RE2
    refuses is skipped, as LocalAI's MustCompile would not even start)."""
    def patterns(key: str) -> tuple[str, ...]:
        found = []
        for index, pattern in enumerate(r.get(("function", key), f"function_parsing.{key}", ())):
            translated = _checked_pattern(pattern, ("function", key, index), ctx)
            if translated is not None:
                found.append(translated)
        return tuple(found)

    def replacements(key: str) -> tuple[tuple[str, str], ...]:
        found = []
        for index, item in enumerate(r.get(("function", key), f"function_parsing.{key}", ())):
            translated = _checked_pattern(item["key"], ("function", key, index, "key"), ctx)
            if translated is not None:
                found.append((translated, go_regex.replacement(item.get("value") or "")))
        return tuple(found)

    return FunctionParsing(
        response_regex=patterns("response_regex"), json_regex_match=patterns("json_regex_match"),
        argument_regex=patterns("argument_regex"),
        argument_key=r.get(("function", "argument_regex_key_name"), "function_parsing.argument_key", "key"),
        argument_value=r.get(("function", "argument_regex_value_name"), "function_parsing.argument_value", "value"),
        replace_function_results=replacements("replace_function_results"),
        replace_llm_results=replacements("replace_llm_results"), capture_llm_results=patterns("capture_llm_results"),
        name_key=r.get(("function", "function_name_key"), "function_parsing.name_key", "name"),
        arguments_key=r.get(("function", "function_arguments_key"), "function_parsing.arguments_key", "arguments"),
        xml_format=_xml_format(r, ctx),
    )


def _xml_format(r: Reader, ctx: ModelContext) -> XmlToolFormat | None:
    """``function.xml_format`` (spelled out), else ``xml_format_preset`` by name."""
    custom = r.get(("function", "xml_format"), "function_parsing.xml_format")
    if isinstance(custom, dict):
        fields = {key: value for key, value in custom.items() if key in XmlToolFormat.model_fields}
        if "raw_argval" in custom:
            fields["raw_values"] = custom["raw_argval"]
        if "trim_raw_argval" in custom:
            fields["trim_values"] = bool(custom["trim_raw_argval"])
        missing = [key for key in ("tool_start", "tool_sep", "key_start", "key_val_sep", "val_end", "tool_end")
                   if not isinstance(fields.get(key), str)]
        if missing:
            ctx.error(("function", "xml_format"), f"missing {', '.join(missing)} (each a string)")
            return None
        return XmlToolFormat(**fields)
    preset = r.get(("function", "xml_format_preset"), "function_parsing.xml_format")
    if not preset:
        return None
    if preset in xml_tool_formats.PRESETS:
        return xml_tool_formats.PRESETS[preset]
    if preset not in xml_tool_formats.JSON_SHAPED_PRESETS:
        known = (*xml_tool_formats.PRESETS, *xml_tool_formats.JSON_SHAPED_PRESETS)
        ctx.warning(("function", "xml_format_preset"), f"unknown preset {preset!r} (LocalAI ignores it too); "
                                                       f"known: {', '.join(known)}")
    return None


def _tool_grammar(r: Reader, templates: Templates, backend: str, ctx: ModelContext) -> ToolGrammar:
    """LocalAI constrains every tool request whose prompt it renders itself (chat.go l.327)
    unless ``function.grammar.disable``: a model whose chat is the tokenizer's template
    (``use_tokenizer_template``, or a GGUF's own template) leaves the tools to the backend
    (model_config.go l.1485, gguf.go l.139), and so does modelyard. ``mixed_mode`` and
    ``prefix`` shape LocalAI's GBNF (grammars/rules.go): a backend that takes GBNF gets the
    same; on the others ``mixed_mode`` means no constraint and ``prefix`` is left out."""
    block = r.raw.get("function")
    settings = block.get("grammar") if isinstance(block, dict) else None
    settings = settings if isinstance(settings, dict) else {}
    renders_chat = templates.chat is not None or templates.chat_message is not None or bool(r.raw.get("roles"))
    gbnf = backends.get(backend).grammar
    mixed = bool(r.get(("function", "grammar", "mixed_mode"), "tool_grammar.mixed_mode", False))
    off = ("off: the tokenizer's template renders the chat" if templates.use_tokenizer_template
           else "off: the YAML has no chat template" if not renders_chat
           else "off: function.grammar.disable" if settings.get("disable")
           else f"off: mixed_mode, and {backend} takes no GBNF" if mixed and not gbnf else None)
    prefix = r.get(("function", "grammar", "prefix"), "tool_grammar.prefix", "") or ""
    if prefix and not gbnf:
        ctx.warning(("function", "grammar", "prefix"), f"ignored on {backend}: the call grammar there is a JSON "
                                                       "Schema, which cannot put text before the call (llama-cpp can)")
        prefix = ""
    no_action = None if r.get(("function", "disable_no_action"), "tool_grammar.no_action", False) else \
        r.get(("function", "no_action_function_name"), "tool_grammar.no_action", "answer") or "answer"
    return ToolGrammar(
        enabled=r.set("tool_grammar.enabled", off is None, off or "on: the YAML's templates render the chat"),
        parallel_calls=bool(r.get(("function", "grammar", "parallel_calls"), "tool_grammar.parallel_calls", False)),
        no_action=no_action,
        no_action_description=r.get(("function", "no_action_description_name"), "tool_grammar.no_action_description",
                                    ToolGrammar().no_action_description) or ToolGrammar().no_action_description,
        mixed_mode=mixed and gbnf,
        no_mixed_free_string=bool(r.get(("function", "grammar", "no_mixed_free_string"),
                                        "tool_grammar.no_mixed_free_string", False)),
        expect_strings_after_json=bool(r.get(("function", "grammar", "expect_strings_after_json"),
                                             "tool_grammar.expect_strings_after_json", False)),
        prefix=prefix,
    )


def _checked_pattern(pattern: str, where: tuple, ctx: ModelContext) -> str | None:
    """A Go pattern in Python's syntax, or None (with the warning or error that says why)."""
    translated, why = go_regex.to_python(pattern)
    if translated is None:
        ctx.warning(where, f"{pattern!r} is skipped: {why}")
        return None
    try:
        re.compile(translated)
    except re.error as exc:
        ctx.error(where, f"invalid regular expression: {exc}")
        return None
    return translated


def _reasoning(r: Reader) -> Reasoning:
    return Reasoning(
        extract=not r.get(("reasoning", "disable"), "reasoning.extract", False),
        return_reasoning=not r.get(("reasoning", "strip_reasoning_only"), "reasoning.return_reasoning", False),
        prefill=not r.get(("reasoning", "disable_reasoning_tag_prefill"), "reasoning.prefill", False),
        start_tokens=tuple(r.get(("reasoning", "thinking_start_tokens"), "reasoning.start_tokens", ())),
        tag_pairs=tuple((p["start"], p["end"]) for p in r.get(("reasoning", "tag_pairs"), "reasoning.tag_pairs", ())),
    )


def _output_rules(r: Reader, ctx: ModelContext) -> OutputRules:
    lists = {key: tuple(r.get((key,), f"output.{key}", ()))
             for key in ("stopwords", "cutstrings", "extract_regex", "trimspace", "trimsuffix")}
    for key in ("cutstrings", "extract_regex"):  # Go regular expressions, in Python's syntax
        checked = (_checked_pattern(pattern, (key, index), ctx) for index, pattern in enumerate(lists[key]))
        lists[key] = tuple(pattern for pattern in checked if pattern is not None)
    return OutputRules(**lists, echo=bool(r.get(("parameters", "echo"), "output.echo", False)),
                       reply_prefix=r.get(("template", "reply_prefix"), "output.reply_prefix", "") or "")


def _templates(r: Reader, ctx: ModelContext, metadata: GgufMetadata | None, backend: str,
               hf_dir: str | None, *, file_known: bool) -> Templates:
    resolved: dict[str, Template | None] = {}
    model_value = r.raw.get("parameters", {}).get("model") if isinstance(r.raw.get("parameters"), dict) else None
    beside = f"{model_value}.tmpl" if isinstance(model_value, str) and _TEMPLATE_BESIDE.match(model_value) else None
    beside_found = beside is not None and ctx.probe.is_file(os.path.join(ctx.models_dir, beside))
    for kind in _TEMPLATE_KINDS:
        value = r.get(("template", kind), f"templates.{kind}")
        if value is None and beside_found and kind != "chat_message":
            # LocalAI's EvaluateTemplateForPrompt (core/templates/evaluator.go l.62): a
            # `<parameters.model>.tmpl` in the models directory is every unset template but chat_message.
            value = r.set(f"templates.{kind}", model_value, f"{beside} beside the model file")
        if value is None:
            resolved[kind] = None
            continue
        result = resolve_template(value, ctx.models_dir, ctx.probe, kind)
        for problem in result.problems:
            ctx.problem(problem.under(("template", kind)))
        resolved[kind] = result.template
    use_tokenizer = bool(r.get(("template", "use_tokenizer_template"), "templates.use_tokenizer_template", False))
    if backends.get(backend).gguf and not use_tokenizer and not any(resolved.values()) and not r.raw.get("roles") \
            and (metadata.chat_template if metadata is not None else not file_known):
        # No template at all: LocalAI uses the chat template the GGUF carries, and so do we
        # (without the file at hand, it is checked once the file is there).
        use_tokenizer = r.set("templates.use_tokenizer_template", True,
                              "guessed: no template in the YAML, the GGUF's tokenizer.chat_template is used")
    tokenizer = None
    if use_tokenizer and hf_dir is not None and file_known:
        found = _hf_chat_template(hf_dir, ctx)
        if found is None:
            ctx.error(("template", "use_tokenizer_template"),
                      f"{hf_dir!r} has no chat template (chat_template.jinja, or chat_template in "
                      "tokenizer_config.json); set template.chat_message and template.chat")
        else:
            text, where = found
            result = tokenizer_template(text)
            for problem in result.problems:
                ctx.problem(problem.under(("template", "use_tokenizer_template")))
            tokenizer = r.set("templates.tokenizer_template", result.template, where)
    elif use_tokenizer and metadata is not None:
        if metadata.chat_template:
            result = tokenizer_template(metadata.chat_template)
            for problem in result.problems:
                ctx.problem(problem.under(("template", "use_tokenizer_template")))
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


def _usecases(r: Reader, templates: Templates, roles: dict, embeddings: bool, ctx: ModelContext) -> tuple[str, ...]:
    """What the model is for. As in LocalAI, this only picks the default model of a request that
    names none (core/http/routes/openai.go ``BuildUsecaseFilterFn``): chat, completion and edit
    requests are served by any text model."""
    can_chat = bool(templates.chat or templates.chat_message or templates.use_tokenizer_template or roles)
    declared = r.get(("known_usecases",), "usecases")
    if not can_chat and not embeddings:
        ctx.warning((), "no chat template and no use_tokenizer_template: chat messages reach the model joined, "
                        "without a template, as LocalAI sends them (set template.chat_message, or "
                        "template.use_tokenizer_template)")
    if declared is None:
        # LocalAI's GuessUsecases: an embeddings model is for embeddings unless it declares more;
        # chat and edit need a template to be what a model is for.
        inferred = ["completion"] if not embeddings else []
        if can_chat and not embeddings:
            inferred += ["chat", "edit"]
        if embeddings:
            inferred.append("embeddings")
        return r.set("usecases", tuple(sorted(inferred)), "inferred from the templates")
    usecases = set()
    for index, item in enumerate(declared):
        usecase = item.lower().removeprefix("flag_")
        if usecase in TEXT_USECASES:
            usecases.add(usecase)
        else:
            ctx.warning(("known_usecases", index), f"usecase {item!r} is not served by modelyard (ignored)")
    return tuple(sorted(usecases))
