"""vLLM through modelyard against vLLM's own OpenAI server (`vllm serve`), in one run.

Both serve the same model with the same engine settings from the same venv (`make bench-vllm`
runs this in .venv-vllm, on vLLM's CPU build): a random Llama built offline (no hub), since the
question is what modelyard's server and worker add on top of the engine, not the model's quality.
Both servers are up for the whole run; each round measures every subject at every concurrency
level (in a rotated order), and each figure is the median round's. A load generator runs C
concurrent streaming clients against ``/v1/completions`` with ``ignore_eos`` (so every request
generates exactly ``--max-tokens``) and reports aggregate output tok/s from the servers' own
usage counts, and TTFT median. The ratio is modelyard's tok/s over vllm serve's.

    python benchmarks/vllm_bench.py [--rounds 3] [--concurrency 1 8] [--max-tokens 64] [--requests 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.random_llama import TEXTS, build_random_llama  # noqa: E402 - the repo root goes on the path first

PROMPTS = ["The quick brown fox", "Hello world, tiny model.", "café naïve 東京", "The lazy dog jumps over"]
CONTEXT = 512
# vLLM's environment, the same for both servers: a 1 GiB KV cache, no hub, no usage reports.
ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
       "VLLM_HOST_IP": "127.0.0.1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], base: str, health: str, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, **ENV})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + health, timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            break
        time.sleep(1)
    stop(process)
    raise RuntimeError(f"{command[:3]} did not start; see {log}")


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # it had exited


async def one_request(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int
                      ) -> tuple[float, int]:
    """(TTFT in seconds, completion tokens the server counted)."""
    began, first, tokens = time.perf_counter(), None, 0
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and first is None:
                first = time.perf_counter() - began
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return first or 0.0, tokens


async def measure(base: str, model: str, concurrency: int, requests: int, max_tokens: int) -> dict[str, float]:
    url = f"{base}/v1/completions"
    pending = list(range(max(requests, 2 * concurrency)))
    runs: list[tuple[float, int]] = []
    async with httpx.AsyncClient(timeout=600) as client:
        await one_request(client, url, model, "warm up", 4)

        async def worker() -> None:
            while pending:
                index = pending.pop()
                runs.append(await one_request(client, url, model, PROMPTS[index % len(PROMPTS)], max_tokens))

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - began
    return {"tok_s": sum(tokens for _, tokens in runs) / wall, "ttft_ms": statistics.median(t for t, _ in runs) * 1000,
            "tokens": sum(tokens for _, tokens in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--hidden-size", type=int, default=256, help="width of the random Llama (heads of 64)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vllm-bench-"))
    model_dir = work / "llama"
    build_random_llama(model_dir, TEXTS, vocab_size=384, hidden_size=args.hidden_size,
                       intermediate_size=2 * args.hidden_size, layers=4, heads=4, kv_heads=2, context=CONTEXT)
    (work / "bench.yaml").write_text(f"- name: llama\n  backend: vllm\n  context_size: {CONTEXT}\n"
                                     "  parameters: {model: llama}\n")
    # modelyard chooses the dtype for the CPU (compile --explain says which); vllm serve gets the same.
    from modelyard.compiler import machine
    from modelyard.compiler.backends.vllm import choose_device
    from modelyard.compiler.plan import Vllm

    dtype = choose_device(Vllm(), "cpu", machine.cpu_features()).dtype
    ours_port, theirs_port = free_port(), free_port()
    bin_dir = Path(sys.executable).parent
    subjects = {
        "vllm serve": (f"http://127.0.0.1:{theirs_port}", str(model_dir),
                       # `vllm serve` itself: vllm-cpu's `vllm` script looks for the "vllm" distribution and fails
                       [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
                        "--port", str(theirs_port), "--host", "127.0.0.1", "--max-model-len", str(CONTEXT),
                        "--dtype", dtype], "/health"),
        "modelyard": (f"http://127.0.0.1:{ours_port}", "llama",
                      [str(bin_dir / "modelyard"), "launch", str(work), "--port", str(ours_port), "--preload"],
                      "/readyz"),
    }
    processes = {}
    try:
        for name, (base, _, command, health) in subjects.items():
            print(f"starting {name} ...", flush=True)
            processes[name] = start(command, base, health, work / f"{name.replace(' ', '-')}.log")
        results: dict[tuple[str, int], list[dict[str, float]]] = {}
        order = list(subjects)
        for round_index in range(args.rounds):
            for name in order[round_index % 2:] + order[:round_index % 2]:
                base, model, _, _ = subjects[name]
                for concurrency in args.concurrency:
                    figures = asyncio.run(measure(base, model, concurrency, args.requests, args.max_tokens))
                    results.setdefault((name, concurrency), []).append(figures)
                    print(f"round {round_index + 1} {name:11s} c={concurrency}: {figures['tok_s']:7.1f} tok/s, "
                          f"TTFT {figures['ttft_ms']:6.1f} ms", flush=True)
    finally:
        for process in processes.values():
            stop(process)
    print(f"\nvLLM on CPU, dtype {dtype}, random Llama {args.hidden_size} wide, {args.max_tokens} tokens a request; "
          f"median of {args.rounds} rounds")
    print(f"{'concurrency':>11} {'vllm serve tok/s':>17} {'modelyard tok/s':>16} {'ratio':>6}")
    for concurrency in args.concurrency:
        median = {name: statistics.median(r["tok_s"] for r in results[(name, concurrency)]) for name in subjects}
        print(f"{concurrency:>11} {median['vllm serve']:>17.1f} {median['modelyard']:>16.1f} "
              f"{median['modelyard'] / median['vllm serve']:>5.2f}x")


if __name__ == "__main__":
    main()
