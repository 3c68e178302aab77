"""The demo's Home Assistant configuration folder, prepared before Home Assistant starts.

Everything a person would otherwise click through is written here, with Home
Assistant's own APIs where it has them:

* ``configuration.yaml``: only the integrations the demo needs (no
  ``default_config``, which pulls in discovery and cloud services), HTTP on
  127.0.0.1, the recorder on SQLite, the PeerGrid dashboard and its package;
* the demo user, created through Home Assistant's auth manager and its
  ``homeassistant`` auth provider exactly as onboarding creates the owner, plus
  a long-lived access token for the edge gateway;
* ``.storage/onboarding`` with every step done;
* ``.storage/core.config_entries`` with a PeerGrid entry per node, one for the
  gateway, and the entries a first start creates by itself (the PeerGrid grid,
  Backup), as after that first start: Home Assistant announces every such
  ``system`` flow as "New devices discovered", which would greet the demo's
  user for devices the demo configured itself;
* ``.storage/energy``: each node's battery in the Energy dashboard;
* ``custom_components/peergrid``: a link to the repository's integration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

from homeassistant.auth import auth_manager_from_config
from homeassistant.auth.const import GROUP_ID_ADMIN
from homeassistant.auth.models import TOKEN_TYPE_LONG_LIVED_ACCESS_TOKEN
from homeassistant.auth.providers.homeassistant import HassAuthProvider
from homeassistant.components.onboarding.const import STEPS as ONBOARDING_STEPS
from homeassistant.config_entries import (
    SOURCE_SYSTEM,
    SOURCE_USER,
    SOURCE_ZEROCONF,
    STORAGE_KEY as CONFIG_ENTRIES_KEY,
    STORAGE_VERSION as CONFIG_ENTRIES_VERSION,
    STORAGE_VERSION_MINOR as CONFIG_ENTRIES_MINOR_VERSION,
    ConfigEntry,
)
from homeassistant.const import CONF_HOST, CONF_PORT
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr, entity_registry as er
from homeassistant.helpers.storage import Store

from custom_components.peergrid.const import (
    CONF_DEVICE_ID,
    CONF_KEY,
    CONF_KIND,
    DOMAIN,
    GRID_UNIQUE_ID,
    EntryKind,
    gateway_unique_id,
)

from .dashboard import (
    DASHBOARD_FILE,
    DASHBOARD_TITLE,
    DASHBOARD_URL_PATH,
    Layout,
    dashboard,
    node_entity,
    package,
    render,
)

__all__ = [
    "INTEGRATION_SOURCE",
    "DemoNode",
    "HomeAssistantSetup",
    "energy_preferences",
    "prepare_config_dir",
]

INTEGRATION_SOURCE: Final = Path(__file__).resolve().parents[1] / "custom_components" / DOMAIN
"""The repository's integration, which the configuration folder links to."""

_ONBOARDING_KEY: Final = "onboarding"
_ONBOARDING_VERSION: Final = 4
_ENERGY_KEY: Final = "energy"
_ENERGY_VERSION: Final = 1
_GATEWAY_TOKEN_LIFETIME: Final = timedelta(days=3650)
DEMO_HISTORY_HOURS: Final = 0.25
"""The demo's history graphs show the last quarter of an hour: a fresh demo has no more."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DemoNode:
    """A node Home Assistant reaches directly: where it listens and its key."""

    uid: str
    host: str
    port: int
    key: str


@dataclass(frozen=True, kw_only=True, slots=True)
class HomeAssistantSetup:
    """What the configuration folder is prepared for."""

    config_dir: Path
    port: int
    username: str
    password: str
    display_name: str
    nodes: tuple[DemoNode, ...]
    gateway_device_id: str | None = None
    gateway_nodes: tuple[str, ...] = ()

    @property
    def layout(self) -> Layout:
        """The dashboard's nodes."""
        return Layout(
            nodes=tuple(node.uid for node in self.nodes),
            gateway_nodes=self.gateway_nodes,
            history_hours=DEMO_HISTORY_HOURS,
        )


def _configuration_yaml(setup: HomeAssistantSetup) -> str:
    """``configuration.yaml``: the integrations the demo uses, and nothing that reaches out."""
    return f"""\
# The PeerGrid demo's Home Assistant (written by `python -m demo`, re-created each run).
# No default_config: it would start discovery, cloud and other network services.
homeassistant:
  name: PeerGrid demo
  latitude: 52.52
  longitude: 13.405
  elevation: 34
  unit_system: metric
  currency: EUR
  country: DE
  time_zone: UTC
  internal_url: http://127.0.0.1:{setup.port}
  packages:
    peergrid: !include packages/peergrid.yaml

http:
  server_host: 127.0.0.1
  server_port: {setup.port}

frontend:
api:
config:
history:
logbook:
energy:

recorder:
  # SQLite in this folder (home-assistant_v2.db).
  commit_interval: 2
  purge_keep_days: 2

lovelace:
  mode: storage
  dashboards:
    {DASHBOARD_URL_PATH}:
      mode: yaml
      filename: dashboards/{DASHBOARD_FILE}
      title: {DASHBOARD_TITLE}
      icon: mdi:battery-sync
      show_in_sidebar: true
      require_admin: false

logger:
  default: warning
  logs:
    custom_components.peergrid: info
"""


