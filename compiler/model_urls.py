"""``parameters.model`` given as a URL, and ``download_files``: what to fetch before a model loads.

LocalAI accepts a URL as the model (``ModelConfig.IsModelURL``, core/config/model_config.go
l.1411; the prefixes of ``URI.LooksLikeURL``, pkg/downloader/uri.go l.263) and fetches it, and
every ``download_files`` entry, into the models directory when it starts
(``ModelConfigLoader.PreloadWithContext``, core/config/model_config_loader.go l.454). The file a
URL becomes is named as LocalAI names it (``URI.FilenameFromUrl``, uri.go l.233): the URL path's
last part (before any ``@revision``), else the MD5 of the URL. The compiler only plans this; the
launcher downloads (``launcher/model_files.py``). Pure.
"""

from __future__ import annotations

import hashlib
import posixpath
import urllib.parse
from collections.abc import Iterator
from typing import Any

from . import uri_schemes
from .diagnostics import Problem, Severity
from .gallery import GalleryError, safe_relative_path
from .plan import ModelDownload

# LocalAI's model URL prefixes; the first of each pair is the name used in messages.
MODEL_URL_PREFIXES = ("huggingface://", "hf://", "https://", "http://", "github:", "ollama://", "oci://")
# Fetched through the gallery's downloader (compiler/uri_schemes.py), or by the launcher itself.
FETCHED_BY_REGISTRY = ("ollama://",)
NOT_FETCHED = ("oci://",)


def is_model_url(value: str) -> bool:
    return value.startswith(MODEL_URL_PREFIXES)


def local_file_name(uri: str) -> str:
    """The file name LocalAI gives a downloaded model URL (``URI.FilenameFromUrl``)."""
    before_revision = uri.split("@", 1)[0]
    path = urllib.parse.urlparse(before_revision).path if "://" in before_revision else \
        before_revision.split(":", 1)[1]
    name = posixpath.basename(urllib.parse.unquote(path))
    if name and name not in (".", ".."):
        return name
    digest = hashlib.md5(uri.encode("utf-8")).hexdigest()
    return digest + ".yaml" if uri.endswith((".yaml", ".yml")) else digest


def model_download(uri: str, models_dir: str) -> tuple[ModelDownload | None, Problem | None]:
    """The download that puts ``parameters.model``'s URL into the models directory."""
    where = ("parameters", "model")
    name = local_file_name(uri)
    try:
        filename = safe_relative_path(name, what="the file name of")
    except GalleryError:
        return None, Problem(where, f"{uri!r}: the file name it would get ({name!r}) is not a plain file name")
    if uri.startswith(NOT_FETCHED):
        return ModelDownload(uri=uri, directory=models_dir, filename=filename), Problem(
            where, f"{uri!r}: modelyard does not fetch {NOT_FETCHED[0]} images: launch needs the model file in the "
                   f"models directory as {filename!r} (or give a huggingface:// or https:// URL)", Severity.WARNING)
    if not uri.startswith(FETCHED_BY_REGISTRY) and uri_schemes.scheme_of(uri) is None:
        return None, Problem(where, f"{uri!r}: unsupported URL")
    return ModelDownload(uri=uri, directory=models_dir, filename=filename), None


def listed_downloads(entries: Any, models_dir: str) -> Iterator[ModelDownload | Problem]:
    """``download_files`` (schema-checked: filename, uri, optional sha256) as downloads; only
    remote URIs, since a config installed over HTTP must not make the server copy its own files."""
    for index, entry in enumerate(entries or ()):
        where = ("download_files", index)
        uri = str(entry["uri"])
        try:
            filename = safe_relative_path(str(entry["filename"]), what="file name")
        except GalleryError as exc:
            yield Problem(where + ("filename",), str(exc))
            continue
        if not uri_schemes.is_remote(uri):
            yield Problem(where + ("uri",), f"{uri!r}: a download must come from {', '.join(uri_schemes.REMOTE)}")
            continue
        sha = entry.get("sha256")
        yield ModelDownload(uri=uri, directory=models_dir, filename=filename, sha256=sha.lower() if sha else None)
