"""The quality-scale record lists every rule of all four tiers, in a valid shape.

Home Assistant skips ``quality_scale.yaml`` for custom integrations, so this
test is what keeps the file honest.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
import yaml

QUALITY_SCALE = Path(__file__).parents[2] / "custom_components/peergrid/quality_scale.yaml"

BRONZE = {
    "action-setup",
    "appropriate-polling",
    "brands",
    "common-modules",
    "config-flow",
    "config-flow-test-coverage",
    "dependency-transparency",
    "docs-actions",
    "docs-conditions",
    "docs-high-level-description",
    "docs-installation-instructions",
    "docs-removal-instructions",
    "docs-triggers",
    "entity-event-setup",
    "entity-unique-id",
    "has-entity-name",
    "runtime-data",
    "test-before-configure",
    "test-before-setup",
    "unique-config-entry",
}
SILVER = {
    "action-exceptions",
    "config-entry-unloading",
    "docs-configuration-parameters",
    "docs-installation-parameters",
    "entity-unavailable",
    "integration-owner",
    "log-when-unavailable",
    "parallel-updates",
    "reauthentication-flow",
    "test-coverage",
}
GOLD = {
    "devices",
    "diagnostics",
    "discovery",
    "discovery-update-info",
    "docs-data-update",
    "docs-examples",
    "docs-known-limitations",
    "docs-supported-devices",
    "docs-supported-functions",
    "docs-troubleshooting",
    "docs-use-cases",
    "dynamic-devices",
    "entity-category",
    "entity-device-class",
    "entity-disabled-by-default",
    "entity-translations",
    "exception-translations",
    "icon-translations",
    "reconfiguration-flow",
    "repair-issues",
    "stale-devices",
}
PLATINUM = {"async-dependency", "inject-websession", "strict-typing"}
ALL_RULES = BRONZE | SILVER | GOLD | PLATINUM
# Rules that the integration's nature forbids exempting (see the quality-scale guide).
NEVER_EXEMPT = {"dynamic-devices", "stale-devices", "config-flow", "test-coverage"}


def _rules() -> dict[str, Any]:
    data = yaml.safe_load(QUALITY_SCALE.read_text(encoding="utf-8"))
    assert set(data) == {"rules"}, "the file holds only the `rules` mapping"
    rules = data["rules"]
    assert isinstance(rules, dict)
    return rules


def _status(value: Any) -> tuple[str, str | None]:
    if isinstance(value, str):
        return value, None
    assert isinstance(value, dict), f"unexpected entry {value!r}"
    assert set(value) <= {"status", "comment"}, f"unknown keys in {value!r}"
    comment = value.get("comment")
    assert comment is None or (isinstance(comment, str) and comment.strip())
    return value["status"], comment


def test_tier_sizes() -> None:
    """The rule table matches Home Assistant's: 20 bronze, 10 silver, 21 gold, 3 platinum."""
    assert (len(BRONZE), len(SILVER), len(GOLD), len(PLATINUM)) == (20, 10, 21, 3)
    assert len(ALL_RULES) == 54


def test_every_rule_listed_once() -> None:
    """Every rule of every tier appears, and nothing else does."""
    rules = _rules()
    assert set(rules) - ALL_RULES == set(), "unknown rule ids"
    assert ALL_RULES - set(rules) == set(), "rules missing from quality_scale.yaml"


@pytest.mark.parametrize("rule", sorted(ALL_RULES))
def test_rule_shape(rule: str) -> None:
    """Each status is done, todo or exempt; an exemption always says why."""
    status, comment = _status(_rules()[rule])
    assert status in {"done", "todo", "exempt"}
    if status == "exempt":
        assert comment, f"{rule} is exempt without a reason"
        assert rule not in NEVER_EXEMPT, f"{rule} cannot be exempt for PeerGrid"


# Re-implementations of the cheap checks Home Assistant core runs on its own
# integrations (hassfest skips them for custom ones).
INTEGRATION = QUALITY_SCALE.parent
PLATFORM_MODULES = ["select.py", "sensor.py", "switch.py"]


def _tree(name: str) -> ast.Module:
    return ast.parse((INTEGRATION / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("module", PLATFORM_MODULES)
def test_parallel_updates_on_every_platform(module: str) -> None:
    """parallel-updates: each platform sets PARALLEL_UPDATES (0 read-only, 1 for relays)."""
    assigned = {
        target.id: node.value
        for node in _tree(module).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    value = assigned["PARALLEL_UPDATES"]
    assert isinstance(value, ast.Constant)
    assert value.value == (0 if module == "sensor.py" else 1)


def test_common_modules_and_entity_name() -> None:
    """common-modules and has-entity-name: coordinator.py, entity.py with has_entity_name."""
    assert (INTEGRATION / "coordinator.py").exists()
    source = (INTEGRATION / "entity.py").read_text(encoding="utf-8")
    assert "_attr_has_entity_name = True" in source


def test_runtime_data_and_typed_entries() -> None:
    """runtime-data: entries carry their coordinator in runtime_data, typed everywhere."""
    for path in INTEGRATION.glob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert "hass.data[DOMAIN]" not in source, path.name
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.AsyncFunctionDef) and node.name in {
                "async_setup_entry",
                "async_unload_entry",
                "async_get_config_entry_diagnostics",
            }:
                entry = next(a for a in node.args.args if a.arg == "entry")
                assert ast.unparse(entry.annotation or ast.Constant(None)) == "PeerGridConfigEntry"
    assert "entry.runtime_data = coordinator" in (INTEGRATION / "__init__.py").read_text()


def test_icons_only_from_icons_json() -> None:
    """icon-translations: no icon is set in Python."""
    for path in INTEGRATION.glob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert "_attr_icon" not in source, path.name
        assert "icon=" not in source, path.name


def test_no_actions_registered_in_setup_entry() -> None:
    """action-setup: no action is registered while setting up an entry."""
    for node in ast.walk(_tree("__init__.py")):
        if isinstance(node, ast.AsyncFunctionDef) and node.name == "async_setup_entry":
            source = ast.unparse(node)
            assert "services.async_register" not in source
            assert "async_register_entity_service" not in source
