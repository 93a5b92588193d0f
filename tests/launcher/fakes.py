"""An in-process pool over the fake backend, recording what it was asked."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from modelyard.compiler.plan import LaunchPlan, ModelPlan
from modelyard.launcher.backends.base import GenerationRequest
from modelyard.launcher.messages import Embeddings, Item, Tokens
from modelyard.launcher.pool import ModelUnavailable

from ..compiler.fakes import compile_yaml, default_probe
from .fake_backend import FakeBackend


class FakePool:
    def __init__(self, plan: LaunchPlan) -> None:
        self.backends = {m.name: FakeBackend(m) for m in plan.models}
        self.requests: list[tuple[str, GenerationRequest]] = []
        self.unavailable: ModelUnavailable | None = None
        self.closed = False
        self.preloaded = False
        self.failing: dict[str, tuple[str, float]] = {}  # what failures() reports
        self.keep_alive_s: dict[str, float | None] = {}  # what keep_alive() was told
        self.unloaded: set[str] = set()

    def add(self, model: ModelPlan) -> None:
        self.backends[model.name] = FakeBackend(model)

    async def remove(self, name: str) -> None:
        self.backends.pop(name, None)

    async def generate(self, model: str, request: GenerationRequest) -> AsyncIterator[Item]:
        if self.unavailable is not None:
            raise self.unavailable
        self.requests.append((model, request))
        cancelled = threading.Event()
        try:
            for item in self.backends[model].generate(request, cancelled):
                await asyncio.sleep(0)
                yield item
        finally:
            cancelled.set()

    async def embed(self, model: str, inputs: list[str]) -> Embeddings:
        return Embeddings(*self.backends[model].embed(inputs))

    async def tokenize(self, model: str, text: str | None, tokens: list[int] | None, add_special: bool,
                       pieces: bool = False) -> Tokens:
        backend = self.backends[model]
        if tokens is not None:
            return Tokens(tokens, backend.detokenize(tokens))
        ids = backend.tokenize(text or "", add_special)
        return Tokens(ids, text or "", [backend.detokenize([t]) for t in ids] if pieces else None)

    def failures(self) -> dict[str, tuple[str, float]]:
        return dict(self.failing)

    def stats(self) -> dict[str, dict[str, int]]:
        return {name: {"loaded": 1, "in_flight": 0, "restarts": 0} for name in self.backends}

    def loaded(self) -> dict[str, float | None]:
        return {name: self.keep_alive_s.get(name) for name in self.backends if name not in self.unloaded}

    async def keep_alive(self, model: str, seconds: float) -> None:
        self.keep_alive_s[model] = None if seconds == float("inf") else seconds
        if seconds <= 0:
            self.unloaded.add(model)

    async def preload(self) -> None:
        self.preloaded = True

    async def close(self) -> None:
        self.closed = True


def wait_until_ready(client, timeout_s: float = 5.0) -> dict[str, Any]:
    """``/readyz``'s body once it answers 200 (start-up work runs after the server starts)."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get("/readyz")
        if response.status_code == 200 or time.monotonic() > deadline:
            return response.json()
        time.sleep(0.02)


# The models most HTTP tests serve: a chat model, a plain one, output rules, an embeddings model.
MODELS = """
- name: chat
  backend: llama-cpp
  parameters: {model: model.gguf, temperature: 0.3, max_tokens: 64}
  stopwords: ["<end>"]
  template:
    chat_message: "<{{ RoleName }}>{{ Content }}"
    chat: "{{ Input }}\\n<assistant>"
    completion: "Q: {{ Input }}"
  # Calls read from the text the fake writes (test_tool_grammar.py covers LocalAI's call grammar).
  function: {grammar: {disable: true}}
- name: plain
  backend: llama-cpp
  parameters: {model: model.gguf}
- name: rules
  backend: llama-cpp
  parameters: {model: model.gguf}
  cutstrings: ["fake "]
  trimsuffix: ["."]
  template: {chat_message: "{{ Content }}"}
- name: embed
  backend: transformers
  embeddings: true
  known_usecases: [embeddings]
  parameters: {model: hf-model}
"""


def make_plan(text: str = MODELS):
    probe = default_probe()
    probe.backends = {"llama-cpp", "transformers"}
    result = compile_yaml({"models/m.yaml": text}, probe=probe)
    assert result.plan is not None, result.diagnostics
    return result.plan
