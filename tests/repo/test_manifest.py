"""manifest.json and hacs.json are complete and shaped as Home Assistant and HACS expect."""

from __future__ import annotations

import json
from pathlib import Path
import re

ROOT = Path(__file__).parents[2]
INTEGRATION = ROOT / "custom_components/peergrid"


def _manifest() -> dict[str, object]:
    return json.loads((INTEGRATION / "manifest.json").read_text(encoding="utf-8"))


def test_manifest_keys_sorted() -> None:
    """`domain` and `name` come first, every other key in alphabetical order."""
    keys = list(_manifest())
    assert keys[:2] == ["domain", "name"]
    assert keys[2:] == sorted(keys[2:])


def test_manifest_required_fields() -> None:
    """The keys HACS and hassfest require for a custom integration are present."""
    manifest = _manifest()
    for key in (
        "domain",
        "name",
        "version",
        "codeowners",
        "documentation",
        "issue_tracker",
        "config_flow",
        "integration_type",
        "iot_class",
        "requirements",
    ):
        assert key in manifest, key
    assert manifest["domain"] == "peergrid" == INTEGRATION.name
    assert re.fullmatch(r"\d+\.\d+\.\d+", str(manifest["version"]))
    assert manifest["codeowners"], "integration-owner needs a code owner"
    assert manifest["iot_class"] == "local_push"
    assert manifest["integration_type"] == "hub"
    assert (INTEGRATION / "config_flow.py").exists() is manifest["config_flow"]


def test_manifest_version_matches_core() -> None:
    """The integration and its core are released together under one version."""
    init = (INTEGRATION / "peergrid_core/__init__.py").read_text(encoding="utf-8")
    assert f'__version__ = "{_manifest()["version"]}"' in init


def test_one_integration_for_hacs() -> None:
    """HACS takes the first folder under custom_components/: there must be only one."""
    folders = [p.name for p in (ROOT / "custom_components").iterdir() if p.is_dir()]
    assert [f for f in folders if f != "__pycache__"] == ["peergrid"]


def test_hacs_json() -> None:
    """hacs.json has only keys HACS accepts, and names the tested Home Assistant."""
    hacs = json.loads((ROOT / "hacs.json").read_text(encoding="utf-8"))
    allowed = {
        "name",
        "content_in_root",
        "zip_release",
        "filename",
        "hide_default_branch",
        "country",
        "homeassistant",
        "hacs",
        "persistent_directory",
    }
    assert set(hacs) <= allowed
    assert hacs["name"] == "PeerGrid"
    assert hacs["homeassistant"] == "2025.4.4"
    assert not hacs.get("zip_release") or "filename" in hacs


def test_python_version_file() -> None:
    """The toolchain is Python 3.13."""
    assert (ROOT / ".python-version").read_text(encoding="utf-8").strip() == "3.13"
