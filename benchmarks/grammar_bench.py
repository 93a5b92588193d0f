"""What a JSON-Schema grammar costs: decode tok/s with and without one, same prompt, same model.

    python benchmarks/grammar_bench.py [--tokens 96] [--runs 3]

Runs the llama-cpp backend in-process on the Gemma 3 270M GGUF (the PyPI package), greedy, and
reports tok/s for: no grammar; the JSON grammar (``response_format: json_object``); a JSON
Schema grammar with a nested object, an enum and an array. The ratio grammar/none is the cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

from modelyard.compiler import CompileOptions, LocalProbe, Source, compile_sources
from modelyard.launcher.backends.base import Finish, GenerationRequest
from modelyard.launcher.backends.llama_cpp import LlamaCppBackend

REPO = Path(__file__).resolve().parent.parent
SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 400},
    "kind": {"type": "string", "enum": ["person", "place", "thing"]},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 40}, "maxItems": 20},
    "details": {"type": "object", "properties": {"summary": {"type": "string", "maxLength": 1000},
                                                 "score": {"type": "number"}},
                "required": ["summary", "score"]}},
    "required": ["name", "kind", "tags", "details"]}
PROMPT = "<start_of_turn>user\nDescribe the city of Paris as JSON.<end_of_turn>\n<start_of_turn>model\n"


def request(tokens: int, **grammar) -> GenerationRequest:
    return GenerationRequest(prompt=PROMPT, max_tokens=tokens, temperature=0, top_p=1, top_k=40, min_p=0,
                             typical_p=1, repeat_penalty=1, presence_penalty=0, frequency_penalty=0, seed=1,
                             ignore_eos=True, **grammar)


def decode_rate(backend: LlamaCppBackend, req: GenerationRequest) -> tuple[float, int]:
    start, first, produced = time.perf_counter(), None, 0
    for item in backend.generate(req, threading.Event()):
        if isinstance(item, str) and first is None:
            first = time.perf_counter()
        if isinstance(item, Finish):
            produced = item.completion_tokens
    end = time.perf_counter()
    return (produced - 1) / (end - (first or start)), produced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    text = (REPO / "gallery" / "gemma-3-270m.yaml").read_text()
    result = compile_sources([Source("gemma.yaml", "yaml", text, str(REPO))], CompileOptions(env={}, probe=LocalProbe()))
    assert result.plan is not None, result.diagnostics
    backend = LlamaCppBackend(result.plan.models[0])
    cases = {"none": {}, "json_object": {"json_object": True}, "json_schema": {"json_schema": SCHEMA}}
    decode_rate(backend, request(8))  # warm-up
    rates = {}
    for label, grammar in cases.items():
        samples = [decode_rate(backend, request(args.tokens, **grammar)) for _ in range(args.runs)]
        rates[label] = statistics.median(rate for rate, _ in samples)
        print(f"{label:12s} {rates[label]:6.1f} tok/s  (median of {args.runs}, {samples[0][1]} tokens each)")
    for label in ("json_object", "json_schema"):
        print(f"{label} / none: {rates[label] / rates['none']:.2f}")
    print(json.dumps({"tok_per_s": rates}))


if __name__ == "__main__":
    main()
