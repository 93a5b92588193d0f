"""The backends modelyard serves: one module each in this package, read by everything else.

Each module defines ``SPEC``, a ``BackendSpec``: the backend's name and aliases, the Python
package its worker needs, its plan section and how the YAML fills it, the rules a config must
follow for it, what it can do, and the engine class the worker loads. The schema's ``backend``
enum and aliases, the plan's ``backend`` field, ``compile``'s "is it installed" warning,
``--explain``, the launcher's refusal and the worker all read this registry (a test holds the
schema file equal to it). No ML imports here: the compiler stays pure and fast; the engine is
named by an import string, imported only inside a worker process.

Adding a backend is one module here plus its engine in ``launcher/backends/``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ..context import ModelContext, Reader
    from ..plan import ModelPlan


def _no_rules(plan: ModelPlan, raw: Mapping[str, Any], ctx: ModelContext) -> None:
    return None


@dataclass(frozen=True)
class BackendSpec:
    name: str  # canonical: what plans, messages and /v1/models use
    summary: str
    engine: str  # "module:Class" of the worker-side engine (launcher/backends/)
    requirement: tuple[str, str]  # (Python module the engine imports, the modelyard extra installing it)
    order: int  # place in listings ("modelyard serves llama-cpp, transformers, ...")
    aliases: tuple[str, ...] = ()  # other spellings the YAML may use (LocalAI's)
    section: str | None = None  # the ModelPlan field holding this backend's settings
    read_section: Callable[[Reader, dict, ModelContext], BaseModel] | None = None  # (reader, options, ctx)
    check: Callable[[ModelPlan, Mapping[str, Any], ModelContext], None] = _no_rules  # backend-specific rules
    grammar: bool = False  # takes GBNF grammars (the YAML's and the request's)
    structured_output: bool = True  # constrains output to a JSON Schema (response_format, forced tool calls)
    token_prompts: bool = False  # takes a completion prompt given as token ids
    logit_bias: bool = False  # applies a request's logit_bias
    prompt_logprobs: bool = False  # scores the prompt's tokens (completions with echo and logprobs)
    quantizations: tuple[str, ...] | None = None  # the `quantization` values it takes; None: it takes none
    model_directories: bool = False  # loads Hugging Face model directories (or hub ids), not single files
    gguf: bool = False  # loads GGUF files: their metadata gives the context size and chat template
    default_context: int | None = None  # context size when neither YAML nor model file says; None: engine's
    child_processes: bool = False  # its engine starts processes of its own (the worker must not be daemonic)
    machine_notes: Callable[[ModelPlan], list[str]] | None = None  # what it resolves on this machine (--explain)
    own_keys: tuple[str, ...] = ()  # top-level YAML keys only this backend reads (warned on the others)

    @property
    def module(self) -> str:
        return self.requirement[0]

    @property
    def install_hint(self) -> str:
        return f"pip install 'modelyard[{self.requirement[1]}]'"

    def missing(self, module_available: Callable[[str], bool]) -> str | None:
        """Why this backend cannot run here (its package is not installed), or None."""
        if module_available(self.module):
            return None
        return f"the {self.name} backend is not installed here (no '{self.module}' module)"


def _discover() -> dict[str, BackendSpec]:
    specs = []
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            specs.append(importlib.import_module(f"{__name__}.{info.name}").SPEC)
    return {spec.name: spec for spec in sorted(specs, key=lambda s: (s.order, s.name))}


_REGISTRY: dict[str, BackendSpec] = _discover()


def all_backends() -> tuple[BackendSpec, ...]:
    return tuple(_REGISTRY.values())


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def aliases() -> dict[str, str]:
    """Alias → canonical name."""
    return {alias: spec.name for spec in _REGISTRY.values() for alias in spec.aliases}


def resolve(name: str) -> BackendSpec | None:
    """The backend a YAML's ``backend`` value (a name or an alias) means, or None."""
    return _REGISTRY.get(aliases().get(name, name))


def get(name: str) -> BackendSpec:
    """The backend of a canonical name (a plan's ``backend``)."""
    return _REGISTRY[name]


def sections() -> tuple[str, ...]:
    """Every plan section a backend owns."""
    return tuple(spec.section for spec in _REGISTRY.values() if spec.section)


@contextmanager
def registered(spec: BackendSpec) -> Iterator[BackendSpec]:
    """Serve one more backend for the duration (tests: a stub backend is this one call). Worker
    processes do not see it: they are handed their engine's import string."""
    _REGISTRY[spec.name] = spec
    try:
        yield spec
    finally:
        del _REGISTRY[spec.name]
