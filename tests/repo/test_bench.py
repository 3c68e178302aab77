"""The benchmark harness finds every benchmark, and each one has the entry point it calls."""

from __future__ import annotations

import inspect
from pathlib import Path

from bench.__main__ import benchmarks, table

BENCH = Path(__file__).parents[2] / "bench"


def test_every_benchmark_module_exposes_run_for_the_harness() -> None:
    found = benchmarks()
    modules = {path.stem for path in BENCH.glob("*.py") if not path.stem.startswith("_")}

    assert set(found) == modules
    assert {
        "command_latency",
        "ledger",
        "protocol_roundtrip",
        "safety_reaction",
        "scheduler",
        "startup",
        "telemetry_fanin",
    } <= set(found)
    for name, run in found.items():
        assert inspect.iscoroutinefunction(run), name
        parameters = inspect.signature(run).parameters
        assert list(parameters)[:1] == ["full"], name
        assert parameters["smoke"].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert parameters["smoke"].default is False, name
    # The table folds a metric's per-round range into its median's cell.
    assert table({"x": {"a_ms": 2.0, "a_ms_lo": 1.0, "a_ms_hi": 3.0}}).splitlines()[2] == (
        "| x | a_ms | 2 (1-3) |"
    )


def test_smoke_run_completes(tmp_path: Path) -> None:
    """Every benchmark runs end to end in its smallest size (CI checks completion, not speed)."""
    import json
    import subprocess
    import sys

    output = tmp_path / "smoke.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--output", str(output)],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads(output.read_text())
    assert not results.get("errors"), results.get("errors")
