"""How llama.cpp is built (CPU flags) and what the backend sets up before a model loads (the AMX
guard, RPC servers): the decisions, without compiling or loading anything."""

from __future__ import annotations

import socket
import types

import pytest

from modelyard.launcher import llama_build
from modelyard.launcher.backends import llama_devices

# /proc/cpuinfo flags of the machines in question (the parts that matter).
SAPPHIRE_RAPIDS = {"sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx_vnni", "avx512f", "avx512cd", "avx512vl",
                   "avx512dq", "avx512bw", "avx512vbmi", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8",
                   "amx_bf16"}
HASWELL = {"sse4_2", "avx", "avx2", "fma", "f16c", "bmi2"}


def switches(flags: tuple[str, ...]) -> dict[str, str]:
    return dict(flag[2:].split("=") for flag in flags)


def test_an_amx_cpu_gets_every_avx512_kernel_and_no_amx() -> None:
    flags = switches(llama_build.cpu_flags("x86_64", SAPPHIRE_RAPIDS))
    assert flags == {
        "GGML_NATIVE": "OFF", "GGML_SSE42": "ON", "GGML_AVX": "ON", "GGML_AVX2": "ON", "GGML_FMA": "ON",
        "GGML_F16C": "ON", "GGML_BMI2": "ON", "GGML_AVX_VNNI": "ON", "GGML_AVX512": "ON", "GGML_AVX512_VBMI": "ON",
        "GGML_AVX512_VNNI": "ON", "GGML_AVX512_BF16": "ON",
        "GGML_AMX_TILE": "OFF", "GGML_AMX_INT8": "OFF", "GGML_AMX_BF16": "OFF",
    }


def test_an_avx2_cpu_gets_no_avx512_and_avx512_needs_all_five_parts() -> None:
    flags = switches(llama_build.cpu_flags("x86_64", HASWELL | {"avx512f", "avx512cd"}))
    assert flags["GGML_AVX2"] == "ON" and flags["GGML_AVX512"] == "OFF" and flags["GGML_AVX_VNNI"] == "OFF"


def test_other_architectures_keep_the_native_build() -> None:
    assert llama_build.cpu_flags("aarch64", {"asimd"}) == ("-DGGML_NATIVE=ON",)


def test_the_build_cache_follows_the_cpu(monkeypatch) -> None:
    monkeypatch.setattr(llama_build, "this_cpu", lambda: ("x86_64", SAPPHIRE_RAPIDS))
    amx = llama_build.cache_dir()
    monkeypatch.setattr(llama_build, "this_cpu", lambda: ("x86_64", HASWELL))
    assert llama_build.cache_dir() != amx
    assert "-DGGML_RPC=ON" in llama_build.cmake_args()
    assert llama_build.reinstall_command().startswith('CMAKE_ARGS="-DGGML_NATIVE=OFF ')


def test_the_amx_guard_turns_extra_buffer_types_off_only_for_builds_with_amx_kernels(caplog) -> None:
    native = b"CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | REPACK = 1 |"
    ours = b"CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1 | REPACK = 1 |"
    assert llama_devices.load_options(types.SimpleNamespace(llama_print_system_info=lambda: native)) == {
        "use_extra_bufts": False}
    assert caplog.messages == [llama_devices.amx_guard_message()]
    assert llama_build.reinstall_command() in caplog.messages[0]  # the fix, spelled out
    assert llama_devices.load_options(types.SimpleNamespace(llama_print_system_info=lambda: ours)) == {}


def test_no_repack_turns_extra_buffer_types_off_whatever_the_build() -> None:
    ours = types.SimpleNamespace(llama_print_system_info=lambda: b"CPU : AVX2 = 1 | REPACK = 1 |")
    assert llama_devices.load_options(ours, repack=False) == {"use_extra_bufts": False}


def test_model_params_amends_the_defaults_only_while_loading() -> None:
    module = types.SimpleNamespace(llama_model_default_params=lambda: types.SimpleNamespace(use_extra_bufts=True))
    llama_cpp = types.SimpleNamespace(llama_cpp=module)
    with llama_devices.model_params(llama_cpp, use_extra_bufts=False):
        assert module.llama_model_default_params().use_extra_bufts is False
    assert module.llama_model_default_params().use_extra_bufts is True


@pytest.mark.parametrize("endpoint", ["localhost", "host:", ":50052", "host:0", "host:70000", "host:port"])
def test_rpc_endpoints_must_be_host_and_port(endpoint) -> None:
    with pytest.raises(RuntimeError, match="is not host:port"):
        llama_devices.parse_endpoint(endpoint)


def test_an_rpc_server_that_refuses_is_named_in_the_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(RuntimeError, match=rf"cannot reach the llama.cpp RPC server at 127.0.0.1:{port} "
                                               r"\(Connection refused\)"):
            llama_devices.check_reachable(f"127.0.0.1:{port}")


def test_the_load_log_keeps_the_lines_that_say_where_the_model_went() -> None:
    lines = ["llama_model_loader: - kv 0: general.architecture str = gemma3",
             "load_tensors: offloaded 19/19 layers to GPU",
             "load_tensors:   RPC0[127.0.0.1:5000] model buffer size =    80.00 MiB",
             "llama_context: n_ctx = 64"]
    assert llama_devices.placement(lines) == lines[1:3]
