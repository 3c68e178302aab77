"""Every string the integration shows has its English text, and every entity its icon.

A custom integration reads ``translations/en.json`` at run time; a missing key
shows up in the UI as a raw key, so these checks read the code and compare.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

INTEGRATION = Path(__file__).parents[2] / "custom_components/peergrid"
EN = json.loads((INTEGRATION / "translations/en.json").read_text(encoding="utf-8"))
ICONS = json.loads((INTEGRATION / "icons.json").read_text(encoding="utf-8"))
ENTITY_PLATFORMS = ("sensor", "select", "switch", "binary_sensor", "button", "number")
EXCEPTION_CALLS = ("Error", "Failed", "NotReady")


def _modules() -> list[Path]:
    return sorted(INTEGRATION.glob("*.py"))


def _call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def _keyword(node: ast.Call, name: str) -> str | None:
    for keyword in node.keywords:
        if keyword.arg == name and isinstance(keyword.value, ast.Constant):
            value = keyword.value.value
            return value if isinstance(value, str) else None
    return None


def _calls(path: Path) -> list[ast.Call]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def _entity_keys() -> set[tuple[str, str]]:
    keys = set()
    for platform in ENTITY_PLATFORMS:
        path = INTEGRATION / f"{platform}.py"
        if not path.exists():
            continue
        for call in _calls(path):
            is_description = _call_name(call).endswith("Description")
            if is_description and (key := _keyword(call, "translation_key")) is not None:
                keys.add((platform, key))
    return keys


def test_entity_names_are_translated() -> None:
    """Each entity translation key has a name in en.json."""
    keys = _entity_keys()
    assert keys, "no translated entities found"
    missing = [f"{p}.{k}" for p, k in keys if "name" not in EN["entity"].get(p, {}).get(k, {})]
    assert missing == []


def test_no_unused_entity_translations() -> None:
    """en.json has no entity texts that no entity uses."""
    used = _entity_keys()
    listed = {(p, k) for p, entries in EN["entity"].items() for k in entries}
    assert listed - used == set()


def test_entity_icons() -> None:
    """Each translated entity has an icon in icons.json, and icons are mdi names."""
    for platform, key in _entity_keys():
        icon = ICONS["entity"].get(platform, {}).get(key)
        assert icon is not None, f"{platform}.{key} has no icon"
        assert icon["default"].startswith("mdi:")
        for state_icon in icon.get("state", {}).values():
            assert state_icon.startswith("mdi:")


def test_enum_states_are_translated() -> None:
    """Every option of an enum sensor and of the select has a translated state."""
    from custom_components.peergrid.select import MODE_SELECT
    from custom_components.peergrid.sensor import SENSORS

    for description in SENSORS:
        if description.options:
            states = EN["entity"]["sensor"][description.translation_key]["state"]
            assert set(states) == set(description.options), description.key
    assert set(EN["entity"]["select"]["mode"]["state"]) == set(MODE_SELECT.options)


def test_exceptions_and_issues_are_translated() -> None:
    """Each translated exception has a message; each repair issue a title and a description."""
    problems = []
    for path in _modules():
        for call in _calls(path):
            key = _keyword(call, "translation_key")
            if key is None:
                continue
            name = _call_name(call)
            if name == "async_create_issue":
                issue = EN["issues"].get(key, {})
                if not {"title", "description"} <= set(issue):
                    problems.append(f"{path.name}: issue {key}")
            elif name.endswith(EXCEPTION_CALLS) and "message" not in EN["exceptions"].get(key, {}):
                problems.append(f"{path.name}: exception {key}")
    assert problems == []


def _flow_literals(flow_class: str) -> tuple[set[str], set[str], set[str]]:
    steps, errors, aborts = set(), set(), set()
    path = INTEGRATION / "config_flow.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    # Module-level helpers (the connection test) serve the config flow only.
    scope: list[ast.AST] = [
        n
        for n in tree.body
        if (isinstance(n, ast.ClassDef) and n.name == flow_class)
        or (not isinstance(n, ast.ClassDef) and flow_class == "PeerGridConfigFlow")
    ]
    for node in (child for top in scope for child in ast.walk(top)):
        if isinstance(node, ast.Call):
            if (step := _keyword(node, "step_id")) is not None:
                steps.add(step)
            if (reason := _keyword(node, "reason")) is not None:
                aborts.add(reason)
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript):
            target = node.targets[0]
            is_errors = isinstance(target.value, ast.Name) and target.value.id == "errors"
            value = node.value
            if is_errors and isinstance(value, ast.Constant) and isinstance(value.value, str):
                errors.add(value.value)
    # Reasons Home Assistant's flow helpers use on our behalf.
    aborts |= {"already_configured", "already_in_progress", "reauth_successful"}
    aborts |= {"reconfigure_successful"}
    return steps, errors, aborts


def test_config_flow_strings() -> None:
    """Every step, error and abort reason of the config flow has its text."""
    steps, errors, aborts = _flow_literals("PeerGridConfigFlow")
    config: dict[str, Any] = EN["config"]
    assert steps <= set(config["step"]), steps - set(config["step"])
    assert errors <= set(config["error"]), errors - set(config["error"])
    assert aborts <= set(config["abort"]), aborts - set(config["abort"])


def test_options_flow_strings() -> None:
    """The options form has its texts, one per threshold, and its error."""
    from custom_components.peergrid.peergrid_core.thresholds import THRESHOLD_RANGES

    steps, errors, _ = _flow_literals("GridOptionsFlow")
    options: dict[str, Any] = EN["options"]
    assert steps == {"init"} <= set(options["step"])
    assert errors == {"invalid_threshold"} <= set(options["error"])
    init = options["step"]["init"]
    assert set(init["data"]) == set(init["data_description"]) == set(THRESHOLD_RANGES)

    steps, errors, _ = _flow_literals("LedgerOptionsFlow")
    assert steps == {"accounts"} <= set(options["step"])
    assert errors == {"invalid_node_accounts"} <= set(options["error"])
    accounts = options["step"]["accounts"]
    assert set(accounts["data"]) == set(accounts["data_description"]) == {"node_accounts"}


@pytest.mark.parametrize("step", sorted(EN["config"]["step"]))
def test_every_field_has_a_description(step: str) -> None:
    """Each config-flow field is explained with a data_description (config-flow rule)."""
    texts = EN["config"]["step"][step]
    assert texts.get("title")
    assert set(texts.get("data", {})) == set(texts.get("data_description", {}))


def test_config_flow_schemas_match_strings() -> None:
    """The fields of each form are exactly those en.json names for its step."""
    from custom_components.peergrid import config_flow

    forms = {
        "node": config_flow.NODE_SCHEMA,
        "reconfigure": config_flow.NODE_SCHEMA,
        "ledger": config_flow.LEDGER_SCHEMA,
        "reauth_ledger": config_flow.SECRET_SCHEMA,
        "reconfigure_ledger": config_flow.LEDGER_RECONFIGURE_SCHEMA,
        "discovery_confirm": config_flow.KEY_SCHEMA,
        "reauth_confirm": config_flow.KEY_SCHEMA,
    }
    for step, schema in forms.items():
        fields = {str(marker) for marker in schema.schema}
        assert fields == set(EN["config"]["step"][step]["data"]), step


def test_actions_are_translated_and_have_icons() -> None:
    """Every action in services.yaml has a name, a description, field texts and an icon."""
    import yaml

    services = yaml.safe_load((INTEGRATION / "services.yaml").read_text(encoding="utf-8"))
    assert set(services) == set(EN["services"]) == set(ICONS["services"])
    for name, spec in services.items():
        texts = EN["services"][name]
        assert texts["name"]
        assert texts["description"]
        assert set((spec or {}).get("fields", {})) == set(texts.get("fields", {})), name
        for field in texts.get("fields", {}).values():
            assert field["name"]
            assert field["description"]
