"""Installing gallery entries into a models directory, and removing them.

The order is what keeps a failed install from leaving a half-made model behind (LocalAI's
gallery can write a YAML without its weights, or one its loader cannot read):

1. resolve the entry (base config, overrides, name) and render its model YAML;
2. compile that YAML with the real compiler, before any byte is downloaded;
3. download every file, each verified by SHA-256 and renamed into place only once it matches;
4. write the prompt templates and compile again, now reading the files (a foreign or corrupt
   GGUF fails here, and the templates are taken back);
5. write the model YAML last, atomically.

The YAML is what makes a model exist, so until step 5 nothing is served. A record of what was
installed (``.gallery-<name>.json``: entry, files, checksums) lets ``remove`` delete exactly it.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard.compiler import CompileOptions, LocalProbe, Severity, Source, compile_sources, format_report
from modelyard.compiler.gallery import (
    GalleryEntry,
    GalleryError,
    GalleryFile,
    ResolvedModel,
    iter_unverified,
    model_yaml,
    resolve_entry,
    safe_relative_path,
)
from modelyard.compiler.paths import SAFE_NAME
from modelyard.compiler.plan import ModelPlan

from .downloads import DEFAULT_RETRY, FileProgress, RetryPolicy, download, target_path
from .galleries import Galleries


class InstallError(GalleryError):
    pass


@dataclass(frozen=True)
class InstallResult:
    name: str
    yaml_path: Path
    files: tuple[Path, ...]
    fetched_bytes: int
    model: ModelPlan | None = None  # the compiled model, ready to serve (None when already installed)
    already_installed: bool = False


@dataclass
class InstallProgress:
    """What an install is doing, for progress bars and ``GET /models/jobs/{uuid}``."""

    message: str = "queued"
    file_name: str = ""
    file_done: int = 0
    file_total: int | None = None
    files_done: int = 0
    files_total: int = 0
    listeners: list[Callable[[InstallProgress], None]] = field(default_factory=list, repr=False)

    @property
    def percent(self) -> float:
        if self.files_total == 0:
            return 0.0
        within = (self.file_done / self.file_total) if self.file_total else 0.0
        return round(100.0 * min(1.0, (self.files_done + within) / self.files_total), 1)

    def update(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self, key, value)
        for listener in self.listeners:
            listener(self)


def metadata_path(models_dir: Path, name: str) -> Path:
    return models_dir / f".gallery-{name}.json"  # hidden: never mistaken for a model file


class Installer:
    def __init__(self, models_dir: Path, galleries: Galleries, env: Mapping[str, str], *,
                 allow_unverified: bool = False, retry: RetryPolicy = DEFAULT_RETRY) -> None:
        self.models_dir = Path(models_dir)
        self.galleries = galleries
        self.env = dict(env)
        self.allow_unverified = allow_unverified
        self.retry = retry

    # --- queries -----------------------------------------------------------------------------

    def yaml_path(self, name: str) -> Path:
        _check_name(name)
        return self.models_dir / f"{name}.yaml"

    def installed(self) -> dict[str, str]:
        """Models installed from a gallery: name → entry id (a damaged record only hides its model)."""
        return {record["name"]: record["entry"] for record in self._records()
                if isinstance(record.get("name"), str) and isinstance(record.get("entry"), str)}

    # --- install -----------------------------------------------------------------------------

    def resolve(self, ref: str | GalleryEntry, *, name: str | None = None,
                overrides: Mapping[str, Any] | None = None) -> tuple[ResolvedModel, str]:
        """Steps 1-2: the resolved entry and its YAML text, compiled without its files. ``ref``
        names an entry (``gallery@name``) or is one (installs from a URL)."""
        entry = ref if isinstance(ref, GalleryEntry) else self.galleries.find(ref)
        resolved = resolve_entry(entry, lambda url: self.galleries.load_base(entry, url),
                                 name=name, overrides=overrides, local_files=self.galleries.is_local(entry))
        text = model_yaml(resolved, f"Installed by modelyard from gallery entry {entry.id}.")
        self._compile(resolved.name, text, check_files=False)
        return resolved, text

    def install(self, ref: str | GalleryEntry, *, name: str | None = None, overrides: Mapping[str, Any] | None = None,
                progress: InstallProgress | None = None, allow_unverified: bool | None = None,
                skip_installed: bool = False) -> InstallResult:
        progress = progress or InstallProgress()
        entry = ref if isinstance(ref, GalleryEntry) else self.galleries.find(ref)
        progress.update(message=f"resolving {entry.id}")
        resolved, text = self.resolve(entry, name=name, overrides=overrides)
        yaml_path = self.yaml_path(resolved.name)
        if yaml_path.exists():
            if skip_installed:
                progress.update(message=f"{resolved.name} is already installed")
                return InstallResult(resolved.name, yaml_path, (), 0, already_installed=True)
            raise InstallError(f"a model named {resolved.name!r} already exists ({yaml_path}); remove it first "
                               "or install under another name")
        unverified = [f.filename for f in iter_unverified(resolved)]
        if unverified and not (self.allow_unverified if allow_unverified is None else allow_unverified):
            raise InstallError(f"{entry.id}: no sha256 for {', '.join(unverified)}; pass --allow-unverified to "
                               "install without checking them")
        self._check_targets(resolved)
        self.models_dir.mkdir(parents=True, exist_ok=True)
        paths, fetched_paths = self._download_all(resolved.files, progress)
        progress.update(message=f"checking {resolved.name}")
        templates = [target_path(self.models_dir, f"{n}.tmpl") for n, _ in resolved.prompt_templates]
        for path, (_, content) in zip(templates, resolved.prompt_templates, strict=True):
            _write_atomic(path, content)  # before the check: the YAML may name them
        try:
            model = self._compile(resolved.name, text, check_files=True)
        except InstallError:
            for path in templates + fetched_paths:  # what this install wrote is of no use
                path.unlink(missing_ok=True)
            raise
        fetched = sum(path.stat().st_size for path in fetched_paths)
        record = {"name": resolved.name, "entry": entry.id,
                  "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "files": [{"filename": f.filename, "uri": f.uri, "sha256": f.sha256} for f in resolved.files],
                  "templates": [f"{n}.tmpl" for n, _ in resolved.prompt_templates]}
        _write_atomic(metadata_path(self.models_dir, resolved.name), json.dumps(record, indent=2) + "\n")
        _write_atomic(yaml_path, text)
        progress.update(message=f"installed {resolved.name}")
        return InstallResult(resolved.name, yaml_path, tuple(paths), fetched, model)

    def _records(self) -> list[dict[str, Any]]:
        """The install records that can be read (a damaged one is skipped)."""
        records = []
        for path in sorted(self.models_dir.glob(".gallery-*.json")) if self.models_dir.is_dir() else ():
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def _check_targets(self, resolved: ResolvedModel) -> None:
        """An install writes only files it creates. A file already in the models directory is
        reused only when another install wrote it with the same checksum (models sharing a
        GGUF); anything else there (a user's file, another model's YAML, GGUF or template) is
        never overwritten, taken over, or later deleted with this model."""
        written = {}  # filename -> (model, sha256) for every file an install recorded
        for record in self._records():
            for f in record.get("files", []):
                if isinstance(f, dict):
                    written[f.get("filename")] = (record.get("name"), f.get("sha256"))
            for template in record.get("templates", []):
                written[template] = (record.get("name"), None)
        targets = [(f.filename, f.sha256) for f in resolved.files]
        targets += [(f"{name}.tmpl", None) for name, _ in resolved.prompt_templates]
        for filename, sha256 in targets:
            if not target_path(self.models_dir, filename).exists():
                continue
            if filename not in written:
                raise InstallError(f"{filename} is already in {self.models_dir} and no install wrote it; an install "
                                   "never overwrites or takes over a file it did not create (move it, or install "
                                   "under another entry)")
            owner, owner_sha = written[filename]
            if sha256 is None or owner_sha is None or sha256.lower() != str(owner_sha).lower():
                raise InstallError(f"{filename} belongs to the installed model {owner!r}; it is shared only with the "
                                   "same contents (the same sha256)")

    def _download_all(self, files: tuple[GalleryFile, ...], progress: InstallProgress) -> tuple[list[Path], list[Path]]:
        """Every file in place and verified: (all their paths, the ones fetched now)."""
        paths, fetched = [], []
        progress.update(files_total=len(files), files_done=0)

        def report(event: FileProgress) -> None:
            progress.update(file_done=event.done, file_total=event.total)

        for file in files:
            progress.update(message=f"downloading {file.filename}", file_name=file.filename,
                            file_done=0, file_total=None)
            path, was_fetched = download(file, self.models_dir, self.env, on_progress=report, policy=self.retry)
            paths.append(path)
            if was_fetched:
                fetched.append(path)
            progress.update(files_done=progress.files_done + 1)
        return paths, fetched

    def _compile(self, name: str, text: str, *, check_files: bool) -> ModelPlan:
        source = Source(str(self.models_dir / f"{name}.yaml"), "yaml", text, str(self.models_dir))
        result = compile_sources([source], CompileOptions(env=self.env, probe=LocalProbe(), check_files=check_files))
        errors = [d for d in result.diagnostics if d.severity is Severity.ERROR]
        if errors:
            stage = "after downloading its files" if check_files else "before downloading anything"
            raise InstallError(f"the model YAML for {name!r} does not compile ({stage}; nothing was written):\n"
                               + format_report(errors, "text"))
        assert result.plan is not None
        return result.plan.models[0]

    # --- remove ------------------------------------------------------------------------------

    def remove(self, name: str) -> list[Path]:
        """Delete a gallery-installed model: its YAML, templates, files and record."""
        yaml_path = self.yaml_path(name)
        record_path = metadata_path(self.models_dir, name)
        if not record_path.is_file():
            if yaml_path.exists():
                raise InstallError(f"{name!r} was not installed from a gallery; delete {yaml_path} and its "
                                   "files yourself")
            raise InstallError(f"no installed model named {name!r}")
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            relative = [f["filename"] for f in record.get("files", [])] + list(record.get("templates", []))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InstallError(f"the install record {record_path} is damaged ({exc}); delete the model by hand") \
                from None
        removed = []
        yaml_path.unlink(missing_ok=True)  # first: the model stops existing before its files go
        removed.append(yaml_path)
        for filename in relative:
            try:
                path = target_path(self.models_dir, safe_relative_path(filename, what="file name"))
            except GalleryError:
                continue  # a record edited to point elsewhere deletes nothing outside
            if path.is_file() and not self._used_by_other_install(filename, name):
                path.unlink()
                removed.append(path)
        record_path.unlink()
        removed.append(record_path)
        return removed

    def _used_by_other_install(self, filename: str, name: str) -> bool:
        return any(record.get("name") != name and any(isinstance(f, dict) and f.get("filename") == filename
                                                      for f in record.get("files", []))
                   for record in self._records())


def _check_name(name: str) -> None:
    if not SAFE_NAME.match(name) or "/" in name:
        raise InstallError(f"{name!r} is not a model name")


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
