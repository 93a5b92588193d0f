"""The compiler stays light: importing it pulls in no ML library."""

from __future__ import annotations

import subprocess
import sys


def test_compiler_imports_no_ml_packages() -> None:
    code = (
        "import sys, modelyard.compiler, modelyard.cli.main\n"
        "heavy = ['torch', 'transformers', 'llama_cpp', 'vllm', 'exllamav2', 'numpy', 'gguf']\n"
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
