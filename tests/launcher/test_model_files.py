"""LocalAI's model URLs and ``download_files``, fetched at launch (core/config/model_config_loader.go
``PreloadWithContext`` l.454): compile plans them, ``fetch_model_files`` fetches what is missing."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from modelyard.compiler.model_urls import local_file_name
from modelyard.launcher.downloads import RetryPolicy
from modelyard.launcher.model_files import ModelFileError, fetch_model_files, missing_downloads

from ..compiler.fakes import compile_yaml, default_probe
from .file_server import FileServer, tiny_gguf

FAST = RetryPolicy(attempts=2, backoff_s=0.01, timeout_s=5)


@pytest.mark.parametrize("uri,name", [
    ("huggingface://bartowski/granite-GGUF/granite-f16.gguf", "granite-f16.gguf"),
    ("hf://owner/repo/sub/dir/model.Q4_K_M.gguf@v1.0", "model.Q4_K_M.gguf"),
    ("https://example.com/files/phi-2.Q8_0.gguf?download=true", "phi-2.Q8_0.gguf"),
    ("github:owner/repo/models/m.gguf@main", "m.gguf"),
    ("ollama://gemma:2b", "e5410b2bb1666d2f65565b7f683aaa9d"),  # no path: the URL's MD5, as LocalAI
])
def test_file_names_as_localai_gives_them(uri, name) -> None:
    """``URI.FilenameFromUrl`` (pkg/downloader/uri.go l.233)."""
    assert local_file_name(uri) == name


def _plan(tmp_path, text: str):
    probe = default_probe()
    probe.backends = {"llama-cpp"}
    result = compile_yaml({"models/m.yaml": text}, probe=probe, check_files=False)
    assert result.plan is not None, result.diagnostics
    plan = result.plan
    models = [m.model_copy(update={"downloads": tuple(d.model_copy(update={"directory": str(tmp_path)})
                                                      for d in m.downloads)}) for m in plan.models]
    return plan.model_copy(update={"models": tuple(models)})


def test_a_url_model_and_its_download_files_are_fetched_once(tmp_path, monkeypatch) -> None:
    weights = tiny_gguf(tmp_path / "source.gguf")
    with FileServer() as files:
        files.add("/owner/repo/resolve/main/tiny.gguf", weights)
        extra_sha = files.add("/extra/mmproj.bin", b"projector")
        monkeypatch.setenv("HF_ENDPOINT", files.base)
        plan = _plan(tmp_path, f"""
name: tiny
parameters: {{model: "huggingface://owner/repo/tiny.gguf"}}
download_files:
  - {{filename: sub/mmproj.bin, uri: "{files.base}/extra/mmproj.bin", sha256: "{extra_sha}"}}
""")
        [model] = plan.models
        assert model.backend == "llama-cpp" and model.model.endswith("/tiny.gguf")
        assert [(d.filename, d.sha256) for d in model.downloads] == [("tiny.gguf", None), ("sub/mmproj.bin", extra_sha)]
        said: list[str] = []
        assert fetch_model_files(plan, {"HF_ENDPOINT": files.base}, said.append, FAST) == 2
        assert (tmp_path / "tiny.gguf").read_bytes() == weights
        assert (tmp_path / "sub" / "mmproj.bin").read_bytes() == b"projector"
        assert any("fetching tiny.gguf for model 'tiny' (1/2)" in line for line in said)
        assert any(re.fullmatch(r"  tiny.gguf: done, [0-9.]+ MiB in [0-9.]+ s", line) for line in said), said
        requests = len(files.served.requests)
        assert missing_downloads(plan) == []
        assert fetch_model_files(plan, {"HF_ENDPOINT": files.base}, said.append, FAST) == 0
        assert len(files.served.requests) == requests  # a file already there is not fetched again


def test_a_checksum_mismatch_and_an_offline_hub_name_the_uri_and_the_file(tmp_path) -> None:
    with FileServer() as files:
        files.add("/f.bin", b"changed upstream")
        plan = _plan(tmp_path, f"""
