"""Run PeerGrid's benchmarks: ``python -m bench [--full] [--only NAME ...]``.

Every module ``bench/<name>.py`` that defines ``async def run(full: bool) ->
dict[str, float]`` is a benchmark. The quick run (default) finishes in a few
minutes; ``--full`` runs the long versions. Results go to
``bench/results/latest.json`` (machine, command, per-benchmark metrics) and a
Markdown table on stdout, ready for ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
import datetime as dt
import importlib
import json
import os
from pathlib import Path
import platform
import sys
import time
from typing import cast

HERE = Path(__file__).parent
RESULTS = HERE / "results"

type Runner = Callable[[bool], Awaitable[dict[str, float]]]


def _benchmarks() -> dict[str, Runner]:
    found: dict[str, Runner] = {}
    for path in sorted(HERE.glob("*.py")):
        if path.stem.startswith("_"):
            continue
        module = importlib.import_module(f"bench.{path.stem}")
        run = getattr(module, "run", None)
        if callable(run):
            found[path.stem] = cast("Runner", run)
    return found


def _machine() -> dict[str, str | int]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count() or 0,
    }


async def _main(full: bool, only: list[str]) -> int:
    benchmarks = _benchmarks()
    unknown = set(only) - set(benchmarks)
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    results: dict[str, dict[str, float]] = {}
    for name, run in benchmarks.items():
        if only and name not in only:
            continue
        started = time.perf_counter()
        print(f"-- {name} ...", flush=True)
        results[name] = await run(full)
        print(f"   done in {time.perf_counter() - started:.1f} s", flush=True)
    report = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "mode": "full" if full else "quick",
        "machine": _machine(),
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print("\n| benchmark | metric | value |\n| --- | --- | --- |")
    for name, metrics in results.items():
        for metric, value in metrics.items():
            print(f"| {name} | {metric} | {value:.4g} |")
    return 0


def main() -> None:
    """Parse the command line and run the chosen benchmarks."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--full", action="store_true", help="run the long versions")
    parser.add_argument("--only", nargs="*", default=[], help="benchmark module names to run")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(_main(args.full, args.only)))


if __name__ == "__main__":
    main()
