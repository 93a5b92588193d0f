"""The transformers backend's device, precision and quantization choices, without a GPU:
torch and transformers are stood in for, so every branch runs here."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from modelyard.launcher.backends.transformers_backend import LoadError, pick_device, pick_dtype, quantization_config


def fake_torch(cuda_devices: int = 0, bf16: bool = True, xpu: bool = False):
    cuda = SimpleNamespace(is_available=lambda: cuda_devices > 0, device_count=lambda: cuda_devices,
                           is_bf16_supported=lambda: bf16)
    return SimpleNamespace(cuda=cuda, xpu=SimpleNamespace(is_available=lambda: xpu), __version__="2.13.0+cpu",
                           float32="float32", float16="float16", bfloat16="bfloat16")


@pytest.mark.parametrize(("requested", "devices", "expected"), [
    (None, 0, "cpu"), (None, 1, "cuda"), ("cuda", 1, "cuda"), ("cuda.1", 2, "cuda:1"), ("cuda:0", 1, "cuda:0"),
    ("cpu", 2, "cpu"),
])
def test_device_choice(requested, devices, expected) -> None:
    assert pick_device(requested, fake_torch(devices), openvino=False) == expected


@pytest.mark.parametrize(("requested", "devices", "message"), [
    ("cuda", 0, "asks for CUDA, but torch sees no CUDA device (torch 2.13.0+cpu)"),
    ("cuda.3", 2, "there are 2 CUDA device(s)"),
    ("xpu", 0, "asks for an Intel XPU, but torch sees none"),
    ("tpu", 0, "is not a device"),
])
def test_impossible_devices_are_load_errors_naming_what_is_missing(requested, devices, message) -> None:
    with pytest.raises(LoadError, match=re.escape(message)):
        pick_device(requested, fake_torch(devices), openvino=False)


@pytest.mark.parametrize("requested", [None, "AUTO", "cpu", "GPU", "NPU", "MULTI:CPU,GPU", "HETERO:GPU,CPU", "AUTO:-CPU"])
def test_openvino_devices(requested) -> None:
    assert pick_device(requested, fake_torch(), openvino=True) == (requested or "AUTO").upper()
    with pytest.raises(LoadError, match="not an OpenVINO device"):
        pick_device("cuda", fake_torch(), openvino=True)


def test_f16_picks_bfloat16_where_supported() -> None:
    assert pick_dtype(False, "cuda", fake_torch(1)) == "float32"
    assert pick_dtype(True, "cpu", fake_torch()) == "bfloat16"
    assert pick_dtype(True, "cuda:0", fake_torch(1, bf16=True)) == "bfloat16"
    assert pick_dtype(True, "cuda", fake_torch(1, bf16=False)) == "float16"


def test_quantization_needs_its_hardware_and_library(monkeypatch) -> None:
    transformers = SimpleNamespace(BitsAndBytesConfig=lambda **kw: ("bnb", kw), TorchAoConfig=lambda mode: ("ao", mode))
    assert quantization_config(None, "cpu", transformers) is None
    with pytest.raises(LoadError, match="bnb_4bit needs a CUDA device \\(bitsandbytes\\); this model runs on cpu"):
        quantization_config("bnb_4bit", "cpu", transformers)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(LoadError, match="needs the bitsandbytes package"):
        quantization_config("bnb_8bit", "cuda", transformers)
    with pytest.raises(LoadError, match="xpu_8bit needs an Intel XPU device"):
        quantization_config("xpu_8bit", "cuda", transformers)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())
    assert quantization_config("bnb_4bit", "cuda:0", transformers) == ("bnb", {"load_in_8bit": False, "load_in_4bit": True})
    assert quantization_config("xpu_4bit", "xpu", transformers) == ("ao", "int4_weight_only")