name: tiny
parameters: {{model: tiny.gguf}}
download_files: [{{filename: f.bin, uri: "{files.base}/f.bin", sha256: "{'ab' * 32}"}}]
""")
        with pytest.raises(ModelFileError, match=r"model 'tiny': cannot fetch http://127.0.0.1:\d+/f.bin into .*f.bin: "
                                                 "SHA-256 mismatch"):
            fetch_model_files(plan, {}, lambda _: None, FAST)
        assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.partial").exists()
    offline = _plan(tmp_path, "name: t\nparameters: {model: 'huggingface://o/r/t.gguf'}\n")
    with pytest.raises(ModelFileError) as caught:
        fetch_model_files(offline, {"HF_ENDPOINT": "http://127.0.0.1:9"}, lambda _: None, FAST)
    assert "huggingface://o/r/t.gguf" in str(caught.value) and str(tmp_path / "t.gguf") in str(caught.value)
    assert "Offline, put the file there yourself" in str(caught.value)


def test_an_ollama_model_is_fetched_through_its_registry_manifest(tmp_path) -> None:
    blob = b"GGUF-ish weights"
    with FileServer() as files:
        digest = files.add(f"/v2/library/gemma/blobs/sha256:{hashlib.sha256(blob).hexdigest()}", blob)
        files.add("/v2/library/gemma/manifests/2b", json.dumps({"layers": [
            {"mediaType": "application/vnd.ollama.image.license", "digest": "sha256:" + "1" * 64},
            {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}"}]}).encode())
        plan = _plan(tmp_path, "name: g\nbackend: llama-cpp\nparameters: {model: 'ollama://gemma:2b'}\n")
        assert fetch_model_files(plan, {"OLLAMA_REGISTRY": files.base}, lambda _: None, FAST) == 1
        assert (tmp_path / local_file_name("ollama://gemma:2b")).read_bytes() == blob
        missing_tag = _plan(tmp_path, "name: g\nbackend: llama-cpp\nparameters: {model: 'ollama://gemma:7b'}\n")
        with pytest.raises(ModelFileError, match="HTTP 404"):
            fetch_model_files(missing_tag, {"OLLAMA_REGISTRY": files.base}, lambda _: None, FAST)


@pytest.mark.parametrize("text,message", [
    ("parameters: {model: m.gguf}\ndownload_files: [{filename: ../x, uri: 'https://e/x'}]", "relative path"),
    ("parameters: {model: m.gguf}\ndownload_files: [{filename: x, uri: 'file:///etc/passwd'}]",
     "a download must come from https://"),
    ("parameters: {model: 'ftp://host/m.gguf'}\nbackend: llama-cpp", "unsupported URL"),
])
def test_downloads_that_cannot_be_planned_are_compile_errors(text, message) -> None:
    result = compile_yaml({"models/m.yaml": "name: m\n" + text + "\n"}, check_files=False)
    assert result.plan is None and any(message in d.message for d in result.diagnostics), result.diagnostics


def test_an_oci_model_compiles_and_launch_asks_for_its_file(tmp_path) -> None:
    """LocalAI's oci:// URIs compile (with a warning); modelyard does not pull OCI images, so
    launch names the file to put in place, and serves it once it is there."""
    result = compile_yaml({"models/m.yaml": "name: o\nbackend: llama-cpp\nparameters: {model: 'oci://quay.io/x/y:1'}\n"},
                          check_files=False)
    assert result.plan is not None and any("does not fetch oci://" in d.message for d in result.diagnostics)
    plan = _plan(tmp_path, "name: o\nbackend: llama-cpp\nparameters: {model: 'oci://quay.io/x/y:1'}\n")
    with pytest.raises(ModelFileError, match=r"does not fetch oci:// images.*put the file there yourself"):
        fetch_model_files(plan, {}, lambda _: None, FAST)
    (tmp_path / plan.models[0].downloads[0].filename).write_bytes(b"weights")
    assert fetch_model_files(plan, {}, lambda _: None, FAST) == 0
