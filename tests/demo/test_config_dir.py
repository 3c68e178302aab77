"""The configuration folder the demo prepares, read back the way Home Assistant reads it."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import bcrypt
from homeassistant.util.yaml import load_yaml
import jwt
import pytest

from demo.config_dir import (
    INTEGRATION_SOURCE,
    DemoNode,
    HomeAssistantSetup,
    energy_preferences,
    prepare_config_dir,
)
from demo.dashboard import DASHBOARD_URL_PATH

PASSWORD = "correct horse battery"


@pytest.fixture
async def prepared(tmp_path: Path) -> tuple[Path, str]:
    """A folder prepared for two nodes and a gateway; returns it and the gateway's token."""
    setup = HomeAssistantSetup(
        config_dir=tmp_path / "homeassistant",
        port=18999,
        username="demo",
        password=PASSWORD,
        display_name="Demo",
        nodes=(
            DemoNode(uid="NODE_A", host="127.0.0.1", port=40001, key="a" * 32),
            DemoNode(uid="NODE_B", host="127.0.0.1", port=40002, key="b" * 32),
        ),
        gateway_device_id="garage-gateway",
        gateway_nodes=("GARAGE_1",),
    )
    token = await prepare_config_dir(setup)
    return setup.config_dir, token


def _storage(folder: Path, key: str) -> dict[str, Any]:
    stored: dict[str, Any] = json.loads((folder / ".storage" / key).read_text())
    assert stored["key"] == key
    data: dict[str, Any] = stored["data"]
    return data


def test_configuration_yaml(prepared: tuple[Path, str]) -> None:
    """Loopback HTTP, SQLite recorder, the dashboard and its package; no default_config."""
    folder, _token = prepared
    config = load_yaml(folder / "configuration.yaml")
    assert isinstance(config, dict)

    assert config["http"] == {"server_host": "127.0.0.1", "server_port": 18999}
    assert "default_config" not in config
    assert {"frontend", "api", "config", "history", "logbook", "energy", "recorder"} <= set(config)
    dashboard = config["lovelace"]["dashboards"][DASHBOARD_URL_PATH]
    assert dashboard["mode"] == "yaml"
    assert (folder / dashboard["filename"]).is_file()
    package = config["homeassistant"]["packages"]["peergrid"]
    assert package["input_select"]["peergrid_sender"]["options"] == ["NODE_A", "NODE_B"]
    assert (folder / "custom_components" / "peergrid").resolve() == INTEGRATION_SOURCE


def test_config_entries(prepared: tuple[Path, str]) -> None:
    """One entry per node with its address and key, the gateway, the grid and Backup."""
    folder, _token = prepared
    entries = {
        entry["title"]: entry for entry in _storage(folder, "core.config_entries")["entries"]
    }

    assert set(entries) == {"NODE_A", "NODE_B", "garage-gateway", "PeerGrid grid", "Backup"}
    assert entries["NODE_A"]["data"] == {
        "kind": "node",
        "host": "127.0.0.1",
        "port": 40001,
        "key": "a" * 32,
    }
    assert entries["NODE_A"]["unique_id"] == "NODE_A"
    assert entries["garage-gateway"]["data"] == {"kind": "gateway", "device_id": "garage-gateway"}
    assert entries["garage-gateway"]["unique_id"] == "gateway:garage-gateway"
    assert entries["PeerGrid grid"]["data"] == {"kind": "grid"}
    assert entries["PeerGrid grid"]["unique_id"] == "grid"
    assert {entry["domain"] for entry in entries.values()} == {"peergrid", "backup"}


def test_onboarding_and_energy(prepared: tuple[Path, str]) -> None:
    """Onboarding is done; the Energy dashboard has each node as a battery."""
    folder, _token = prepared

    assert set(_storage(folder, "onboarding")["done"]) == {
        "user",
        "core_config",
        "analytics",
        "integration",
    }
    assert _storage(folder, "energy") == energy_preferences(["NODE_A", "NODE_B"])
    assert energy_preferences(["NODE_A"])["energy_sources"] == [
        {
            "type": "battery",
            "stat_energy_from": "sensor.node_a_energy_supplied",
            "stat_energy_to": "sensor.node_a_energy_received",
        }
    ]


def test_demo_user_and_gateway_token(prepared: tuple[Path, str]) -> None:
    """An administrator who logs in with the password, and a long-lived token of theirs."""
    folder, token = prepared
    auth = _storage(folder, "auth")
    provider = _storage(folder, "auth_provider.homeassistant")

    (user,) = [user for user in auth["users"] if not user["system_generated"]]
    assert user["name"] == "Demo"
    assert user["is_owner"]
    assert user["group_ids"] == ["system-admin"]
    (credential,) = auth["credentials"]
    assert credential["user_id"] == user["id"]
    assert credential["data"] == {"username": "demo"}
    (login,) = provider["users"]
    assert login["username"] == "demo"
    assert bcrypt.checkpw(PASSWORD.encode(), base64.b64decode(login["password"]))

    issuer = jwt.decode(token, options={"verify_signature": False})["iss"]
    (refresh,) = [item for item in auth["refresh_tokens"] if item["id"] == issuer]
    assert refresh["user_id"] == user["id"]
    assert refresh["token_type"] == "long_lived_access_token"
    jwt.decode(token, refresh["jwt_key"], algorithms=["HS256"])
