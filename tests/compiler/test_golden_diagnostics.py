"""Each broken (or edge-case) config in cases/ compiled in memory, compared whole with its golden.

A case may start with comment lines that set up its world:
``# env: A=1 B=2``, ``# set: KEY=VALUE ...``, ``# backends: llama-cpp vllm``.
The golden holds the full diagnostic report and, when the config compiles, the plan.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.compiler import format_report

from ..conftest import assert_golden
from .fakes import compile_yaml, default_probe

CASES = Path(__file__).parent / "cases"


def _header(text: str, key: str) -> list[str]:
    for line in text.splitlines():
        if line.startswith(f"# {key}:"):
            return line.split(":", 1)[1].split()
    return []


@pytest.mark.parametrize("case", sorted(p.stem for p in CASES.glob("*.yaml")))
def test_case(case: str) -> None:
    text = (CASES / f"{case}.yaml").read_text()
    env = dict(item.split("=", 1) for item in _header(text, "env"))
    probe = default_probe()
    if backends := _header(text, "backends"):
        probe.backends = set(backends)
    result = compile_yaml({f"models/{case}.yaml": text}, env=env, probe=probe, sets=tuple(_header(text, "set")))
    actual = format_report(result.diagnostics, "text") + "\n"
    if result.plan is not None:
        actual += "--- plan ---\n" + result.plan.to_json()
    assert_golden(CASES / f"{case}.expected", actual)


def test_there_are_at_least_25_broken_configs() -> None:
    broken = [p for p in CASES.glob("*.expected") if "error:" in p.read_text().split("--- plan ---")[0]]
    assert len(broken) >= 25
