"""The core and the edge gateway install on their own, without Home Assistant."""

from __future__ import annotations

import os
from pathlib import Path
import shutil
import subprocess
import sys
import zipfile

ROOT = Path(__file__).parents[2]


def test_wheel_carries_the_core(tmp_path: Path) -> None:
    """The distribution maps the integration's core folder to peergrid_core, beside edge."""
    # Build from a copy so that setuptools' build/ and egg-info never land in the checkout.
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", ".*_cache", ".hypothesis"),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=300,
        # Keep pytest-cov out of the build: it would measure the copied tree.
        env={k: v for k, v in os.environ.items() if not k.startswith("COV_CORE")},
    )
    (wheel,) = (tmp_path / "dist").glob("peergrid-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "peergrid_core/__init__.py",
        "peergrid_core/py.typed",
        "peergrid_core/errors.py",
    } <= names
    assert not [n for n in names if n.startswith(("custom_components/", "tests/"))]
    assert not [n for n in names if n.split("/")[0] == "homeassistant"]
