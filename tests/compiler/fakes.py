"""An in-memory host for compiler tests: files, directories, GGUF headers, installed backends."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from modelyard.compiler import CompileOptions, CompileResult, Source, backends, compile_sources
from modelyard.compiler.gguf_metadata import GgufMetadata
from modelyard.compiler.overrides import parse_set

PLAIN_GGUF = GgufMetadata(architecture="gemma3", context_length=32768, chat_template=None, name="test")
CHAT_GGUF = GgufMetadata(architecture="llama", context_length=2048, chat_template="{{ messages }}", name="chat")


@dataclass
class FakeProbe:
    files: dict[str, str] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    gguf: dict[str, GgufMetadata] = field(default_factory=dict)
    backends: set[str] = field(default_factory=lambda: {"llama-cpp"})
    packages: dict[str, str] = field(default_factory=dict)
    modules: set[str] = field(default_factory=set)

    def resolve_package(self, uri: str) -> str | None:
        return self.packages.get(uri)

    def is_file(self, path: str) -> bool:
        return posixpath.normpath(path) in self.files or posixpath.normpath(path) in self.gguf

    def is_dir(self, path: str) -> bool:
        return posixpath.normpath(path) in self.dirs

    def read_text(self, path: str) -> str | None:
        return self.files.get(posixpath.normpath(path))

    def real_path(self, path: str) -> str:
        return posixpath.normpath(posixpath.join("/work", path))

    def gguf_metadata(self, path: str) -> GgufMetadata | None:
        return self.gguf.get(posixpath.normpath(path))

    def module_available(self, module: str) -> bool:
        """A module is there when listed, or when it is the package of a backend listed as installed."""
        return module in self.modules or any(
            spec.module == module for spec in backends.all_backends() if spec.name in self.backends)


def default_probe() -> FakeProbe:
    return FakeProbe(
        gguf={"models/model.gguf": PLAIN_GGUF, "models/chat.gguf": CHAT_GGUF},
        dirs={"models", "models/hf-model"},
        packages={"package://tiny_model": "/site/tiny.gguf"},
    )


def compile_yaml(
    files: dict[str, str], env: dict[str, str] | None = None, probe: FakeProbe | None = None,
    sets: tuple[str, ...] = (), check_files: bool = True, extra: tuple[Source, ...] = (),
) -> CompileResult:
    sources = [Source(path, "yaml", text, "models") for path, text in sorted(files.items())]
    options = CompileOptions(
        env=env or {}, probe=probe or default_probe(), overrides=tuple(parse_set(s) for s in sets),
        check_files=check_files,
    )
    return compile_sources([*sources, *extra], options)
