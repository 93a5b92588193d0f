"""Where a llama.cpp model's weights go: the CPU's buffer types and llama.cpp RPC servers.

* **The AMX guard.** A llama-cpp-python built natively on an Intel CPU with AMX (a plain
  ``pip install``) holds ggml's AMX kernels, and the first decode of a Q4_K_M model segfaults in
  ``ggml_backend_amx_mul_mat`` (llama.cpp issue #20824). Such a build is loaded without extra
  buffer types (llama.cpp's ``--no-repack``: no AMX buffers, no repacked weights), with a warning
  that names the build that needs no guard. modelyard's own build (``launcher/llama_build.py``)
  never has AMX kernels, so there the guard does nothing.
* **RPC servers** (``grpc_servers``, LocalAI's name): each ``host:port`` is checked to answer,
  then registered with ggml as llama.cpp's ``--rpc`` does, so the model's layers are spread over
  them. ggml aborts the whole process on a server it cannot reach; checking first turns that
  into a load error that names the address.
"""

from __future__ import annotations

import ctypes
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from ..llama_build import reinstall_command

log = logging.getLogger(__name__)

RPC_CONNECT_TIMEOUT_S = 5.0
GGML_LOG_LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}  # ggml_log_level
GGML_LOG_LEVEL_CONT = 5  # continues the previous line


def has_amx_kernels(system_info: str) -> bool:
    """Whether llama.cpp's system info (``llama_print_system_info``) lists AMX kernels compiled in."""
    return "AMX_INT8 = 1" in system_info


def amx_guard_message() -> str:
    return ("this llama-cpp-python build contains ggml's AMX kernels, which crash on the first decode "
            "(llama.cpp issue #20824): loading without extra buffer types (no AMX, no weight repacking; "
            f"prompt processing may be slower). A build without them needs no guard: {reinstall_command()}")


@contextmanager
def model_params(llama_cpp, **fields) -> Iterator[None]:
    """Load models with ``fields`` set in llama.cpp's model parameters. ``Llama`` sets the fields
    it knows on ``llama_model_default_params()`` and has no argument for the others
    (``use_extra_bufts``): its defaults are amended while a model loads. A worker loads one
    model, on one thread."""
    module = llama_cpp.llama_cpp
    original = module.llama_model_default_params

    def amended():
        params = original()
        for name, value in fields.items():
            setattr(params, name, value)
        return params

    module.llama_model_default_params = amended
    try:
        yield
    finally:
        module.llama_model_default_params = original


def load_options(llama_cpp, repack: bool = True) -> dict[str, object]:
    """Model-parameter fields to set at load (see ``model_params``): extra buffer types off when
    the YAML says ``--no-repack``, or when this build holds AMX kernels."""
    if not repack:
        return {"use_extra_bufts": False}
    if has_amx_kernels(llama_cpp.llama_print_system_info().decode("utf-8", "replace")):
        log.warning(amx_guard_message())
        return {"use_extra_bufts": False}
    return {}


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RuntimeError(f"llama.cpp RPC server {endpoint!r} is not host:port")
    return host.strip("[]"), int(port)


def check_reachable(endpoint: str, timeout_s: float = RPC_CONNECT_TIMEOUT_S) -> None:
    host, port = parse_endpoint(endpoint)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = f"no answer within {timeout_s:.0f} s" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise RuntimeError(f"cannot reach the llama.cpp RPC server at {endpoint} ({reason}); start "
                           f"`ggml-rpc-server --host {host} --port {port}` there, or fix grpc_servers") from None


def add_rpc_servers(llama_cpp, endpoints: tuple[str, ...]) -> None:
    """Register ``endpoints`` as ggml devices: the next model load spreads its layers over them."""
    if not endpoints:
        return
    for endpoint in endpoints:
        check_reachable(endpoint)
    # ggml's functions as libllama resolves them: llama_cpp._ggml opens libggml.so, which a wheel
    # ships as a copy of libllama's libggml.so.0, so devices registered through it never reach
    # the libggml that loads models.
    ggml = llama_cpp.llama_cpp._lib
    ggml.ggml_backend_reg_by_name.restype = ctypes.c_void_p
    ggml.ggml_backend_reg_by_name.argtypes = [ctypes.c_char_p]
    ggml.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    ggml.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    ggml.ggml_backend_register.restype = None
    ggml.ggml_backend_register.argtypes = [ctypes.c_void_p]
    registry = ggml.ggml_backend_reg_by_name(b"RPC")
    if not registry:
        raise RuntimeError("grpc_servers is set but this llama-cpp-python was built without RPC support; "
                           f"rebuild it with -DGGML_RPC=ON: {reinstall_command()}")
    address = ggml.ggml_backend_reg_get_proc_address(registry, b"ggml_backend_rpc_add_server")
    add_server = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)(address)
    for endpoint in endpoints:
        server = add_server(endpoint.encode())
        if not server:
            raise RuntimeError(f"the llama.cpp RPC server at {endpoint} offers no devices")
        ggml.ggml_backend_register(server)
        log.info("llama.cpp RPC server %s registered", endpoint)


@contextmanager
def load_log(llama_cpp) -> Iterator[list[str]]:
    """llama.cpp's log lines while a model loads (where each layer and buffer went), collected
    into the yielded list; llama-cpp-python's own logger (quiet unless verbose) comes back after."""
    lines: list[str] = []
    partial: list[str] = []
    levels = [logging.DEBUG]

    @llama_cpp.llama_log_callback
    def collect(level, text, user_data):
        if level != GGML_LOG_LEVEL_CONT:
            levels[0] = GGML_LOG_LEVELS.get(level, logging.DEBUG)
        partial.append(text.decode("utf-8", "replace"))
        if partial[-1].endswith("\n"):
            lines.append("".join(partial).rstrip("\n"))
            partial.clear()
            # Why a load failed is worth the server's log. llama.cpp's warnings go at info: at
            # load they are about Llama's own small context, which decodes nothing here.
            if levels[0] >= logging.WARNING:
                log.log(logging.ERROR if levels[0] >= logging.ERROR else logging.INFO, "llama.cpp: %s",
                        lines[-1].strip())

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        from llama_cpp._logger import llama_log_callback as quiet

        llama_cpp.llama_log_set(quiet, ctypes.c_void_p(0))


def placement(lines: list[str]) -> list[str]:
    """The lines of a load log that say where the model went: layers offloaded, buffer sizes."""
    return [line.strip() for line in lines if "offloaded" in line or "buffer size" in line]
