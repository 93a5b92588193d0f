"""Batching in the transformers backend: aggregate tok/s with 1, 4 and 8 concurrent requests.

    python benchmarks/transformers_bench.py [--tokens 64] [--requests 8]

Builds a random Llama offline (32k vocabulary, 4 layers, hidden 256: compute like a small real
model, no download), loads it with the transformers backend in-process, and runs the same
greedy requests one after another, then 4 and 8 at a time. The ratio concurrent/sequential is
what batching buys.
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: tests/random_llama.py

from modelyard.compiler import CompileOptions, LocalProbe, Source, compile_sources
from modelyard.launcher.backends.base import Finish, GenerationRequest
from modelyard.launcher.backends.transformers_backend import TransformersBackend
from tests.random_llama import build_random_llama


def build_model(directory: Path) -> None:
    rng = random.Random(0)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(60000)]
    corpus = [" ".join(rng.choices(words, k=200)) for _ in range(3000)]
    build_random_llama(directory, corpus, vocab_size=32000, hidden_size=256, intermediate_size=768, layers=4,
                       heads=8, kv_heads=4, context=1024)


def run(backend: TransformersBackend, prompts: list[str], tokens: int, concurrency: int) -> float:
    def one(prompt: str) -> int:
        request = GenerationRequest(prompt=prompt, max_tokens=tokens, temperature=0, top_p=1, top_k=0, min_p=0,
                                    typical_p=1, repeat_penalty=1, presence_penalty=0, frequency_penalty=0, seed=1,
                                    ignore_eos=True)
        return next(i.completion_tokens for i in backend.generate(request, threading.Event()) if isinstance(i, Finish))

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        produced = sum(pool.map(one, prompts))
    return produced / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        build_model(Path(directory) / "llama")
        text = "name: bench\nbackend: transformers\nthreads: 2\nparameters: {model: llama}\n"
        result = compile_sources([Source(f"{directory}/m.yaml", "yaml", text, directory)],
                                 CompileOptions(env={}, probe=LocalProbe()))
        assert result.plan is not None, result.diagnostics
        backend = TransformersBackend(result.plan.models[0])
        prompts = [f"request {i}: " + "lorem ipsum " * (4 + i) for i in range(args.requests)]
        run(backend, prompts[:2], 4, 2)  # warm-up
        rates = {c: run(backend, prompts, args.tokens, c) for c in (1, 4, 8)}
    for concurrency, rate in rates.items():
        print(f"concurrency {concurrency}: {rate:7.1f} tok/s aggregate  ({rate / rates[1]:.2f}x sequential)")


if __name__ == "__main__":
    main()
