"""Inference engines, one module per backend, imported only inside worker processes.

Which engine serves a backend is the backend registry's ``BackendSpec.engine``
(``compiler/backends/``); this module only imports it and says when it cannot be.
"""

from __future__ import annotations

import importlib
import importlib.util

from modelyard.compiler import backends


def engines() -> dict[str, str]:
    """Backend name → the import string of its engine class."""
    return {spec.name: spec.engine for spec in backends.all_backends()}


def load_backend_class(import_string: str) -> type:
    module_name, _, attribute = import_string.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def _module_available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        return False


def missing_backend_message(backend: str) -> str | None:
    """Why ``launch`` cannot serve this backend here, or None when it can."""
    spec = backends.resolve(backend)
    if spec is None:
        return f"the {backend} backend is not available in this version of modelyard yet"
    missing = spec.missing(_module_available)
    return f"{missing}: install it with {spec.install_hint}" if missing else None
