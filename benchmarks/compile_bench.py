"""Compile 1,000 model files and report the time, against an anchor measured in the same run.

Target (issue #2): 1,000 files in under 2 s on the 2-core CI machine. The anchor is PyYAML's
C loader merely parsing the same files, the floor for any YAML-based config tool; the ratio
says what validation, translation and normalization cost on top of parsing.

    python benchmarks/compile_bench.py [--files 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml

from modelyard.compiler import CompileOptions, LocalProbe, compile_sources, discover

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = sorted((REPO / "examples").glob("*.yaml"))


def make_models(directory: Path, count: int) -> None:
    texts = [p.read_text() for p in TEMPLATES]
    for i in range(count):
        text = texts[i % len(texts)]
        name = text.split("name: ", 1)[1].split("\n", 1)[0]
        (directory / f"model-{i:04d}.yaml").write_text(text.replace(f"name: {name}", f"name: {name}-{i}", 1))


def best_of(runs: int, fn) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        make_models(directory, args.files)
        env = {"GEMMA_CONTEXT_SIZE": "4096"}
        probe = LocalProbe()

        def compile_all() -> None:
            sources, problems = discover([str(directory)], None)
            result = compile_sources(sources, CompileOptions(env=env, probe=probe))
            assert result.ok and not problems, "benchmark configs must compile"

        def parse_only() -> None:
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            for path in sorted(directory.glob("*.yaml")):
                yaml.load(path.read_text(), Loader=loader)

        compile_s = best_of(args.runs, compile_all)
        anchor_s = best_of(args.runs, parse_only)
    print(f"files: {args.files}")
    print(f"modelyard compile: {compile_s:.3f} s ({compile_s / args.files * 1000:.2f} ms/file); target < 2 s: "
          f"{'met' if compile_s < 2 else 'NOT met'} ({compile_s / 2:.2f} of the budget)")
    print(f"anchor, PyYAML C loader parse only: {anchor_s:.3f} s")
    print(f"ratio compile / parse-only anchor: {compile_s / anchor_s:.1f}x")


if __name__ == "__main__":
    main()
