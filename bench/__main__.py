"""Run PeerGrid's benchmarks: ``python -m bench [--full | --smoke] [--only NAME ...]``.

Every module ``bench/<name>.py`` (not starting with ``_``) that defines
``async def run(full: bool, *, smoke: bool = False) -> dict[str, float]`` is a
benchmark. The quick run (default) finishes in a few minutes on two cores;
``--full`` runs the long versions; ``--smoke`` runs every benchmark at a
tiny size without Home Assistant (except one start in ``startup``), to check
in CI that the harness works: its numbers mean nothing.

Results go to ``bench/results/latest.json`` (``--output`` elsewhere; a smoke
run writes only with ``--output``): when, the exact command, the machine and
its load, each benchmark's metrics and time, and any benchmark that failed.
A Markdown table follows on stdout, with ``median (lo-hi)`` where a metric
has a spread (see ``bench/_stats.py`` for the conventions). A failed
benchmark does not stop the others; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
import datetime as dt
import importlib
import json
import math
import os
from pathlib import Path
import platform
import sys
import time
import traceback
from typing import Any, cast

HERE = Path(__file__).parent
RESULTS = HERE / "results"
DEFAULT_OUTPUT = RESULTS / "latest.json"

type Runner = Callable[..., Awaitable[dict[str, float]]]


def benchmarks() -> dict[str, Runner]:
    """Every benchmark module's ``run``, by module name, in name order."""
    found: dict[str, Runner] = {}
    for path in sorted(HERE.glob("*.py")):
        if path.stem.startswith("_"):
            continue
        module = importlib.import_module(f"bench.{path.stem}")
        run = getattr(module, "run", None)
        if callable(run):
            found[path.stem] = cast("Runner", run)
    return found


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    return math.nan


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "cpus": os.cpu_count() or 0,
        "memory_gib": _memory_gib(),
    }


def _load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def _cell(metrics: dict[str, float], name: str) -> str:
    value = metrics[name]
    text = f"{value:.4g}"
    low, high = metrics.get(f"{name}_lo"), metrics.get(f"{name}_hi")
    if low is not None and high is not None and low != high:
        text += f" ({low:.3g}-{high:.3g})"
    return text


def table(results: dict[str, dict[str, float]]) -> str:
    """The Markdown table of every metric, spreads folded into their median's cell."""
    lines = ["| benchmark | metric | value |", "| --- | --- | --- |"]
    for name, metrics in results.items():
        for metric in metrics:
            if metric.endswith(("_lo", "_hi")) and metric[:-3] in metrics:
                continue
            lines.append(f"| {name} | {metric} | {_cell(metrics, metric)} |")
    return "\n".join(lines)


async def _run_all(args: argparse.Namespace) -> dict[str, Any]:
    """Run the chosen benchmarks; the report (see the module docstring)."""
    found = benchmarks()
    mode = "smoke" if args.smoke else "full" if args.full else "quick"
    results: dict[str, dict[str, float]] = {}
    elapsed: dict[str, float] = {}
    errors: dict[str, str] = {}
    load_before = _load()
    started_all = time.perf_counter()
    for name, run in found.items():
        if args.only and name not in args.only:
            continue
        started = time.perf_counter()
        print(f"-- {name} ({mode}) ...", flush=True)
        try:
            results[name] = await run(args.full, smoke=args.smoke)
        except Exception as err:  # noqa: BLE001 - one failure must not lose the other results
            errors[name] = f"{type(err).__name__}: {err}"
            traceback.print_exc()
        elapsed[name] = round(time.perf_counter() - started, 1)
        print(f"   done in {elapsed[name]:.1f} s", flush=True)
    return {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "mode": mode,
        "machine": machine(),
        "load_average": {"before": load_before, "after": _load()},
        "elapsed_s": {**elapsed, "total": round(time.perf_counter() - started_all, 1)},
        "results": results,
        "errors": errors,
    }


def main() -> None:
    """Parse the command line and run the chosen benchmarks."""
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="run the long versions")
    size.add_argument(
        "--smoke", action="store_true", help="tiny sizes, for CI: does every benchmark run?"
    )
    parser.add_argument("--only", nargs="*", default=[], help="benchmark module names to run")
    parser.add_argument("--output", type=Path, default=None, help="where to write the JSON")
    args = parser.parse_args()
    unknown = set(args.only) - set(benchmarks())
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    report = asyncio.run(_run_all(args))
    output: Path | None = args.output or (None if args.smoke else DEFAULT_OUTPUT)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        # NaN (a ratio without a baseline) is written as null: the file stays strict JSON.
        clean = json.loads(json.dumps(report), parse_constant=lambda _: None)
        output.write_text(json.dumps(clean, indent=2) + "\n", encoding="utf-8")
        print(f"\nresults written to {output}")
    print()
    print(table(report["results"]))
    for name, error in report["errors"].items():
        print(f"\nFAILED {name}: {error}", file=sys.stderr)
    raise SystemExit(1 if report["errors"] else 0)


if __name__ == "__main__":
    main()
