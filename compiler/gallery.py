"""Gallery indexes, and resolving one entry into a model YAML plus the files it needs.

Pure, like the rest of the compiler: index and base-config *texts* come in (the launcher's
``galleries`` module fetches them), values and diagnostics go out. Two index formats are read
by the same code: modelyard's ``gallery/index.yaml`` and LocalAI's ``gallery/index.yaml``
(``url: github:mudler/LocalAI/gallery/chatml.yaml@master`` bases holding ``config_file: |``).

An entry resolves as LocalAI resolves it: the base config, then the entry's inline
``config_file``, then its ``overrides``, then the caller's overrides, each deep-merged over
the last (mappings merge key by key, anything else replaces); the name is set last.
"""

from __future__ import annotations

import copy
import functools
import io
import posixpath
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator

from . import uri_schemes
from .diagnostics import Diagnostic, DiagnosticSink, Position, Severity
from .paths import SAFE_NAME, format_path
from .schema_validation import describe_errors, load_schema
from .yaml_loader import load_yaml

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


class GalleryError(Exception):
    """An entry that cannot be resolved or installed; the message is for the user as is."""


@dataclass(frozen=True)
class GalleryFile:
    filename: str  # relative to the models directory, checked by ``safe_relative_path``
    uri: str
    sha256: str | None  # lower-case hex; None: unverified (needs --allow-unverified)


@dataclass(frozen=True)
class GalleryEntry:
    gallery: str  # the index's name: entries are addressed as ``gallery@name``
    name: str
    data: Mapping[str, Any] = field(repr=False)

    @property
    def id(self) -> str:
        return f"{self.gallery}@{self.name}"

    @property
    def description(self) -> str:
        return str(self.data.get("description") or "").strip()

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(str(t) for t in self.data.get("tags") or ())

    @property
    def license(self) -> str:
        return str(self.data.get("license") or "")

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(str(u) for u in self.data.get("urls") or ())

    @property
    def base_url(self) -> str | None:
        return self.data.get("url") or None

    def summary(self) -> dict[str, Any]:
        """What listings show (CLI and ``GET /models/available``)."""
        return {"id": self.id, "name": self.name, "gallery": self.gallery, "description": self.description,
                "license": self.license, "tags": list(self.tags), "urls": list(self.urls)}


@dataclass(frozen=True)
class Gallery:
    name: str
    location: str  # where the index was read from: a path or a URL; bases resolve against it
    entries: tuple[GalleryEntry, ...]
    diagnostics: tuple[Diagnostic, ...] = ()

    @functools.cached_property
    def _by_name(self) -> dict[str, GalleryEntry]:
        found: dict[str, GalleryEntry] = {}
        for entry in self.entries:
            found.setdefault(entry.name, entry)  # the first of duplicates wins, as in LocalAI
        return found

    def find(self, name: str) -> GalleryEntry | None:
        return self._by_name.get(name)


@dataclass(frozen=True)
class ResolvedModel:
    """An entry made concrete: the model YAML mapping to write and what to fetch before it."""

    name: str
    config: dict[str, Any]
    files: tuple[GalleryFile, ...]
    prompt_templates: tuple[tuple[str, str], ...]  # (name, content): written as <name>.tmpl


# --- indexes ---------------------------------------------------------------------------------


@functools.cache
def _entry_validator() -> Draft202012Validator:
    schema = load_schema("gallery.schema.json")
    return Draft202012Validator({"$ref": "#/$defs/entry", "$defs": schema["$defs"]})


def parse_gallery(text: str, location: str, name: str) -> Gallery:
    """Every valid entry of an index; problems are diagnostics, never exceptions.

    An entry with an error is left out and the rest of the index stays usable. Keys the schema
    does not know are warnings: LocalAI ignores them, and its own index carries a few.
    """
    sink = DiagnosticSink(location)
    documents = load_yaml(text, sink, {})
    data = documents[0].data if documents else []
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        sink.error(Position(), "", "a gallery index is a list of entries")
        data = []
    entries = []
    for index, item in enumerate(data):
        where = documents[0].value_position((index,))
        if not isinstance(item, dict):
            sink.error(where, f"[{index}]", "a gallery entry is a mapping")
            continue
        label = str(item.get("name") or f"[{index}]")
        item = _empty_checksums_unset(item, sink, where, label)
        broken = False
        for finding in describe_errors(_entry_validator(), item):
            unknown_key = finding.at_key and finding.message.startswith("unknown key")
            position = documents[0].key_position((index, *finding.path)) if finding.at_key \
                else documents[0].value_position((index, *finding.path))
            report = sink.warning if unknown_key or not finding.is_error else sink.error
            report(position, _dotted(label, finding.path), finding.message)
            broken |= finding.is_error and not unknown_key
        if not broken:
            entries.append(GalleryEntry(name, item["name"], item))
    return Gallery(name, location, tuple(entries), tuple(sink.items))


