"""The URI schemes a gallery file, index or base config may use, listed once.

Each scheme says how to spell it, whether it reaches the network (``remote``) or reads this
machine's own files, and where a URI of it is fetched from (``locate``: an http(s) URL, or a
local ``Path`` to copy). The gallery parser checks entries against this table, the installer
and index reader fetch through ``locate``, and "may this come from elsewhere?" is ``remote``:
a listing from a remote index, or an install request over HTTP, may only name remote URIs,
since a local one would make the server read, hash and copy its own files.

Adding a scheme is one ``UriScheme`` here.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .sources import PACKAGE_SCHEME, resolve_package_uri

DEFAULT_HF_ENDPOINT = "https://huggingface.co"
GITHUB_RAW = "https://raw.githubusercontent.com"


class UriError(ValueError):
    """A URI that cannot be located; the message is for the user as is."""


@dataclass(frozen=True)
class UriScheme:
    prefixes: tuple[str, ...]  # how URIs of it start; the first is its name in messages
    remote: bool  # fetched over the network (else: a file on this machine)
    locate: Callable[[str, Mapping[str, str]], str | Path]  # (uri, env) -> URL or local path


def _huggingface(uri: str, env: Mapping[str, str]) -> str:
    """``huggingface://OWNER/REPO/PATH[@REVISION]``; the endpoint follows ``HF_ENDPOINT`` as
    huggingface_hub's does."""
    owner_repo_path, _, revision = uri.split("://", 1)[1].partition("@")
    parts = owner_repo_path.split("/", 2)
    if len(parts) < 3 or not all(parts):
        raise UriError(f"{uri!r}: expected huggingface://OWNER/REPO/PATH[@REVISION]")
    endpoint = env.get("HF_ENDPOINT", DEFAULT_HF_ENDPOINT).rstrip("/")
    return f"{endpoint}/{parts[0]}/{parts[1]}/resolve/{revision or 'main'}/{urllib.parse.quote(parts[2])}"


def _github(uri: str, env: Mapping[str, str]) -> str:
    """``github:OWNER/REPO/PATH[@REF]`` (LocalAI's bases), read from raw.githubusercontent.com."""
    owner_repo_path, _, ref = uri.removeprefix("github:").removeprefix("//").partition("@")
    parts = owner_repo_path.split("/", 2)
    if len(parts) < 3 or not all(parts):
        raise UriError(f"{uri!r}: expected github:OWNER/REPO/PATH[@REF]")
    return f"{GITHUB_RAW}/{parts[0]}/{parts[1]}/{ref or 'main'}/{parts[2]}"


def _http(uri: str, env: Mapping[str, str]) -> str:
    # A Hugging Face page link (/blob/) names the HTML page, not the file (LocalAI #3100).
    parsed = urllib.parse.urlparse(uri)
    if parsed.netloc in ("huggingface.co", "hf.co") and "/blob/" in parsed.path:
        return urllib.parse.urlunparse(parsed._replace(path=parsed.path.replace("/blob/", "/resolve/", 1)))
    return uri


def _file(uri: str, env: Mapping[str, str]) -> Path:
    return Path(urllib.parse.unquote(urllib.parse.urlparse(uri).path))


def _package(uri: str, env: Mapping[str, str]) -> Path:
    """``package://MODULE[/path]``: a file a Python package assembles (offline installs)."""
    found = resolve_package_uri(uri)
    if found is None:
        module = uri[len(PACKAGE_SCHEME):].split("/", 1)[0]
        raise UriError(f"{uri!r}: the Python package {module!r} is not installed (pip install {module.replace('_', '-')})")
    return Path(found)


SCHEMES: tuple[UriScheme, ...] = (
    UriScheme(("https://",), True, _http),
    UriScheme(("http://",), True, _http),
    UriScheme(("file://",), False, _file),
    UriScheme(("huggingface://", "hf://"), True, _huggingface),
    UriScheme(("github:",), True, _github),
    UriScheme((PACKAGE_SCHEME,), False, _package),
)
SUPPORTED = tuple(prefix for scheme in SCHEMES for prefix in scheme.prefixes)
REMOTE = tuple(prefix for scheme in SCHEMES if scheme.remote for prefix in scheme.prefixes)


def scheme_of(uri: str) -> UriScheme | None:
    return next((scheme for scheme in SCHEMES if uri.startswith(scheme.prefixes)), None)


def is_remote(uri: str) -> bool:
    scheme = scheme_of(uri)
    return scheme is not None and scheme.remote


def has_scheme(location: str) -> bool:
    """A URI rather than a path (relative or absolute) on this machine."""
    return scheme_of(location) is not None or "://" in location


def locate(uri: str, env: Mapping[str, str]) -> str | Path:
    """An http(s) URL to fetch, or a local Path to copy, for ``uri``."""
    scheme = scheme_of(uri)
    if scheme is None:
        raise UriError(f"{uri!r}: unsupported scheme (supported: {', '.join(SUPPORTED)})")
    return scheme.locate(uri, env)
