"""llama.cpp's own programs (llama-server, llama-batched-bench), the benchmarks' anchors.

Built by ``launcher/llama_build.py`` from the llama.cpp that the project's llama-cpp-python
vendors, with the same CPU flags (a few minutes on two cores, once; cached under
``~/.cache/modelyard``), so the anchors run the very kernels modelyard runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from modelyard.launcher import llama_build

BENCH_BIN = Path(__file__).resolve().parent.parent / ".bench-venv" / "bin"


def build_note() -> str:
    """One line for a benchmark's output: how the llama.cpp it compares was built."""
    return (f"llama.cpp: llama-cpp-python {llama_build.LLAMA_CPP_PYTHON_VERSION} and its own programs, "
            f"one source, built alike: {' '.join(llama_build.cmake_args())}")


def llama_cpp_tool(name: str) -> str | None:
    """The path of llama.cpp's program ``name``, built first if it is not built yet; None when it
    cannot be built."""
    try:
        [path] = llama_build.programs(BENCH_BIN, [name])
    except (SystemExit, OSError, subprocess.CalledProcessError) as exc:  # the benchmark runs without this anchor
        print(f"cannot build {name}: {exc}", file=sys.stderr)
        return None
    return str(path)