def _empty_checksums_unset(item: dict, sink: DiagnosticSink, where: Position, label: str) -> dict:
    """``sha256: ""`` (a few LocalAI entries) means no checksum: say so once, then treat it as unset."""
    files = item.get("files")
    if not isinstance(files, list) or not any(isinstance(f, dict) and f.get("sha256") == "" for f in files):
        return item
    item = dict(item, files=[{k: v for k, v in f.items() if not (k == "sha256" and v == "")}
                             if isinstance(f, dict) else f for f in files])
    sink.warning(where, f"{label}.files", "empty sha256: those files cannot be verified")
    return item


def _dotted(label: str, path: tuple) -> str:
    tail = format_path(path)
    return f"{label}.{tail}" if tail and not tail.startswith("[") else label + tail


# --- resolving an entry ----------------------------------------------------------------------


def resolve_entry(
    entry: GalleryEntry,
    load_base: Callable[[str], str],
    *,
    name: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    extra_files: tuple[GalleryFile, ...] = (),
    local_files: bool = False,
) -> ResolvedModel:
    """The model YAML mapping and files for ``entry``; ``load_base(url)`` returns a base's text.

    ``local_files``: the entry comes from an index on this machine (the operator's), so it and a
    base beside it may name local files (``file://``, ``package://``); a remote base never may.

    Raises GalleryError naming the problem: a base that cannot be read or parsed, an unsafe
    name or file name, a URI with an unsupported scheme, a local file named from elsewhere.
    """
    data = entry.data
    if not any(data.get(k) for k in ("url", "config_file", "overrides", "files")):
        raise GalleryError(f"gallery entry {entry.id!r} has no base config, overrides or files")
    config: dict[str, Any] = {}
    templates: list[tuple[str, str]] = []
    files: list[GalleryFile] = []
    if entry.base_url:
        remote_base = uri_schemes.is_remote(entry.base_url)
        base = _parse_base(load_base(entry.base_url), entry.base_url, remote_only=remote_base or not local_files)
        config = base.config
        templates += base.prompt_templates
        files += base.files
    if data.get("config_file"):
        config = deep_merge(config, _config_mapping(data["config_file"], f"{entry.id} config_file"))
    config = deep_merge(config, data.get("overrides") or {})
    config = deep_merge(config, overrides or {})
    model_name = name or entry.name
    if not SAFE_NAME.match(model_name) or "/" in model_name:
        raise GalleryError(f"{model_name!r} cannot name a model: use letters, digits and . _ - : + @ "
                           "(it becomes the file name <name>.yaml)")
    config["name"] = model_name
    templates += [(str(t["name"]), str(t["content"])) for t in data.get("prompt_templates") or ()]
    files += [_gallery_file(f, entry.id, remote_only=not local_files) for f in data.get("files") or ()]
    files += extra_files
    for template_name, _ in templates:
        safe_relative_path(f"{template_name}.tmpl", what="prompt template name")
    return ResolvedModel(model_name, config, _last_per_filename(files), tuple(dict(templates).items()))


# Keys only a model YAML has at its top level: a base without ``config_file`` holding one of
# them is a plain model YAML; one without (LocalAI's virtual.yaml: name, description, license)
# is LocalAI's outer form with an empty config.
_MODEL_KEYS = frozenset({"backend", "parameters", "template", "context_size", "stopwords", "known_usecases"})


@dataclass(frozen=True)
class _Base:
    config: dict[str, Any]
    prompt_templates: list[tuple[str, str]]
    files: list[GalleryFile]


def _parse_base(text: str, url: str, *, remote_only: bool) -> _Base:
    """A base is LocalAI's form (``config_file:`` holding the model YAML, maybe as a string,
    plus ``prompt_templates`` and ``files``) or simply a model YAML mapping (modelyard's bases)."""
    outer = _yaml_mapping(text, f"base config {url}")
    if "config_file" not in outer and outer.keys() & _MODEL_KEYS:
        return _Base(outer, [], [])
    config = _config_mapping(outer.get("config_file") or {}, f"base config {url}")
    templates = [(str(t["name"]), str(t["content"])) for t in outer.get("prompt_templates") or ()
                 if isinstance(t, dict) and "name" in t and "content" in t]
    files = [_gallery_file(f, url, remote_only=remote_only) for f in outer.get("files") or ()]
    return _Base(config, templates, files)


