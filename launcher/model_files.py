"""Fetching the files a launch plan names (LocalAI's model URLs and ``download_files``) before
the models load, as LocalAI does at start (``ModelConfigLoader.PreloadWithContext``,
core/config/model_config_loader.go l.454).

Every download goes through the gallery's downloader (``downloads.py``: SHA-256 when given,
resume of a ``.partial`` file, retries, atomic rename), so a file already in the models
directory is not fetched again. ``ollama://NAME[:TAG]`` is resolved first: its registry
manifest names the model layer, a blob fetched (and checked) by its digest.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx

from modelyard.compiler.gallery import GalleryError, GalleryFile
from modelyard.compiler.model_urls import NOT_FETCHED
from modelyard.compiler.plan import LaunchPlan, ModelDownload

from .downloads import DEFAULT_RETRY, DownloadError, FileProgress, RetryPolicy, download, target_path

OLLAMA_REGISTRY = "https://registry.ollama.ai"  # OLLAMA_REGISTRY overrides it (a mirror, or a test's stand-in)
_OLLAMA_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
_OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"

Say = Callable[[str], None]


class ModelFileError(Exception):
    """A file a model needs could not be fetched; the message names the model, the URI and the
    file expected, so a user offline knows what to put where."""


def missing_downloads(plan: LaunchPlan) -> list[tuple[str, ModelDownload]]:
    """(model name, download) for each planned file not yet in its models directory."""
    return [(model.name, item) for model in plan.models for item in model.downloads if not _present(item)]


def _present(item: ModelDownload) -> bool:
    try:
        return target_path(Path(item.directory), item.filename).is_file()
    except GalleryError:
        return False  # a link out of the models directory: refused when it is fetched


def fetch_model_files(plan: LaunchPlan, env: Mapping[str, str], say: Say,
                      policy: RetryPolicy = DEFAULT_RETRY) -> int:
    """Fetch every planned file that is missing; the number fetched. Progress goes to ``say``."""
    missing = missing_downloads(plan)
    for number, (model, item) in enumerate(missing, start=1):
        target = Path(item.directory) / item.filename
        say(f"fetching {item.filename} for model {model!r} ({number}/{len(missing)}) from {item.uri}")
        try:
            file = _gallery_file(item, env, policy)
            download(file, Path(item.directory), env, on_progress=_Progress(item.filename, say), policy=policy)
        except GalleryError as exc:  # DownloadError included
            raise ModelFileError(f"model {model!r}: cannot fetch {item.uri} into {target}: {exc}. Offline, put the "
                                 "file there yourself and launch again") from None
    return len(missing)


def _gallery_file(item: ModelDownload, env: Mapping[str, str], policy: RetryPolicy) -> GalleryFile:
    if item.uri.startswith(NOT_FETCHED):
        raise DownloadError(f"modelyard does not fetch {NOT_FETCHED[0]} images")
    if item.uri.startswith("ollama://"):
        url, digest = _ollama_model_blob(item.uri, env, policy)
        return GalleryFile(item.filename, url, digest)
    return GalleryFile(item.filename, item.uri, item.sha256)


def _ollama_model_blob(uri: str, env: Mapping[str, str], policy: RetryPolicy) -> tuple[str, str]:
    """The model layer's blob URL and SHA-256 for ``ollama://[NAMESPACE/]NAME[:TAG]`` (LocalAI's
    ``oci.OllamaFetchModel``: library models have no namespace)."""
    name, _, tag = uri.removeprefix("ollama://").partition(":")
    repository = name if "/" in name else f"library/{name}"
    registry = env.get("OLLAMA_REGISTRY", OLLAMA_REGISTRY).rstrip("/")
    manifest_url = f"{registry}/v2/{repository}/manifests/{tag or 'latest'}"
    try:
        response = httpx.get(manifest_url, headers={"Accept": _OLLAMA_MANIFEST}, follow_redirects=True,
                             timeout=policy.timeout_s)
    except httpx.HTTPError as exc:
        raise DownloadError(f"{manifest_url}: {exc or type(exc).__name__}") from None
    if response.status_code != 200:
        raise DownloadError(f"{manifest_url}: HTTP {response.status_code} (no such model or tag?)")
    try:
        layers = json.loads(response.text)["layers"]
        digest = next(layer["digest"] for layer in layers if layer.get("mediaType") == _OLLAMA_MODEL_LAYER)
    except (ValueError, KeyError, TypeError, StopIteration):
        raise DownloadError(f"{manifest_url}: the manifest names no model layer") from None
    algorithm, _, hexdigest = str(digest).partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64:
        raise DownloadError(f"{manifest_url}: unexpected layer digest {digest!r}")
    return f"{registry}/v2/{repository}/blobs/{digest}", hexdigest.lower()


class _Progress:
    """A line each 10% (or each 100 MiB when the size is unknown), and one when done."""

    def __init__(self, filename: str, say: Say) -> None:
        self.filename, self.say = filename, say
        self.next_step, self.started = 0.0, time.monotonic()

    def __call__(self, progress: FileProgress) -> None:
        done_mib = progress.done / 2**20
        if progress.status == "present":
            self.say(f"  {self.filename}: already there ({done_mib:.1f} MiB)")
            return
        if progress.status == "verified":
            elapsed = max(time.monotonic() - self.started, 1e-6)
            self.say(f"  {self.filename}: done, {done_mib:.1f} MiB in {elapsed:.1f} s")
            return
        measure = progress.done / progress.total if progress.total else done_mib / 100
        if measure >= self.next_step:
            shown = f"{measure:.0%} of {progress.total / 2**20:.1f} MiB" if progress.total else f"{done_mib:.0f} MiB"
            self.say(f"  {self.filename}: {shown}")
            self.next_step = (int(measure * 10) + 1) / 10 if progress.total else int(measure) + 1
