"""What normalizing one model needs beyond its mapping: where values came from, how problems are
reported, and the host. Shared by ``normalize`` and the backend modules (``compiler/backends/``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .diagnostics import Problem, Severity
from .paths import Path
from .sources import HostProbe


@dataclass
class ModelContext:
    """One model's compile: its file, models directory, environment, host, and problems."""

    file: str
    models_dir: str
    env: Mapping[str, str]
    probe: HostProbe
    check_files: bool
    origin_of: Callable[[Path], str]  # YAML path → "file:line:col" or "--set"
    report: Callable[[Problem], None]  # placed in the file by the pipeline
    origins: dict[str, str] = field(default_factory=dict)
    errors: int = 0

    def problem(self, problem: Problem) -> None:
        self.errors += problem.is_error
        self.report(problem)

    def add(self, path: Path, message: str, severity: Severity, at_key: bool = False) -> None:
        self.problem(Problem(path, message, severity, at_key))

    def error(self, path: Path, message: str, at_key: bool = False) -> None:
        self.add(path, message, Severity.ERROR, at_key)

    def warning(self, path: Path, message: str, at_key: bool = False) -> None:
        self.add(path, message, Severity.WARNING, at_key)


class Reader:
    """Reads values out of the raw mapping, recording where each one came from."""

    def __init__(self, raw: Mapping[str, Any], ctx: ModelContext) -> None:
        self.raw = raw
        self.ctx = ctx

    def get(self, path: Path, dest: str, default: Any = None, default_origin: str = "default") -> Any:
        value = lookup(self.raw, path)
        if value is None:
            self.ctx.origins[dest] = default_origin
            return default
        self.ctx.origins[dest] = self.ctx.origin_of(path)
        return value

    def set(self, dest: str, value: Any, origin: str) -> Any:
        self.ctx.origins[dest] = origin
        return value


def lookup(raw: Mapping[str, Any], path: Path) -> Any:
    value: Any = raw
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)  # type: ignore[arg-type]
    return value
