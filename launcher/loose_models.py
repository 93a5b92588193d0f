"""GGUF files dropped into the served models directory after launch, served on their first
request without a restart, as a bare GGUF is at launch (and as LocalAI does: a request naming a
file of its models directory gets an implicit config, core/http/middleware/request.go).

A request's model name reaches the filesystem here, so it is held to what a models directory
holds: a relative path without ``..`` or hidden parts, ending in ``.gguf``, naming a regular file
that stays inside the directory once links are followed. Nothing else is read.
"""

from __future__ import annotations

import os
from pathlib import Path

from modelyard.compiler import CompileOptions, LocalProbe, compile_sources
from modelyard.compiler.gallery import GalleryError, safe_relative_path
from modelyard.compiler.plan import ModelPlan
from modelyard.compiler.sources import Source

MAX_LISTED = 1000  # files shown by /v1/models from one directory


class LooseModels:
    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.directory = Path(os.path.realpath(directory))
        self.env = env

    def path_of(self, name: str) -> Path | None:
        """The file ``name`` names in the directory, if it is a GGUF file there."""
        if not name.lower().endswith(".gguf"):
            return None
        try:
            relative = safe_relative_path(name, what="model")
        except GalleryError:
            return None
        path = Path(os.path.realpath(self.directory / relative))
        if not path.is_relative_to(self.directory) or not path.is_file():
            return None
        return path

    def compile(self, name: str) -> ModelPlan | None:
        """The implicit plan of the file ``name``, served under that name; None when ``name``
        names no GGUF file there, or one the compiler refuses (the launch's rules, not looser)."""
        path = self.path_of(name)
        if path is None:
            return None
        result = compile_sources([Source(str(path), "gguf", models_dir=str(path.parent))],
                                 CompileOptions(env=self.env, probe=LocalProbe()))
        if result.plan is None or len(result.plan.models) != 1:
            return None
        return result.plan.models[0].model_copy(update={"name": name})

    def listed(self) -> list[str]:
        """The GGUF files at the directory's top level, by name (what /v1/models may add)."""
        try:
            names = sorted(entry.name for entry in os.scandir(self.directory)
                           if entry.name.lower().endswith(".gguf") and not entry.name.startswith(".")
                           and entry.is_file())
        except OSError:
            return []
        return names[:MAX_LISTED]
