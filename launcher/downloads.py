"""Fetching gallery files: streaming SHA-256, resume, retries, atomic rename.

A file is written to ``<name>.partial`` next to its destination while it downloads, hashed as
the bytes arrive, and renamed into place only once its checksum matches; so the models
directory never holds a truncated or wrong file under the real name. A ``.partial`` left by an
interrupted download is resumed with an HTTP range request (its bytes are re-hashed first). A
checksum mismatch or a failed write deletes the partial file: the next attempt starts clean.

Schemes: ``http(s)://``, ``file://``, ``huggingface://owner/repo/path[@rev]`` (also ``hf://``;
the endpoint follows ``HF_ENDPOINT`` like huggingface_hub), ``github:owner/repo/path[@ref]``
and ``package://MODULE`` (a file a Python package assembles: offline installs).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from modelyard.compiler import uri_schemes
from modelyard.compiler.gallery import GalleryError, GalleryFile, safe_relative_path

CHUNK = 1 << 20
TEXT_LIMIT = 32 << 20  # gallery indexes and base configs; LocalAI's index is about 4 MiB


class DownloadError(GalleryError):
    """A file could not be fetched or stored; the message says which and why."""


@dataclass(frozen=True)
class FileProgress:
    filename: str
    done: int  # bytes verified so far (resumed bytes included)
    total: int | None  # None when the server does not say
    status: str  # "downloading", "verified", "present" (already there, checksum matched)


ProgressCallback = Callable[[FileProgress], None]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    backoff_s: float = 1.0  # doubles after each failed attempt
    timeout_s: float = 30.0  # connect and between-bytes timeout


DEFAULT_RETRY = RetryPolicy()


def source_location(uri: str, env: Mapping[str, str]) -> str | Path:
    """An http(s) URL to fetch, or a local Path to copy, for ``uri`` (``compiler/uri_schemes.py``)."""
    try:
        return uri_schemes.locate(uri, env)
    except uri_schemes.UriError as exc:
        raise GalleryError(str(exc)) from None


def fetch_text(uri: str, env: Mapping[str, str], policy: RetryPolicy = RetryPolicy()) -> str:
    """A small text resource (an index, a base config), with retries."""
    location = source_location(uri, env)
    if isinstance(location, Path):
        try:
            return location.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DownloadError(f"cannot read {location}: {exc}") from None
    for attempt in range(policy.attempts):
        try:
            with httpx.stream("GET", location, follow_redirects=True, timeout=policy.timeout_s) as response:
                _check_status(response, location)
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > TEXT_LIMIT:
                        raise DownloadError(f"{location}: larger than {TEXT_LIMIT} bytes")
                return body.decode("utf-8")
        except UnicodeDecodeError:
            raise DownloadError(f"{location}: not UTF-8 text") from None
        except (_Retryable, httpx.TransportError) as exc:
            if attempt + 1 == policy.attempts:
                raise DownloadError(f"cannot fetch {location}: {exc or type(exc).__name__}") from None
            time.sleep(policy.backoff_s * 2 ** attempt)
    raise AssertionError("unreachable")


def target_path(models_dir: Path, filename: str) -> Path:
    """Where ``filename`` goes: inside ``models_dir`` even after following symlinks."""
    relative = safe_relative_path(filename, what="file name")
    root = Path(os.path.realpath(models_dir))
    target = Path(os.path.realpath(root / relative))
    if not target.is_relative_to(root) or target == root:
        raise GalleryError(f"file name {filename!r} leads outside the models directory (through a symlink)")
    return target


def download(
    file: GalleryFile,
    models_dir: Path,
    env: Mapping[str, str],
    *,
    on_progress: ProgressCallback | None = None,
    policy: RetryPolicy = RetryPolicy(),
) -> tuple[Path, bool]:
    """Fetch ``file`` into ``models_dir``: (its path, whether bytes were fetched).

    An existing file whose checksum matches is kept; one that does not match is fetched again.
    Without a checksum (``--allow-unverified``) an existing file is kept as it is.
    """
    report = on_progress or (lambda _: None)
    target = target_path(models_dir, file.filename)
    if target.is_file() and (file.sha256 is None or _sha256_of(target) == file.sha256):
        size = target.stat().st_size
        report(FileProgress(file.filename, size, size, "present"))
        return target, False
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    location = source_location(file.uri, env)
    for attempt in range(policy.attempts):
        try:
            digest, size = _fetch_once(location, partial, file.filename, report, policy)
            break
        except _Retryable as exc:
            if attempt + 1 == policy.attempts:
                raise DownloadError(f"cannot download {file.filename} from {location}: {exc} "
                                    f"(attempts: {policy.attempts}; run the install again to resume)") from None
            time.sleep(policy.backoff_s * 2 ** attempt)
        except OSError as exc:  # disk full, permissions: the partial file is no use
            partial.unlink(missing_ok=True)
            raise DownloadError(f"cannot write {file.filename}: {exc.strerror or exc}") from None
    if file.sha256 is not None and digest != file.sha256:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"SHA-256 mismatch for {file.filename}: expected {file.sha256}, got {digest}; "
                            "the download was deleted (the file upstream may have changed)")
    os.replace(partial, target)
    report(FileProgress(file.filename, size, size, "verified"))
    return target, True


class _Retryable(Exception):
    """A transient failure: connection trouble, timeouts, 5xx, 429."""


def _fetch_once(location: str | Path, partial: Path, filename: str, report: ProgressCallback,
                policy: RetryPolicy) -> tuple[str, int]:
    """One attempt: resume ``partial`` (re-hashing what it holds), append the rest; digest and size."""
    if isinstance(location, Path):
        return _copy_local(location, partial, filename, report)
    hasher = hashlib.sha256()
    have = _hash_into(hasher, partial) if partial.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with httpx.stream("GET", location, headers=headers, follow_redirects=True,
                          timeout=policy.timeout_s) as response:
            if have and response.status_code == 416:  # the partial file already holds everything
                return hasher.hexdigest(), have
            _check_status(response, location)
            if have and response.status_code != 206:  # no range support: start over
                hasher, have = hashlib.sha256(), 0
            length = response.headers.get("content-length")
            total = have + int(length) if length and length.isdigit() else None
            with partial.open("ab" if have else "wb") as out:
                # As received: a dropped connection loses nothing already read.
                have = _write_hashed(response.iter_bytes(), out, hasher, have, total, filename, report)
            if total is not None and have < total:
                raise _Retryable(f"connection closed after {have} of {total} bytes")
    except (httpx.TransportError, httpx.DecodingError) as exc:
        raise _Retryable(str(exc) or type(exc).__name__) from None
    return hasher.hexdigest(), have


def _copy_local(source: Path, partial: Path, filename: str, report: ProgressCallback) -> tuple[str, int]:
    if not source.is_file():
        raise DownloadError(f"{source}: no such file")
    hasher = hashlib.sha256()
    with source.open("rb") as src, partial.open("wb") as out:
        done = _write_hashed(iter(lambda: src.read(CHUNK), b""), out, hasher, 0, source.stat().st_size, filename,
                             report)
    return hasher.hexdigest(), done


def _write_hashed(chunks: Iterable[bytes], out: BinaryIO, hasher: Any, done: int, total: int | None,
                  filename: str, report: ProgressCallback) -> int:
    """Write, hash and report each chunk, then make the file durable; the bytes done in all."""
    for chunk in chunks:
        out.write(chunk)
        hasher.update(chunk)
        done += len(chunk)
        report(FileProgress(filename, done, total, "downloading"))
    out.flush()
    os.fsync(out.fileno())
    return done


def _check_status(response: httpx.Response, location: str) -> None:
    status = response.status_code
    if status == 429 or status >= 500:
        raise _Retryable(f"HTTP {status}")
    if status >= 400:
        hint = " (a gated or private model needs a token; modelyard does not send one)" if status in (401, 403) else ""
        raise DownloadError(f"{location}: HTTP {status} {response.reason_phrase}{hint}")


def _hash_into(hasher: hashlib._Hash, path: Path) -> int:
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return size


def _sha256_of(path: Path) -> str:
    hasher = hashlib.sha256()
    _hash_into(hasher, path)
    return hasher.hexdigest()
