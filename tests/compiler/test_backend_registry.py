"""The backend registry (compiler/backends/) is the one list of backends: everything else agrees."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from modelyard.compiler import backends
from modelyard.compiler.plan import ModelPlan

REPO = Path(__file__).resolve().parents[2]


def test_the_schema_file_lists_the_registry_backends_and_aliases() -> None:
    # The file is what editors validate against; the compiler validates with the registry's lists.
    schema = json.loads((REPO / "schema" / "model.schema.json").read_text())
    backend = schema["$defs"]["model"]["properties"]["backend"]
    assert backend["enum"] == [*backends.names(), *backends.aliases()]
    assert backend["x-aliases"] == backends.aliases()
    for spec in backends.all_backends():
        assert f"`{spec.name}`" in backend["description"]


def test_every_backend_section_is_a_plan_field_and_every_engine_module_exists() -> None:
    fields = set(ModelPlan.model_fields)
    for spec in backends.all_backends():
        assert spec.section in fields
        assert spec.read_section is not None
        module, _, attribute = spec.engine.partition(":")
        assert attribute and importlib.util.find_spec(module) is not None, spec.engine
    assert len(set(backends.sections())) == len(backends.all_backends())


def test_aliases_resolve_to_their_backend_and_unknown_names_to_none() -> None:
    assert backends.resolve("llama.cpp").name == "llama-cpp"
    assert backends.resolve("exllamav2").name == "exllama2"
    assert backends.resolve("vllm").name == "vllm"
    assert backends.resolve("sglang") is None


def test_missing_says_which_module_and_how_to_install() -> None:
    spec = backends.get("vllm")
    assert spec.missing(lambda module: False) == "the vllm backend is not installed here (no 'vllm' module)"
    assert spec.missing(lambda module: True) is None
    assert spec.install_hint == "pip install 'modelyard[vllm]'"
