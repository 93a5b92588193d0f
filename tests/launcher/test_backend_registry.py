"""Adding a backend is one registry entry plus its engine: a stub backend, registered here and
nowhere else, compiles, is accepted by the launcher and serves through a real worker process."""

from __future__ import annotations

from starlette.testclient import TestClient

from modelyard.compiler import backends
from modelyard.compiler.backends import BackendSpec
from modelyard.launcher.app import create_app
from modelyard.launcher.backends import missing_backend_message
from modelyard.launcher.pool import PoolSettings, WorkerPool

from ..compiler.fakes import compile_yaml, default_probe

STUB = BackendSpec(
    name="stub", summary="a test engine", engine="tests.launcher.fake_backend:FakeBackend",
    requirement=("json", "stub"),  # a module every Python has: the stub is "installed"
    order=99, aliases=("stub-engine",), default_context=256,
)
YAML = """
name: s
backend: stub-engine
parameters: {model: weights.bin}
template: {chat_message: "{{ Content }}"}
"""


def test_a_stub_backend_registered_in_one_place_compiles_and_serves() -> None:
    with backends.registered(STUB):
        probe = default_probe()
        probe.files["models/weights.bin"] = "x"
        probe.backends.add("stub")
        result = compile_yaml({"models/s.yaml": YAML}, probe=probe)
        assert result.plan is not None, result.diagnostics
        model = result.plan.models[0]
        assert (model.backend, model.context_size) == ("stub", 256)
        assert [d for d in result.diagnostics if "stub" in d.message] == []  # installed: no warning
        assert missing_backend_message("stub") is None

        pool = WorkerPool(result.plan, settings=PoolSettings(load_wait_s=20))  # the registry's engines
        with TestClient(create_app(result.plan, pool=pool)) as client:
            reply = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
            assert reply.status_code == 200, reply.text
            assert reply.json()["choices"][0]["message"]["content"] == "Hello world, this is a fake model."


def test_a_stub_backend_gets_the_shared_rules_from_its_capabilities() -> None:
    with backends.registered(STUB):
        probe = default_probe()
        probe.files["models/weights.bin"] = "x"
        result = compile_yaml({"models/s.yaml": YAML + 'grammar: "root ::= \\"a\\""\nquantization: awq\n'}, probe=probe)
        messages = sorted(d.message for d in result.diagnostics if d.is_error)
        assert messages == [
            "GBNF grammars are llama.cpp's: stub models take JSON Schemas through response_format instead",
            "stub takes no 'quantization' (the GGUF/EXL2 file is already quantized)",
        ]
    assert backends.resolve("stub") is None  # gone again
    assert compile_yaml({"models/s.yaml": YAML}).plan is None
