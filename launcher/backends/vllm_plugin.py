"""A vLLM plugin (entry point ``vllm.general_plugins`` in pyproject.toml): vLLM loads it in each
of its processes, the engine core and its workers included, which modelyard does not start itself.

On a CPU with AMX, vLLM's bfloat16 kernels use AMX tiles, which Linux lets a process use only
after it asks (arch_prctl ARCH_REQ_XCOMP_PERM); vLLM does not ask, and the engine dies with
SIGILL on its first small batch. In processes under a modelyard worker (``MODELYARD_VLLM_AMX=1``,
set by the worker when ``compiler.backends.vllm.choose_device`` says so) this asks.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

ENVIRONMENT = "MODELYARD_VLLM_AMX"


def request_amx() -> None:
    if os.environ.get(ENVIRONMENT) != "1":
        return  # not started by modelyard: leave other users of vLLM alone
    import torch

    if torch.cpu._is_amx_tile_supported() and not torch.cpu._init_amx():
        log.warning("the CPU has AMX but Linux refused it to this process: vLLM may fail with SIGILL")
