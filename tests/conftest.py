from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# CI clones the repo with shared/ beside it; a developer's checkout has it there too.
SHARED = Path(os.environ.get("MODELYARD_SHARED", REPO.parent / "shared"))
UPDATE_GOLDEN = os.environ.get("MODELYARD_UPDATE_GOLDEN") == "1"


def assert_golden(path: Path, actual: str) -> None:
    """Compare with a golden file; MODELYARD_UPDATE_GOLDEN=1 rewrites it (review the diff)."""
    if UPDATE_GOLDEN or not path.exists():
        if not UPDATE_GOLDEN:
            pytest.fail(f"golden file {path} is missing; run with MODELYARD_UPDATE_GOLDEN=1 and review it")
        path.write_text(actual, encoding="utf-8")
        return
    assert actual == path.read_text(encoding="utf-8")


@pytest.fixture
def repo() -> Path:
    return REPO


def pytest_collection_modifyitems(config, items) -> None:
    """``gpu`` tests need an NVIDIA GPU visible to torch; ``openvino`` ones need optimum-intel.
    Without them, they skip with the reason (run them on a machine that has them)."""
    import importlib.util

    has_gpu = _cuda_available()
    has_openvino = importlib.util.find_spec("optimum") is not None and \
        importlib.util.find_spec("optimum.intel") is not None
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs an NVIDIA GPU (torch.cuda.is_available() is false)"))
        if "openvino" in item.keywords and not has_openvino:
            item.add_marker(pytest.mark.skip(reason="needs optimum-intel (pip install 'modelyard[openvino]')"))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
