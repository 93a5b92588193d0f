"""A deterministic backend for tests, usable in-process (FakePool) or in a real worker process.

It "generates" a reply chosen by markers in the prompt:
  [echo]   the prompt itself, split in 3-character tokens
  [slow]   200 tokens, 20 ms apart (for cancellation and crash tests)
  [crash]  kills its own process after 3 tokens
  [segv]   dies of SIGSEGV before its first token (a decode that crashes, as llama.cpp's AMX kernels did)
  [fail]   raises a RequestError (context exceeded) before generating
  [dead]   its engine dies after 2 tokens (EngineDead: the worker exits and is replaced)
  [engine-pid]  replies with the pid of its "engine": a process it started at load when the
           model's description says spawns-engine (as vLLM starts its engine core)
  [last-choice]  with a JSON Schema that is a union (anyOf), an instance of its last alternative
  [call:NAME]  a tool call {"name": NAME, "arguments": {"city": "Paris", "unit": "C"}}, in 3-character tokens
a request with a JSON Schema (response_format, forced tool calls) gets the smallest instance of
it, in 3-character tokens; otherwise "Hello world, this is a fake model." in word tokens.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

from modelyard.compiler.plan import ModelPlan
from modelyard.launcher.backends.base import (
    EngineDead,
    Finish,
    GenerationRequest,
    GeneratorBackend,
    Logprob,
    PromptLogprobs,
    RequestError,
    Started,
    check_token_ids,
)

DEFAULT_REPLY = ["Hello", " world", ",", " this", " is", " a", " fake", " model", "."]
CONTEXT = 256


class FakeBackend(GeneratorBackend):
    def __init__(self, model: ModelPlan) -> None:
        if "fail-load" in (model.description or ""):
            raise RuntimeError("this model is configured to fail loading")
        self.model = model
        self.engine = None
        if "spawns-engine" in (model.description or ""):  # never waited for: the process group ends it
            self.engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])

    @property
    def context_size(self) -> int:
        return CONTEXT

    def generate(self, request: GenerationRequest, cancelled: threading.Event) -> Iterator[str | Started | Logprob | Finish]:
        prompt = request.prompt
        if "[fail]" in prompt:
            raise RequestError("the prompt does not fit the context", code="context_length_exceeded",
                               param="messages")
        call = re.search(r"\[call:(\w+)\]", prompt)
        if request.json_schema is not None:
            schema = request.json_schema
            if "[last-choice]" in prompt and "anyOf" in schema:  # the schema's last alternative instead
                schema = {**schema["anyOf"][-1], **({"$defs": schema["$defs"]} if "$defs" in schema else {})}
            tokens = _chunks(json.dumps(example_instance(schema)))
        elif call is not None:
            tokens = _chunks(json.dumps({"name": call.group(1), "arguments": {"city": "Paris", "unit": "C"}}))
        elif "[echo]" in prompt:
            tokens = _chunks(prompt)
        elif "[engine-pid]" in prompt and self.engine is not None:
            tokens = [str(self.engine.pid)]
        elif "[slow]" in prompt or "[crash]" in prompt:
            tokens = [f" t{i}" for i in range(200)]
        else:
            tokens = list(DEFAULT_REPLY)
        prompt_tokens = max(1, len(prompt) // 4)
        if "[segv]" in prompt:
            ctypes.string_at(0)  # a real segmentation fault: a read of address 0
        yield Started(prompt_tokens)
        if request.prompt_logprobs is not None:  # the prompt in 3-character tokens, each scored -1.0
            first, *rest = _chunks(prompt) or [""]
            yield PromptLogprobs((first, list(first.encode())), [
                Logprob(piece, -1.0, list(piece.encode()), [(piece, -1.0, list(piece.encode()))][:request.prompt_logprobs])
                for piece in rest])
        limit = request.max_tokens if request.max_tokens is not None else CONTEXT - prompt_tokens
        produced = 0
        for token in tokens:
            if cancelled.is_set() or produced >= limit:
                break
            if "[crash]" in prompt and produced == 3:
                os._exit(3)
            if "[dead]" in prompt and produced == 2:
                raise EngineDead("the fake engine died")
            if "[slow]" in prompt or "[crash]" in prompt:
                time.sleep(0.02)
            produced += 1
            if request.logprobs is not None:
                alternatives = [(f"alt{i}", -1.0 - i, list(f"alt{i}".encode())) for i in range(request.logprobs)]
                yield Logprob(token, -0.5, list(token.encode()), alternatives)
            yield token
        reason = "length" if produced >= limit and produced < len(tokens) else "stop"
        yield Finish(reason, prompt_tokens, produced)

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        """A token per character, its code point; 1 first as a BOS."""
        return ([1] if add_special else []) + [ord(c) for c in text]

    def detokenize(self, tokens: list[int]) -> str:
        check_token_ids(tuple(tokens), 0x110000, "tokens")
        return "".join(chr(t) for t in tokens if t != 1)

    def embed(self, inputs: list[str | list[int]]) -> tuple[list[list[float]], int]:
        """Deterministic unit vectors of dimension 4: [1, 0, 0, 0] rotated by the text length
        (a token array counts as its ids joined by spaces)."""
        texts = [item if isinstance(item, str) else " ".join(map(str, item)) for item in inputs]
        vectors = []
        for text in texts:
            axis = len(text) % 4
            vectors.append([1.0 if i == axis else 0.0 for i in range(4)] if not text.startswith("[mix]")
                           else [0.5, 0.5, 0.5, 0.5])
        return vectors, sum(max(1, len(t) // 4) for t in texts)


def _chunks(text: str) -> list[str]:
    return [text[i:i + 3] for i in range(0, len(text), 3)]


def example_instance(schema: dict) -> object:
    """The smallest value that fits ``schema`` (the keywords the tests use)."""
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if "anyOf" in schema:
        return example_instance(schema["anyOf"][0])
    kind = schema.get("type", "object")
    if kind == "object":
        properties = schema.get("properties", {})
        return {key: example_instance(properties[key]) for key in schema.get("required", properties)}
    if kind == "array":
        return [example_instance(schema.get("items", {"type": "string"}))] * max(1, schema.get("minItems", 1))
    return {"string": "x", "integer": 1, "number": 1.5, "boolean": True, "null": None}[kind]
