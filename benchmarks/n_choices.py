"""``n`` choices decode at once: a request with ``n: 4`` on a ``parallel: 4`` model against one
choice (the anchor) and against four one-choice requests in a row (how ``n`` used to run).

    python benchmarks/n_choices.py [--rounds 3] [--max-tokens 64]

Each round times, back to back on one server: one request with n=1, one with n=4, and four n=1
requests in a row. Medians over the rounds are reported, as ratios to the n=1 time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from serving_bench import REPO, free_port, start_server, stop_server

PROMPT = "A short story about a lighthouse keeper who finds a message in a bottle:\n"


def timed(client: httpx.Client, url: str, n: int, max_tokens: int) -> float:
    started = time.perf_counter()
    response = client.post(url, json={"model": "gemma-p4", "prompt": PROMPT, "n": n, "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0.8,
                                      "seed": 7}, timeout=600)
    if response.status_code != 200:
        raise SystemExit(f"n={n}: {response.status_code} {response.text}")
    choices = response.json()["choices"]
    assert len(choices) == n and all(c["finish_reason"] == "length" for c in choices), response.text
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_server([sys.executable, "-m", "modelyard.cli.main", "launch",
                            str(REPO / "benchmarks" / "configs" / "gemma-p4.yaml"), "--port", str(port), "--preload",
                            "--log-level", "warning"], base, "/readyz")
    one, four, serial = [], [], []
    try:
        with httpx.Client() as client:
            url = base + "/v1/completions"
            timed(client, url, 1, 8)  # warm-up
            for _ in range(args.rounds):
                one.append(timed(client, url, 1, args.max_tokens))
                four.append(timed(client, url, 4, args.max_tokens))
                serial.append(sum(timed(client, url, 1, args.max_tokens) for _ in range(4)))
    finally:
        stop_server(process)
    anchor = statistics.median(one)
    print(f"n choices on parallel:4, {args.max_tokens} tokens each, median of {args.rounds} rounds")
    print(f"  n=1 (anchor)             {anchor:6.2f} s  1.00x")
    print(f"  n=4, one request         {statistics.median(four):6.2f} s  {statistics.median(four) / anchor:.2f}x")
    print(f"  4 x n=1, one after other {statistics.median(serial):6.2f} s  {statistics.median(serial) / anchor:.2f}x")


if __name__ == "__main__":
    main()
