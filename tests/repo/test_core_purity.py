"""The pure core, and its tests, import where Home Assistant cannot be imported."""

from __future__ import annotations

import ast
import os
from pathlib import Path
import subprocess
import sys

ROOT = Path(__file__).parents[2]
CORE = ROOT / "custom_components/peergrid/peergrid_core"

# Run in a fresh interpreter with an import hook that makes any
# `homeassistant` import fail, as on a gateway where it is not installed.
_PROBE = r"""
import importlib, importlib.abc, pkgutil, sys

class _NoHomeAssistant(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "homeassistant" or name.startswith("homeassistant."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)")
        return None

sys.meta_path.insert(0, _NoHomeAssistant())
import peergrid_core
names = [
    m.name for m in pkgutil.walk_packages(peergrid_core.__path__, "peergrid_core.")
    if not m.name.endswith(".__main__")
]
for name in names:
    importlib.import_module(name)
assert not [m for m in sys.modules if m.split(".")[0] == "homeassistant"]
print(f"imported {len(names) + 1} core modules")

import pytest
sys.exit(pytest.main([
    "tests/core", "--collect-only", "-q",
    "-p", "no:homeassistant", "-p", "no:cacheprovider", "-p", "no:socket",
]))
"""


def test_core_and_its_tests_import_without_home_assistant() -> None:
    """Import every core module and collect tests/core with homeassistant blocked."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "firmware")])}
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "core modules" in result.stdout
    assert "error" not in result.stdout.lower().splitlines()[-1]


def test_no_home_assistant_import_in_core_source() -> None:
    """No core module names homeassistant, not even behind TYPE_CHECKING."""
    offenders = []
    for path in CORE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
            else:
                continue
            offenders += [
                f"{path}:{node.lineno}" for n in names if n.split(".")[0] == "homeassistant"
            ]
    assert offenders == []


def test_core_imports_are_relative() -> None:
    """Inside the core, modules reach each other relatively, never as peergrid_core.*."""
    offenders = []
    for path in CORE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.split(".")[0] in {"peergrid_core", "custom_components"}:
                    offenders.append(f"{path}:{node.lineno}")
            elif isinstance(node, ast.Import):
                offenders += [
                    f"{path}:{node.lineno}"
                    for alias in node.names
                    if alias.name.split(".")[0] in {"peergrid_core", "custom_components"}
                ]
    assert offenders == []
