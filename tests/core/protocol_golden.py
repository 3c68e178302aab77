"""Access to ``tests/fixtures/protocol/golden_frames.json`` for the protocol tests."""

from __future__ import annotations

from functools import cache
import json
from pathlib import Path
from typing import Any

GOLDEN_PATH = Path(__file__).parents[1] / "fixtures" / "protocol" / "golden_frames.json"


@cache
def golden() -> dict[str, Any]:
    """The parsed fixture (read once)."""
    data: dict[str, Any] = json.loads(GOLDEN_PATH.read_text(encoding="utf-8"))
    return data


def key() -> bytes:
    """The fixture's pre-shared key."""
    text: str = golden()["key"]["text"]
    return text.encode()


def entry(name: str) -> dict[str, Any]:
    """One conversation entry by name."""
    return next(e for e in golden()["conversation"] if e["name"] == name)


def line(name: str) -> bytes:
    """The exact bytes of one conversation line."""
    text: str = entry(name)["line"]
    return text.encode()
