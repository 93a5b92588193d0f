"""The client-library suite needs langchain-openai, the OpenAI Agents SDK and pydantic-ai, which
live in a venv of their own (`make test-clients` builds .venv-clients; the server they talk to runs
from .venv). In any other venv these tests skip with that reason; under `make test-clients`
(MODELYARD_REQUIRE_CLIENTS=1) a missing library is a failure."""

from __future__ import annotations

import importlib.util
import os

import pytest

LIBRARIES = ("langchain_openai", "agents", "pydantic_ai")


def pytest_collection_modifyitems(config, items) -> None:
    missing = [name for name in LIBRARIES if importlib.util.find_spec(name) is None]
    if not missing:
        return
    if os.environ.get("MODELYARD_REQUIRE_CLIENTS") == "1":
        raise pytest.UsageError(f"MODELYARD_REQUIRE_CLIENTS=1 but {', '.join(missing)} cannot be imported")
    skip = pytest.mark.skip(reason="client libraries are not installed in this venv: `make test-clients` "
                                   "runs these in .venv-clients")
    for item in items:
        if "tests/clients/" in str(item.fspath):
            item.add_marker(skip)
