from __future__ import annotations

import json
import os
import shutil
import subprocess
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


GORENDER = REPO / "tests" / "compiler" / "gorender"


@pytest.fixture(scope="session")
def go_render(tmp_path_factory):
    """Go's own rendering (tests/compiler/gorender): a list of cases in, a list of
    ``{"output"}``/``{"error"}`` out. Skips without a Go toolchain (CI installs Debian's)."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("no Go toolchain installed (CI installs Debian's golang-go)")
    binary = tmp_path_factory.mktemp("gorender") / "gorender"
    cache = tmp_path_factory.mktemp("gocache")
    subprocess.run([go, "build", "-o", str(binary), *sorted(str(p) for p in GORENDER.glob("*.go"))], check=True,
                   env={"GOCACHE": str(cache), "HOME": str(cache), "PATH": "/usr/bin:/bin", "GO111MODULE": "off"})

    def render(cases: list[dict]) -> list[dict]:
        done = subprocess.run([str(binary)], input=json.dumps(cases), capture_output=True, text=True, check=True)
        return json.loads(done.stdout)

    return render
