"""Every firmware module compiles for the ESP32 (xtensawin) with mpy-cross.

This catches syntax the MicroPython compiler refuses (and that CPython would
accept) before a file reaches a node.
"""

from __future__ import annotations

from pathlib import Path
import subprocess
import sys

import pytest

FIRMWARE = Path(__file__).parents[2] / "firmware"
MPY_CROSS = Path(sys.executable).parent / "mpy-cross"
MODULES = sorted(
    str(p.relative_to(FIRMWARE)) for p in FIRMWARE.rglob("*.py") if "__pycache__" not in p.parts
)


def test_every_module_is_listed() -> None:
    """The boot files and the whole package are covered."""
    assert {"boot.py", "main.py", "peergrid_node/node.py"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_compiles_for_esp32(module: str, tmp_path: Path) -> None:
    """mpy-cross -march=xtensawin accepts the module."""
    out = tmp_path / (Path(module).stem + ".mpy")
    result = subprocess.run(
        [str(MPY_CROSS), "-march=xtensawin", "-o", str(out), str(FIRMWARE / module)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    header = out.read_bytes()[:4]
    assert header[0:1] == b"M"  # .mpy magic
    assert header[1] == 6  # mpy format version of MicroPython 1.22+
