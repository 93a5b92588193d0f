"""Inference backends: a registry of import strings, imported only inside worker processes."""

from __future__ import annotations

import importlib
import importlib.util

from modelyard.compiler.sources import BACKEND_REQUIREMENTS

BACKENDS: dict[str, str] = {
    "llama-cpp": "modelyard.launcher.backends.llama_cpp:LlamaCppBackend",
    "transformers": "modelyard.launcher.backends.transformers_backend:TransformersBackend",
    "vllm": "modelyard.launcher.backends.vllm_backend:VllmBackend",
    "exllama2": "modelyard.launcher.backends.exllamav2_backend:ExLlamaV2Backend",
}


def load_backend_class(import_string: str) -> type:
    module_name, _, attribute = import_string.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def missing_backend_message(backend: str) -> str | None:
    """Why ``launch`` cannot serve this backend here, or None when it can."""
    if backend not in BACKENDS:
        return f"the {backend} backend is not available in this version of modelyard yet"
    module, extra = BACKEND_REQUIREMENTS[backend]
    if importlib.util.find_spec(module) is None:
        return f"the {backend} backend needs the '{module}' package: pip install 'modelyard[{extra}]'"
    return None


