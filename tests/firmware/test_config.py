"""The node's persistent configuration."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hypothesis import given, settings, strategies as st
import pytest

from peergrid_node import config
from peergrid_node.config import DEFAULTS, ConfigError, hostname, load, save, validate


def test_defaults_are_complete_and_valid() -> None:
    """An empty file gives the documented defaults."""
    cfg = validate({})
    assert cfg == DEFAULTS
    assert cfg["limits"] == {"min_mv": 3300, "max_mwh": 10000, "max_ma": 2500, "lease_max_s": 120}
    assert (cfg["port"], cfg["push_s"], cfg["idle_s"], cfg["max_sessions"]) == (7420, 5, 30, 3)
    assert cfg["bench_mode"] is False


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"uid": "has space"}, "uid"),
        ({"uid": "x" * 33}, "uid"),
        ({"key": "too-short"}, "key"),
        ({"key": "k" * 65}, "key"),
        ({"bench_mode": 1}, "bench_mode"),
        ({"port": 70000}, "port"),
        ({"port": "7420"}, "port"),
        ({"limits": {"min_mv": 2900}}, "limits.min_mv"),
        ({"limits": {"max_ma": 3300}}, "limits.max_ma"),
        ({"limits": {"max_mwh": True}}, "limits.max_mwh"),
        ({"limits": {"lease_max_s": 0}}, "limits.lease_max_s"),
        ({"limits": 5}, "limits"),
        ({"push_s": 61}, "push_s"),
        ({"watchdog_ms": 500}, "watchdog_ms"),
        ([], "config"),
    ],
)
def test_validate_names_the_bad_field(raw: object, field: str) -> None:
    """Strict validation raises ConfigError with the field's dotted name."""
    with pytest.raises(ConfigError) as info:
        validate(raw)
    assert info.value.field == field
    assert str(info.value).startswith(field + ": ")


def test_key_is_text_of_16_to_64_bytes() -> None:
    """Empty means no key; otherwise its UTF-8 encoding is 16-64 bytes."""
    assert validate({"key": ""})["key"] == ""
    assert validate({"key": "peergrid-golden-key-0001"})["key"] == "peergrid-golden-key-0001"
    assert validate({"key": "k" * 64})["key"] == "k" * 64


def test_load_falls_back_field_by_field(tmp_path: Path) -> None:
    """A damaged field takes its default and is reported; the rest is kept."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"uid": "pg-1", "port": -1, "limits": {"min_mv": 3400}, "x": 1}))
    cfg, problems = load(str(path))
    assert cfg["uid"] == "pg-1"
    assert cfg["port"] == 7420
    assert cfg["limits"]["min_mv"] == 3400
    assert any(p.startswith("port:") for p in problems)
    assert any(p.startswith("x:") for p in problems)


def test_load_missing_or_garbage(tmp_path: Path) -> None:
    """No file or invalid JSON: defaults, with the reason."""
    cfg, problems = load(str(tmp_path / "absent.json"))
    assert cfg == DEFAULTS
    assert "missing" in problems[0]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    cfg, problems = load(str(bad))
    assert cfg == DEFAULTS
    assert "not valid JSON" in problems[0]


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Written to a temporary file, then renamed over the old one."""
    path = tmp_path / "config.json"
    save({"uid": "pg-1"}, str(path))
    renames: list[tuple[str, str]] = []
    real_rename = os.rename

    def spy(src: str, dst: str) -> None:
        renames.append((src, dst))
        assert json.loads(Path(src).read_text())["uid"] == "pg-2"
        assert json.loads(Path(dst).read_text())["uid"] == "pg-1"
        real_rename(src, dst)

    monkeypatch.setattr(config.os, "rename", spy)
    save({"uid": "pg-2"}, str(path))
    assert renames == [(str(path) + ".tmp", str(path))]
    assert load(str(path))[0]["uid"] == "pg-2"


def test_power_cut_before_rename_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the write never completes, the old configuration is intact."""
    path = tmp_path / "config.json"
    save({"uid": "pg-1"}, str(path))

    def cut(src: str, dst: str) -> None:
        raise OSError(5, "power cut")

    monkeypatch.setattr(config.os, "rename", cut)
    with pytest.raises(OSError, match="power cut"):
        save({"uid": "pg-2"}, str(path))
    assert load(str(path))[0]["uid"] == "pg-1"


def test_invalid_config_is_never_written(tmp_path: Path) -> None:
    """save() validates first and writes nothing on error."""
    path = tmp_path / "config.json"
    with pytest.raises(ConfigError):
        save({"port": "x"}, str(path))
    assert not path.exists()
    assert not (tmp_path / "config.json.tmp").exists()


def test_hostname() -> None:
    """peergrid-<uid>, DNS-safe, at most 32 characters."""
    assert hostname("pg-a1b2c3") == "peergrid-pg-a1b2c3"
    assert hostname("Node_7") == "peergrid-node-7"
    assert len(hostname("x" * 32)) == 32


@settings(max_examples=200)
@given(st.dictionaries(st.sampled_from(sorted(DEFAULTS)), st.none() | st.integers() | st.text()))
def test_forgiving_load_never_raises(raw: dict[str, object]) -> None:
    """Whatever the file holds, merge_defaults gives a configuration validate() accepts."""
    cfg, _ = config.merge_defaults(raw)
    assert validate(cfg) == cfg
