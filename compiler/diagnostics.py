"""Diagnostics: the compiler's way of reporting a user's mistake.

User errors are data, never exceptions: every stage returns what it found and the pipeline
collects all of it, so one run reports every problem at once. A stage that looks at one model's
mapping reports a ``Problem`` (where in the mapping, what, how bad); the pipeline alone turns it
into a ``Diagnostic`` (which file, which line and column).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from .paths import Path


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, order=True)
class Position:
    """A 1-based line and column in a source file."""

    line: int = 1
    column: int = 1


@dataclass(frozen=True)
class Problem:
    """A user's problem inside one model's mapping: ``path`` leads to the value at fault (to its
    key when ``at_key``), relative to the mapping, or to where the caller puts it (``under``)."""

    path: Path
    message: str
    severity: Severity = Severity.ERROR
    at_key: bool = False

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def under(self, prefix: Path) -> Problem:
        return replace(self, path=prefix + self.path)


@dataclass(frozen=True)
class Diagnostic:
    """One problem, located in a file and in the model's config tree.

    ``path`` is the dotted location shown to users, prefixed by the model name
    (``qwen.parameters.temperature``); it is empty for problems about a whole file.
    """

    file: str
    position: Position
    path: str
    message: str
    severity: Severity = Severity.ERROR

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def sort_key(self) -> tuple:
        return (self.file, self.position, self.path, self.message, self.severity.value)

    def to_json(self) -> dict:
        return {
            "file": self.file,
            "line": self.position.line,
            "column": self.position.column,
            "path": self.path,
            "severity": self.severity.value,
            "message": self.message,
        }


@dataclass
class DiagnosticSink:
    """Collects diagnostics for one source; stages append to it instead of raising."""

    file: str
    items: list[Diagnostic] = field(default_factory=list)

    def error(self, position: Position, path: str, message: str) -> None:
        self.items.append(Diagnostic(self.file, position, path, message, Severity.ERROR))

    def warning(self, position: Position, path: str, message: str) -> None:
        self.items.append(Diagnostic(self.file, position, path, message, Severity.WARNING))

    @property
    def has_errors(self) -> bool:
        return any(d.is_error for d in self.items)


def sorted_diagnostics(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Stable, de-duplicated order: by file, then position, then path and message."""
    return sorted(set(diagnostics), key=Diagnostic.sort_key)


# --- rendering -------------------------------------------------------------------------------
# Pure functions returning text; only the CLI prints.


def format_text(diagnostic: Diagnostic) -> str:
    location = f"{diagnostic.file}:{diagnostic.position.line}:{diagnostic.position.column}"
    prefix = "warning: " if diagnostic.severity is Severity.WARNING else ""
    path = f" {diagnostic.path}:" if diagnostic.path else ""
    return f"{location}:{path} {prefix}{diagnostic.message}"


def summary_line(diagnostics: Sequence[Diagnostic]) -> str:
    """``error: 3 problems in 1 file``, or a warning/ok summary when nothing is fatal."""
    errors = [d for d in diagnostics if d.is_error]
    warnings = [d for d in diagnostics if not d.is_error]
    if errors:
        files = len({d.file for d in errors})
        warn = f" (and {_plural(len(warnings), 'warning')})" if warnings else ""
        return f"error: {_plural(len(errors), 'problem')} in {_plural(files, 'file')}{warn}"
    if warnings:
        return f"ok, with {_plural(len(warnings), 'warning')}"
    return "ok"


def format_report(diagnostics: Sequence[Diagnostic], fmt: str) -> str:
    """Render every diagnostic in one of the CLI's formats: text, json or github."""
    ordered = sorted_diagnostics(diagnostics)
    if fmt == "json":
        return json.dumps(
            {
                "diagnostics": [d.to_json() for d in ordered],
                "errors": sum(d.is_error for d in ordered),
                "warnings": sum(not d.is_error for d in ordered),
            },
            indent=2,
            sort_keys=True,
        )
    if fmt == "github":
        return "\n".join(_format_github(d) for d in ordered)
    lines = [format_text(d) for d in ordered]
    lines.append(summary_line(ordered))
    return "\n".join(lines)


def _format_github(d: Diagnostic) -> str:
    # Workflow commands: https://docs.github.com/actions/reference/workflow-commands
    kind = "error" if d.is_error else "warning"
    title = d.path or "modelyard"
    message = d.message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return (
        f"::{kind} file={d.file},line={d.position.line},col={d.position.column},"
        f"title={_escape_property(title)}::{message}"
    )


def _escape_property(value: str) -> str:
    return (
        value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        .replace(":", "%3A").replace(",", "%2C")
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
