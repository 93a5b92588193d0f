"""The configured galleries: where their indexes live, reading them, and finding entries.

The built-in gallery (``modelyard``, the packaged ``gallery/index.yaml``) is always there.
More come from ``--gallery [NAME=]PATH|URL`` (repeatable) or ``MODELYARD_GALLERIES``, which
takes the same comma-separated list or LocalAI's JSON form ``[{"name": ..., "url": ...}]``.
Entries are addressed as ``gallery@name``, or by ``name`` alone (the first gallery holding it).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from modelyard.compiler import uri_schemes
from modelyard.compiler.gallery import Gallery, GalleryEntry, GalleryError, parse_gallery
from modelyard.compiler.suggestions import did_you_mean

from .downloads import fetch_text

GALLERIES_ENV = "MODELYARD_GALLERIES"
BUILTIN = "modelyard"
HUGGINGFACE = "huggingface"
# A GGUF file in a Hugging Face repository, as a request's model may name it (LocalAI does the same).
_HF_FILE = re.compile(r"^(?:huggingface://|hf://)?([\w.-]+)/([\w.-]+)/((?:[\w.-]+/)*[\w.-]+\.gguf)(?:@([\w.-]+))?$")


@dataclass(frozen=True)
class GallerySpec:
    name: str
    location: str  # a local path or a URL (any scheme downloads.fetch_text reads)

    @property
    def is_local(self) -> bool:
        return not uri_schemes.has_scheme(self.location)


def builtin_spec() -> GallerySpec:
    return GallerySpec(BUILTIN, str(resources.files("modelyard.gallery").joinpath("index.yaml")))


def parse_specs(given: Sequence[str], env: Mapping[str, str]) -> list[GallerySpec]:
    """The built-in gallery, then ``given`` (else the environment variable's list)."""
    specs = [builtin_spec()]
    raw = list(given)
    if not raw and env.get(GALLERIES_ENV, "").strip():
        raw = _env_list(env[GALLERIES_ENV])
    for item in raw:
        name, sep, location = item.partition("=")
        if not sep or "/" in name or ":" in name:
            name, location = _default_name(item), item
        if any(s.name == name for s in specs):
            raise GalleryError(f"two galleries are named {name!r}: name one with NAME=PATH|URL")
        specs.append(GallerySpec(name, location))
    return specs


def _env_list(value: str) -> list[str]:
    value = value.strip()
    if value.startswith("["):  # LocalAI's GALLERIES form
        try:
            items = json.loads(value)
            return [f"{i['name']}={i['url']}" for i in items]
        except (ValueError, KeyError, TypeError):
            raise GalleryError(f"{GALLERIES_ENV}: expected [{{\"name\": ..., \"url\": ...}}, ...]") from None
    return [part.strip() for part in value.split(",") if part.strip()]


def _default_name(location: str) -> str:
    """``.../localai-gallery/index.yaml`` → ``localai-gallery``; ``mine.yaml`` → ``mine``."""
    path = urllib.parse.urlparse(location).path if "://" in location else location
    stem = Path(path).stem
    parent = Path(path).parent.name
    return (parent if stem == "index" and parent else stem) or "gallery"


FAILED_INDEX_RETRY_S = 60.0  # an index that could not be read is not tried again sooner


class Galleries:
    """Loads each index once (thread-safe: installs run in threads), resolves bases. An index
    that cannot be read is remembered as failed for ``FAILED_INDEX_RETRY_S``, so a gallery that
    is down costs one fetch a minute, not one (with its retries) per request."""

    def __init__(self, specs: Iterable[GallerySpec], env: Mapping[str, str]) -> None:
        self.specs = list(specs)
        self.env = dict(env)
        self._loaded: dict[str, Gallery] = {}
        self._failed: dict[str, tuple[float, GalleryError]] = {}  # name -> (when, why)
        self._bases: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def gallery(self, spec: GallerySpec) -> Gallery:
        with self._lock:
            if spec.name in self._loaded:
                return self._loaded[spec.name]
            failed = self._failed.get(spec.name)
            if failed is not None and time.monotonic() - failed[0] < FAILED_INDEX_RETRY_S:
                raise failed[1]
            location = spec.location if not spec.is_local else os.path.abspath(spec.location)
            try:
                text = fetch_text(Path(location).as_uri() if spec.is_local else location, self.env)
                self._loaded[spec.name] = parse_gallery(text, location, spec.name)
            except GalleryError as exc:
                self._failed[spec.name] = (time.monotonic(), exc)
                raise
            self._failed.pop(spec.name, None)
            return self._loaded[spec.name]

    def loaded_only(self) -> Galleries:
        """A view that finds entries in the indexes already read and never fetches one: for the
        request path, which must not wait on a gallery's host."""
        view = Galleries([s for s in self.specs if s.name in self._loaded], self.env)
        view._loaded = dict(self._loaded)
        return view

    def all(self) -> list[Gallery]:
        return [self.gallery(spec) for spec in self.specs]

    def readable(self) -> tuple[list[Gallery], dict[str, str]]:
        """The galleries that can be read, and why each other one cannot (by name): one broken
        index must not hide the others."""
        galleries, failures = [], {}
        for spec in self.specs:
            try:
                galleries.append(self.gallery(spec))
            except GalleryError as exc:
                failures[spec.name] = str(exc)
        return galleries, failures

    def find(self, ref: str) -> GalleryEntry:
        """The entry ``gallery@name`` or ``name``; GalleryError with suggestions when absent.

        ``owner/repo/file.gguf`` (a Hugging Face file) makes an entry of its own: llama-cpp with
        the GGUF's chat template, and no checksum to verify it with (``--allow-unverified``).
        """
        hf_entry = huggingface_file_entry(ref)
        if hf_entry is not None:
            return hf_entry
        gallery_name, sep, name = ref.partition("@")
        if not sep:
            gallery_name, name = "", ref
        specs = [s for s in self.specs if s.name == gallery_name] if gallery_name else self.specs
        if gallery_name and not specs:
            raise GalleryError(f"no gallery named {gallery_name!r} (galleries: {', '.join(s.name for s in self.specs)})")
        names: list[str] = []
        for spec in specs:
            gallery = self.gallery(spec)
            entry = gallery.find(name)
            if entry is not None:
                return entry
            names += [e.name for e in gallery.entries]
        raise GalleryError(f"no gallery entry {ref!r}{did_you_mean(name, names)}")

    def is_local(self, entry: GalleryEntry) -> bool:
        """Whether ``entry`` comes from an index on this machine (not a URL install, not a
        remote index): only such entries may name local files."""
        spec = next((s for s in self.specs if s.name == entry.gallery), None)
        return spec is not None and spec.is_local

    def load_base(self, entry: GalleryEntry, url: str) -> str:
        """The text of ``entry``'s base config ``url``.

        Relative references resolve against the index. For an index read from disk, a
        ``github:`` base whose file sits beside the index (or in its ``bases/`` folder) is read
        from there: LocalAI's index works offline from a checkout of its gallery folder.
        """
        spec = next((s for s in self.specs if s.name == entry.gallery), None)
        if spec is None:  # an entry made from a URL: its base is that URL, absolute
            return fetch_text(url, self.env)
        key = (spec.name, url)
        with self._lock:
            cached = self._bases.get(key)
        if cached is not None:
            return cached
        text = fetch_text(self._base_location(spec, url), self.env)
        with self._lock:
            self._bases[key] = text
        return text

    def _base_location(self, spec: GallerySpec, url: str) -> str:
        relative = not uri_schemes.has_scheme(url)
        if spec.is_local:
            root = Path(os.path.abspath(spec.location)).parent
            if relative:
                path = (root / url).resolve()
                if not path.is_relative_to(root.resolve()):
                    raise GalleryError(f"base config {url!r} leads outside the gallery's folder")
                return path.as_uri()
            if url.startswith("github:"):
                basename = url.partition("@")[0].rsplit("/", 1)[-1]
                for candidate in (root / basename, root / "bases" / basename):
                    if candidate.is_file():
                        return candidate.as_uri()
            return url
        if relative:
            return urllib.parse.urljoin(spec.location, url)
        return url


def huggingface_file_entry(ref: str) -> GalleryEntry | None:
    match = _HF_FILE.match(ref)
    if match is None:
        return None
    owner, repo, path, revision = match.groups()
    filename = path.rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._-]", "-", filename.removesuffix(".gguf"))
    uri = f"huggingface://{owner}/{repo}/{path}" + (f"@{revision}" if revision else "")
    return GalleryEntry(HUGGINGFACE, name, {
        "name": name, "description": f"{filename} from the Hugging Face repository {owner}/{repo}",
        "config_file": {"backend": "llama-cpp", "parameters": {"model": filename}},
        "files": [{"filename": filename, "uri": uri}],
    })


URL_GALLERY = "url"


def url_entry(url: str, name: str, overrides: dict, files: list) -> GalleryEntry:
    """An entry for ``POST /models/apply {"url": ...}``: a base config fetched from ``url``
    (remote schemes only: a client must not make the server read its own files)."""
    if not uri_schemes.is_remote(url):
        raise GalleryError(f"url {url!r}: installs from a URL take {', '.join(uri_schemes.REMOTE)}")
    return GalleryEntry(URL_GALLERY, name, {"name": name, "url": url, "overrides": overrides, "files": files})
