"""The vLLM plugin that asks Linux for AMX in vLLM's processes: only under a modelyard worker,
only on a CPU with AMX; registered where vLLM looks for it (checked in the vLLM suite too)."""

from __future__ import annotations

from importlib import metadata

import pytest

from modelyard.launcher.backends import vllm_plugin


@pytest.mark.parametrize(("environment", "has_amx", "asked"), [("1", True, True), (None, True, False),
                                                               ("1", False, False)])
def test_amx_is_requested_only_under_modelyard_on_an_amx_cpu(monkeypatch, environment, has_amx, asked) -> None:
    torch = pytest.importorskip("torch")
    calls = []
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: has_amx)
    monkeypatch.setattr(torch.cpu, "_init_amx", lambda: calls.append(True) or True)
    if environment is None:
        monkeypatch.delenv(vllm_plugin.ENVIRONMENT, raising=False)
    else:
        monkeypatch.setenv(vllm_plugin.ENVIRONMENT, environment)
    vllm_plugin.request_amx()
    assert calls == ([True] if asked else [])


def test_the_plugin_is_a_vllm_general_plugin_entry_point() -> None:
    points = {point.name: point.value for point in metadata.entry_points(group="vllm.general_plugins")}
    assert points.get("modelyard_amx") == "modelyard.launcher.backends.vllm_plugin:request_amx"
