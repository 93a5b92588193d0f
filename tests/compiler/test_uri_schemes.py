"""The URI scheme table: where each kind of URI is fetched from, and which may come from elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.compiler import uri_schemes


@pytest.mark.parametrize(("uri", "located"), [
    ("huggingface://o/r/dir/m q.gguf@v1", "https://huggingface.co/o/r/resolve/v1/dir/m%20q.gguf"),
    ("hf://o/r/m.gguf", "https://mirror.test/o/r/resolve/main/m.gguf"),
    ("github:mudler/LocalAI/gallery/chatml.yaml@master",
     "https://raw.githubusercontent.com/mudler/LocalAI/master/gallery/chatml.yaml"),
    ("https://huggingface.co/o/r/blob/main/m.gguf", "https://huggingface.co/o/r/resolve/main/m.gguf"),
    ("http://host/x.yaml", "http://host/x.yaml"),
    ("file:///srv/models/a%20b.gguf", Path("/srv/models/a b.gguf")),
])
def test_each_scheme_locates_its_uris(uri, located) -> None:
    env = {"HF_ENDPOINT": "https://mirror.test/"} if uri.startswith("hf://") else {}
    assert uri_schemes.locate(uri, env) == located


def test_malformed_and_unknown_uris_say_what_is_expected() -> None:
    with pytest.raises(uri_schemes.UriError, match=r"expected huggingface://OWNER/REPO/PATH\[@REVISION\]"):
        uri_schemes.locate("hf://only-owner", {})
    with pytest.raises(uri_schemes.UriError, match="the Python package 'no_such_pkg' is not installed"):
        uri_schemes.locate("package://no_such_pkg", {})
    with pytest.raises(uri_schemes.UriError, match="unsupported scheme"):
        uri_schemes.locate("ftp://host/x", {})


def test_only_network_schemes_may_come_from_elsewhere() -> None:
    assert [p for p in uri_schemes.SUPPORTED if p not in uri_schemes.REMOTE] == ["file://", "package://"]
    assert uri_schemes.is_remote("github:a/b/c") and not uri_schemes.is_remote("file:///etc/passwd")
    assert not uri_schemes.is_remote("ftp://x") and uri_schemes.has_scheme("ftp://x")
    assert not uri_schemes.has_scheme("bases/chatml.yaml")


def test_package_uris_import_only_model_packages(capfd) -> None:
    import sys

    from modelyard.compiler.sources import resolve_package_uri

    sys.modules.pop("this", None)
    assert resolve_package_uri("package://this") is None  # its source defines no assemble()
    assert "this" not in sys.modules and "Zen of Python" not in capfd.readouterr().out
    assert resolve_package_uri("package://no_such_module_here") is None
    assert resolve_package_uri("package://../etc") is None
