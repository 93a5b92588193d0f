"""The transformers decode loops against transformers' own ``generate``, on a tiny random Llama."""

from __future__ import annotations

import threading

import pytest

from modelyard.compiler import CompileOptions, LocalProbe, Source, compile_sources
from modelyard.launcher.backends.base import Finish, GenerationRequest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from modelyard.launcher.backends.transformers_backend import TransformersBackend  # noqa: E402
from modelyard.launcher.backends.transformers_batch import BatchScheduler  # noqa: E402

from ..e2e.test_transformers import build_tiny_llama  # noqa: E402
from .requests import greedy_request as request  # noqa: E402

PROMPTS = ["The quick brown fox", "Hello", "café naïve 東京 and the lazy dog"]


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny")
    build_tiny_llama(directory / "tiny-llama")
    text = "name: tiny\nbackend: transformers\ncontext_size: 256\nparameters: {model: tiny-llama}\n"
    result = compile_sources([Source(str(directory / "m.yaml"), "yaml", text, str(directory))],
                             CompileOptions(env={}, probe=LocalProbe()))
    return TransformersBackend(result.plan.models[0])


def tokens_of(backend, req: GenerationRequest) -> tuple[str, Finish]:
    items = list(backend.generate(req, threading.Event()))
    return "".join(i for i in items if isinstance(i, str)), items[-1]


def reference(backend, prompt: str, **kwargs) -> str:
    ids = backend.tokenizer(prompt, return_tensors="pt").input_ids
    out = backend.model.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=None,
                                 pad_token_id=backend.tokenizer.pad_token_id, **kwargs)
    return backend.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_greedy_batched_decoding_matches_generate(backend) -> None:
    results = [None] * len(PROMPTS)

    def run(index: int) -> None:
        results[index] = tokens_of(backend, request(PROMPTS[index]))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for prompt, (text, finish) in zip(PROMPTS, results):
        assert text == reference(backend, prompt) and finish.reason == "length" and finish.completion_tokens == 12


def test_repetition_penalty_matches_generate(backend) -> None:
    text, _ = tokens_of(backend, request(PROMPTS[0], repeat_penalty=1.3))
    assert text == reference(backend, PROMPTS[0], repetition_penalty=1.3)


def test_the_generate_path_used_for_openvino_streams_the_same_text(backend) -> None:
    single = BatchScheduler(backend.model, backend.tokenizer, backend.device, set(), torch, batched=False)
    original, backend.scheduler = backend.scheduler, single
    try:
        text, finish = tokens_of(backend, request(PROMPTS[2]))
        cancelled = threading.Event()
        cancelled.set()
        early = list(backend.generate(request(PROMPTS[1], max_tokens=50), cancelled))
    finally:
        backend.scheduler = original
    assert text == reference(backend, PROMPTS[2]) and finish.completion_tokens == 12
    assert early[-1].completion_tokens <= 1  # a cancelled request stops at the first check
