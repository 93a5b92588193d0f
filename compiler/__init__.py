"""The config compiler: model YAML files, bare GGUF files and the environment in, a launch plan out.

Pure: no ML imports, no printing, no global state. See ``pipeline.compile_sources``.
"""

from .diagnostics import Diagnostic, Position, Severity, format_report
from .pipeline import CompileOptions, CompileResult, compile_sources
from .plan import LaunchPlan, ModelPlan, ServerPlan
from .sources import HostProbe, LocalProbe, Source, discover

__all__ = [
    "CompileOptions", "CompileResult", "Diagnostic", "HostProbe", "LaunchPlan", "LocalProbe", "ModelPlan",
    "Position", "ServerPlan", "Severity", "Source", "compile_sources", "discover", "format_report",
]