def energy_preferences(nodes: Sequence[str]) -> dict[str, Any]:
    """Energy dashboard preferences: each node's cell as a home battery.

    *Energy supplied* is what came out of the cell, *Energy received* what
    went in: the Energy dashboard's "energy coming out of the battery" and
    "energy going in to the battery".
    """
    return {
        "energy_sources": [
            {
                "type": "battery",
                "stat_energy_from": node_entity("sensor", uid, "Energy supplied"),
                "stat_energy_to": node_entity("sensor", uid, "Energy received"),
            }
            for uid in nodes
        ],
        "device_consumption": [],
    }


def _entry(
    domain: str, title: str, unique_id: str | None, data: dict[str, Any], source: str
) -> ConfigEntry:
    return ConfigEntry(
        domain=domain,
        title=title,
        unique_id=unique_id,
        data=data,
        options={},
        source=source,
        version=1,
        minor_version=1,
        discovery_keys={},  # type: ignore[arg-type]  # stored as a plain mapping
        subentries_data=None,
    )


def _config_entries(setup: HomeAssistantSetup) -> list[dict[str, Any]]:
    """The config entries, as Home Assistant stores them."""
    entries = [
        _entry(
            DOMAIN,
            node.uid,
            node.uid,
            {
                CONF_KIND: EntryKind.NODE.value,
                CONF_HOST: node.host,
                CONF_PORT: node.port,
                CONF_KEY: node.key,
            },
            SOURCE_USER,
        )
        for node in setup.nodes
    ]
    if setup.gateway_device_id is not None:
        # What a gateway found on the network would have.
        entries.append(
            _entry(
                DOMAIN,
                setup.gateway_device_id,
                gateway_unique_id(setup.gateway_device_id),
                {CONF_KIND: EntryKind.GATEWAY.value, CONF_DEVICE_ID: setup.gateway_device_id},
                SOURCE_ZEROCONF,
            )
        )
    # As the integration creates it with the first node (default thresholds).
    entries.append(
        _entry(
            DOMAIN,
            "PeerGrid grid",
            GRID_UNIQUE_ID,
            {CONF_KIND: EntryKind.GRID.value},
            SOURCE_SYSTEM,
        )
    )
    entries.append(_entry("backup", "Backup", None, {}, SOURCE_SYSTEM))
    return [entry.as_dict() for entry in entries]


async def _async_write_storage(setup: HomeAssistantSetup) -> str:
    """Create the demo user and the ``.storage`` files; return the gateway's token.

    Runs a bare :class:`HomeAssistant` (no integrations, no HTTP) the way
    Home Assistant's own ``--script auth`` does, so the auth files have
    exactly the format Home Assistant writes.
    """
    hass = HomeAssistant(str(setup.config_dir))
    await asyncio.gather(dr.async_load(hass), er.async_load(hass))
    hass.auth = await auth_manager_from_config(hass, [{"type": "homeassistant"}], [])
    provider = hass.auth.auth_providers[0]
    assert isinstance(provider, HassAuthProvider)  # noqa: S101 - configured just above
    await provider.async_initialize()
    # As onboarding creates the owner: an administrator with a username and password.
    user = await hass.auth.async_create_user(setup.display_name, group_ids=[GROUP_ID_ADMIN])
    await provider.async_add_auth(setup.username, setup.password)
    credentials = await provider.async_get_or_create_credentials({"username": setup.username})
    await hass.auth.async_link_user(user, credentials)
    refresh_token = await hass.auth.async_create_refresh_token(
        user,
        client_name="PeerGrid edge gateway (demo)",
        token_type=TOKEN_TYPE_LONG_LIVED_ACCESS_TOKEN,
        access_token_expiration=_GATEWAY_TOKEN_LIFETIME,
    )
    token = hass.auth.async_create_access_token(refresh_token)

    await Store[dict[str, Any]](
        hass, _ONBOARDING_VERSION, _ONBOARDING_KEY, private=True
    ).async_save({"done": list(ONBOARDING_STEPS)})
    await Store[dict[str, Any]](
        hass,
        CONFIG_ENTRIES_VERSION,
        CONFIG_ENTRIES_KEY,
        minor_version=CONFIG_ENTRIES_MINOR_VERSION,
    ).async_save({"entries": _config_entries(setup)})
    await Store[dict[str, Any]](hass, _ENERGY_VERSION, _ENERGY_KEY).async_save(
        energy_preferences([node.uid for node in setup.nodes])
    )
    # The auth manager saves with a delay; the stop's final-write stage writes
    # it out. This core never ran, so the stop has to be forced.
    await hass.async_stop(force=True)
    return token


async def prepare_config_dir(setup: HomeAssistantSetup) -> str:
    """Fill ``setup.config_dir`` (which must be empty); return the gateway's access token."""
    config_dir = setup.config_dir
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "configuration.yaml").write_text(_configuration_yaml(setup), encoding="utf-8")
    for folder, name, content in (
        ("dashboards", DASHBOARD_FILE, render(dashboard(setup.layout))),
        ("packages", "peergrid.yaml", render(package(setup.layout))),
    ):
        (config_dir / folder).mkdir(exist_ok=True)
        (config_dir / folder / name).write_text(content, encoding="utf-8")
    custom = config_dir / "custom_components"
    custom.mkdir(exist_ok=True)
    (custom / DOMAIN).symlink_to(INTEGRATION_SOURCE, target_is_directory=True)
    # Home Assistant's core takes over the loop it runs on (executors, stop
    # stages): it gets a loop of its own in a worker thread, away from the
    # demo's loop that runs the nodes.
    return await asyncio.to_thread(asyncio.run, _async_write_storage(setup))