def _config_mapping(value: Any, what: str) -> dict[str, Any]:
    if isinstance(value, str):
        return _yaml_mapping(value, what)
    if isinstance(value, dict):
        return copy.deepcopy(value)
    raise GalleryError(f"{what}: expected a mapping or a YAML string")


def _yaml_mapping(text: str, what: str) -> dict[str, Any]:
    sink = DiagnosticSink(what)
    documents = load_yaml(text, sink, {})
    errors = [d for d in sink.items if d.severity is Severity.ERROR]
    if errors:
        first = errors[0]
        raise GalleryError(f"{what}:{first.position.line}:{first.position.column}: {first.message}")
    data = documents[0].data if documents else {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise GalleryError(f"{what}: expected a mapping")
    return data


def _gallery_file(item: Any, where: str, *, remote_only: bool) -> GalleryFile:
    if not isinstance(item, dict) or not item.get("filename") or not item.get("uri"):
        raise GalleryError(f"{where}: a file needs 'filename' and 'uri'")
    uri = str(item["uri"])
    if uri_schemes.scheme_of(uri) is None:
        raise GalleryError(f"{where}: {uri!r} uses an unsupported scheme (supported: {', '.join(uri_schemes.SUPPORTED)})")
    if remote_only and not uri_schemes.is_remote(uri):
        raise GalleryError(f"{where}: {uri!r} names a file on this machine, which only a gallery index on this "
                           f"machine may do (take {', '.join(uri_schemes.REMOTE)})")
    sha = item.get("sha256") or None
    if sha is not None and not _HEX64.match(str(sha)):
        raise GalleryError(f"{where}: sha256 of {item['filename']!r} is not 64 hex digits")
    filename = safe_relative_path(str(item["filename"]), what="file name")
    return GalleryFile(filename, uri, sha.lower() if sha else None)


def _last_per_filename(files: list[GalleryFile]) -> tuple[GalleryFile, ...]:
    by_name: dict[str, GalleryFile] = {}
    for f in files:
        by_name[f.filename] = f  # an entry's file replaces its base's file of the same name
    return tuple(by_name.values())


def safe_relative_path(name: str, *, what: str) -> str:
    """``name`` normalized, if it stays inside the directory it is relative to; else GalleryError.

    Refuses absolute paths, ``..`` anywhere, backslashes and hidden components (``.name``:
    the models directory's own metadata files start with a dot).
    """
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        raise GalleryError(f"{what} {name!r} must be a relative path inside the models directory")
    parts = name.split("/")
    if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        raise GalleryError(f"{what} {name!r} must be a relative path inside the models directory "
                           "(no '..', no empty or hidden parts)")
    return posixpath.normpath(name)


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``: mappings merge, anything else replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def iter_unverified(resolved: ResolvedModel) -> Iterator[GalleryFile]:
    return (f for f in resolved.files if f.sha256 is None)


def escape_interpolation(text: str) -> str:
    """``text`` as a YAML value that ``${VAR}`` interpolation reads back unchanged (``$${`` is a
    literal ``${``)."""
    return text.replace("${", "$${")


def model_yaml(resolved: ResolvedModel, header: str) -> str:
    """The model YAML text an install writes: block style, multi-line strings (templates) as
    literal blocks, key order kept, a ``header`` comment first. Deterministic.

    Every ``${`` is escaped: the entry, its bases and the caller's overrides come from galleries
    and over HTTP, and such data is never interpolated with the server's environment (an
    override of ``${MODELYARD_API_KEYS}`` would otherwise read the keys back in an error)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.scalarstring import LiteralScalarString

    def literal(value: Any) -> Any:
        if isinstance(value, dict):
            return {literal(k): literal(v) for k, v in value.items()}
        if isinstance(value, list):
            return [literal(v) for v in value]
        if isinstance(value, str):
            value = escape_interpolation(value)
            if "\n" in value and not any(c in value for c in "\t\r"):
                return LiteralScalarString(value)
        return value

    name_first = {"name": resolved.config["name"], **{k: v for k, v in resolved.config.items() if k != "name"}}
    dumper = YAML(typ="rt")
    dumper.default_flow_style = False
    dumper.width = 4096
    dumper.indent(mapping=2, sequence=4, offset=2)
    out = io.StringIO()
    dumper.dump(literal(name_first), out)
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return comment + out.getvalue()
