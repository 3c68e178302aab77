"""The PeerGrid config flow against simulated nodes over real loopback TCP.

Every connection test in the flow really connects and authenticates: the
nodes are the firmware in the simulator (``peergrid_core.sim``), and the
devices that are not nodes (or speak another protocol version) are small TCP
servers. The one patch is the validation call raising a bare ``Exception``,
which no real device can provoke. DHCP discovery probes the default port
7420, so the discovery tests run their node or impostor on 127.0.0.1:7420.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
import contextlib
from ipaddress import ip_address
import socket
from typing import Any
from unittest.mock import AsyncMock, patch

from homeassistant.config_entries import SOURCE_DHCP, SOURCE_SYSTEM, SOURCE_USER, SOURCE_ZEROCONF
from homeassistant.const import CONF_HOST, CONF_PORT
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers.service_info.dhcp import DhcpServiceInfo
from homeassistant.helpers.service_info.zeroconf import ZeroconfServiceInfo
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.peergrid.config_flow import PeerGridConfigFlow
from custom_components.peergrid.const import CONF_DEVICE_ID, CONF_KEY, CONF_KIND, DOMAIN, EntryKind
from custom_components.peergrid.iot_hub import DATA_IOT_HUB, IotHub
from custom_components.peergrid.peergrid_core.payloads import HeartbeatPing
from custom_components.peergrid.peergrid_core.protocol import DEFAULT_PORT
from custom_components.peergrid.peergrid_core.thresholds import BalanceThresholds
from peergrid_core.sim import NodeSpec, SimulatedGrid

from .conftest import KEY_A, KEY_B
from .helpers import PROTO_2_HELLO, fake_device, node_entry

pytestmark = pytest.mark.usefixtures("socket_enabled", "mock_setup_entry")

KEY_D = "node-d-key-0123456789abcdef"
WRONG_KEY = "not-the-node-key-0123456789"
SHORT_KEY = "too-short"
LOOPBACK = "127.0.0.1"

NOT_A_NODE = b"SSH-2.0-OpenSSH_9.6\r\n"


@pytest.fixture
def mock_setup_entry() -> Generator[AsyncMock]:
    """Keep entries created or reloaded by a flow from connecting for real."""
    with patch("custom_components.peergrid.async_setup_entry", return_value=True) as setup:
        yield setup


@pytest.fixture
async def default_port_grid() -> AsyncIterator[SimulatedGrid]:
    """NODE_D listening on the protocol's default port, where DHCP discovery looks."""
    grid = SimulatedGrid([NodeSpec(uid="NODE_D", key=KEY_D, port=DEFAULT_PORT)], seed=11)
    async with grid:
        yield grid


def _closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
    return port


def _dhcp(ip: str = LOOPBACK) -> DhcpServiceInfo:
    return DhcpServiceInfo(ip=ip, hostname="peergrid-node-d", macaddress="246f28a1b2c3")


def _node_input(grid: SimulatedGrid, uid: str = "NODE_A", key: str = KEY_A) -> dict[str, Any]:
    node = grid.nodes[uid]
    return {CONF_HOST: node.host, CONF_PORT: node.port, CONF_KEY: key}


@contextlib.asynccontextmanager
async def _failing_input(case: str, grid: SimulatedGrid) -> AsyncIterator[dict[str, Any]]:
    """Host, port and key that make the connection test fail as ``case`` says."""
    good = _node_input(grid)
    match case:
        case "cannot_connect":
            yield good | {CONF_PORT: _closed_port()}
        case "invalid_auth":
            yield good | {CONF_KEY: WRONG_KEY}
        case "invalid_key":
            yield good | {CONF_KEY: SHORT_KEY}
        case "unsupported_protocol":
            async with fake_device(PROTO_2_HELLO) as port:
                yield good | {CONF_PORT: port}
        case "not_peergrid_node":
            async with fake_device(NOT_A_NODE) as port:
                yield good | {CONF_PORT: port}


FAILURES = [
    pytest.param("cannot_connect", {"base": "cannot_connect"}, id="cannot_connect"),
    pytest.param("invalid_auth", {CONF_KEY: "invalid_auth"}, id="invalid_auth"),
    pytest.param("invalid_key", {CONF_KEY: "invalid_key"}, id="invalid_key"),
    pytest.param("unsupported_protocol", {"base": "unsupported_protocol"}, id="unsupported"),
    pytest.param("not_peergrid_node", {"base": "not_peergrid_node"}, id="not_peergrid_node"),
]


def _entry(
    grid: SimulatedGrid, uid: str = "NODE_A", data: dict[str, Any] | None = None
) -> MockConfigEntry:
    """A node entry for ``uid`` of ``grid``; ``data`` overrides its host, port or key."""
    return node_entry(grid, uid, **(data or {}))


async def _start_node_flow(hass: HomeAssistant) -> Any:
    """Open the add menu and choose a node: the node form."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.MENU
    return await hass.config_entries.flow.async_configure(
        result["flow_id"], {"next_step_id": "node"}
    )


def _suggested(result: Any, field: str) -> Any:
    """The value a form pre-fills for ``field``."""
    for key in result["data_schema"].schema:
        if key == field:
            return (key.description or {}).get("suggested_value")
    raise AssertionError(f"{field} is not in the form")


# ----------------------------------------------------------------- user step


async def test_user_flow_adds_the_node(
    hass: HomeAssistant, sim_grid: SimulatedGrid, mock_setup_entry: AsyncMock
) -> None:
    """Host, port and key that authenticate create an entry named after the node's uid."""
    result = await _start_node_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "node"
    assert result["errors"] == {}

    node = sim_grid.nodes["NODE_A"]
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_HOST: f" {node.host} ", CONF_PORT: node.port, CONF_KEY: KEY_A}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "NODE_A"
    assert result["data"] == {
        CONF_KIND: "node",
        CONF_HOST: node.host,
        CONF_PORT: node.port,
        CONF_KEY: KEY_A,
    }
    assert not result["options"]
    entry = result["result"]
    assert entry.unique_id == "NODE_A"
    assert entry.version == 1
    assert entry.minor_version == 1
    assert len(mock_setup_entry.mock_calls) == 1


async def test_user_form_defaults_to_the_protocol_port(hass: HomeAssistant) -> None:
    """The port field starts at 7420 and the key is a password field."""
    result = await _start_node_flow(hass)
    schema = result["data_schema"]
    assert schema({CONF_HOST: "node.local", CONF_KEY: KEY_A})[CONF_PORT] == DEFAULT_PORT
    key_selector = next(v for k, v in schema.schema.items() if k == CONF_KEY)
    assert key_selector.config["type"] == "password"


@pytest.mark.parametrize(("case", "errors"), FAILURES)
async def test_user_flow_errors_then_recovery(
    hass: HomeAssistant, sim_grid: SimulatedGrid, case: str, errors: dict[str, str]
) -> None:
    """Each failure shows its error on the form, keeps the input, and the user can fix it."""
    result = await _start_node_flow(hass)
    async with _failing_input(case, sim_grid) as user_input:
        result = await hass.config_entries.flow.async_configure(result["flow_id"], user_input)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "node"
    assert result["errors"] == errors
    assert _suggested(result, CONF_PORT) == user_input[CONF_PORT]
    assert not hass.config_entries.async_entries(DOMAIN)

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], _node_input(sim_grid)
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["result"].unique_id == "NODE_A"


async def test_user_flow_unknown_error_then_recovery(
    hass: HomeAssistant, sim_grid: SimulatedGrid, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected exception is logged with its traceback and shown as 'unknown'."""
    result = await _start_node_flow(hass)
    with patch(
        "custom_components.peergrid.config_flow.validate_node",
        side_effect=Exception("boom"),
    ):
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], _node_input(sim_grid)
        )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "unknown"}
    assert "Unexpected error while checking PeerGrid node" in caplog.text
    assert "boom" in caplog.text

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], _node_input(sim_grid)
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_user_flow_aborts_for_a_configured_node(
    hass: HomeAssistant, sim_grid: SimulatedGrid
) -> None:
    """The same node twice is refused, and the existing entry is left as it was."""
    entry = _entry(sim_grid, data={CONF_HOST: "peergrid-node-a.local"})
    entry.add_to_hass(hass)
    before = dict(entry.data)

    result = await _start_node_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], _node_input(sim_grid)
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert dict(entry.data) == before


async def test_user_flow_wins_over_a_pending_discovery(
    hass: HomeAssistant, default_port_grid: SimulatedGrid
) -> None:
    """Adding a node by hand while its discovery waits finishes, and ends the discovery."""
    discovery = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_DHCP}, data=_dhcp()
    )
    assert discovery["step_id"] == "discovery_confirm"

    result = await _start_node_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], _node_input(default_port_grid, "NODE_D", KEY_D)
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["result"].unique_id == "NODE_D"
    assert not hass.config_entries.flow.async_progress_by_handler(DOMAIN)


# ----------------------------------------------------------------- DHCP discovery


async def test_dhcp_discovers_a_new_node(
    hass: HomeAssistant, default_port_grid: SimulatedGrid
) -> None:
    """The hello names the node; the user confirms with its key and the node is added."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_DHCP}, data=_dhcp()
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "discovery_confirm"
    assert result["errors"] == {}
    assert result["description_placeholders"] == {"name": "NODE_D", "host": LOOPBACK}
    (progress,) = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert progress["context"]["title_placeholders"] == {"name": "NODE_D", "host": LOOPBACK}
    assert progress["context"]["unique_id"] == "NODE_D"

    result = await hass.config_entries.flow.async_configure(result["flow_id"], {CONF_KEY: KEY_D})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "NODE_D"
    assert result["data"] == {
        CONF_KIND: "node",
        CONF_HOST: LOOPBACK,
        CONF_PORT: DEFAULT_PORT,
        CONF_KEY: KEY_D,
    }
    assert result["result"].unique_id == "NODE_D"


@pytest.mark.parametrize(
    ("key", "errors"),
    [
        pytest.param(WRONG_KEY, {CONF_KEY: "invalid_auth"}, id="invalid_auth"),
        pytest.param(SHORT_KEY, {CONF_KEY: "invalid_key"}, id="invalid_key"),
    ],
)
async def test_dhcp_confirm_key_errors_then_recovery(
    hass: HomeAssistant, default_port_grid: SimulatedGrid, key: str, errors: dict[str, str]
) -> None:
    """A wrong or malformed key is shown on the confirm form; the right one adds the node."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_DHCP}, data=_dhcp()
    )
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {CONF_KEY: key})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "discovery_confirm"
    assert result["errors"] == errors

    result = await hass.config_entries.flow.async_configure(result["flow_id"], {CONF_KEY: KEY_D})
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_dhcp_confirm_while_the_node_is_away_then_recovery(
    hass: HomeAssistant, default_port_grid: SimulatedGrid
) -> None:
    """A node that went offline after discovery: cannot_connect, then it comes back."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_DHCP}, data=_dhcp()
    )
    await default_port_grid.stop_node("NODE_D")
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {CONF_KEY: KEY_D})
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "cannot_connect"}

    await default_port_grid.start_node("NODE_D")
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {CONF_KEY: KEY_D})
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_dhcp_confirm_aborts_when_another_node_took_the_address(
    hass: HomeAssistant, default_port_grid: SimulatedGrid
) -> None:
    """The key is checked against whatever answers now; a different node is not added."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_DHCP}, data=_dhcp()
    )
    await default_port_grid.stop()
    newcomer = SimulatedGrid([NodeSpec(uid="NODE_E", key=KEY_D, port=DEFAULT_PORT)], seed=12)
    async with newcomer:
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], {CONF_KEY: KEY_D}
        )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "unique_id_mismatch"
    assert result["description_placeholders"] == {"uid": "NODE_E"}
    assert not hass.config_entries.async_entries(DOMAIN)


async def test_dhcp_updates_the_address_of_a_known_node(
    hass: HomeAssistant, default_port_grid: SimulatedGrid
) -> None:
    """A configured node seen at a new address gets that address; nothing else changes."""
    entry = _entry(default_port_grid, "NODE_D", {CONF_HOST: "192.0.2.40", CONF_PORT: 7421})
    entry.add_to_hass(hass)

    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_DHCP}, data=_dhcp()
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert entry.data == {
        CONF_KIND: EntryKind.NODE,
        CONF_HOST: LOOPBACK,
        CONF_PORT: DEFAULT_PORT,
        CONF_KEY: KEY_D,
    }


async def test_dhcp_of_a_node_already_being_discovered(
    hass: HomeAssistant, default_port_grid: SimulatedGrid
) -> None:
    """A second DHCP sighting of a node waiting for its key does not start another flow."""
    first = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_DHCP}, data=_dhcp()
    )
    assert first["type"] is FlowResultType.FORM
    second = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_DHCP}, data=_dhcp()
    )
    assert second["type"] is FlowResultType.ABORT
    assert second["reason"] == "already_in_progress"


@pytest.mark.parametrize(
    ("first_line", "reason"),
    [
        pytest.param(NOT_A_NODE, "not_peergrid_node", id="not_peergrid_node"),
        pytest.param(PROTO_2_HELLO, "unsupported_protocol", id="unsupported_protocol"),
    ],
)
async def test_dhcp_of_a_device_that_cannot_be_added(
    hass: HomeAssistant, first_line: bytes, reason: str
) -> None:
    """A device named like a node that is none, or speaks another version, is left alone."""
    async with fake_device(first_line, DEFAULT_PORT):
        result = await hass.config_entries.flow.async_init(
            DOMAIN, context={"source": SOURCE_DHCP}, data=_dhcp()
        )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == reason


async def test_dhcp_of_an_unreachablefake_device(hass: HomeAssistant) -> None:
    """Nothing answers on the node port: the discovery ends quietly."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_DHCP}, data=_dhcp()
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "cannot_connect"


# ----------------------------------------------------------------- reauthentication


async def test_reauth_stores_the_new_key(
    hass: HomeAssistant, sim_grid: SimulatedGrid, mock_setup_entry: AsyncMock
) -> None:
    """The node's current key replaces the stale one and the entry is reloaded."""
    entry = _entry(sim_grid, data={CONF_KEY: "the-old-key-0123456789"})
    entry.add_to_hass(hass)

    result = await entry.start_reauth_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reauth_confirm"
    assert result["description_placeholders"] == {"name": "NODE_A"}

    result = await hass.config_entries.flow.async_configure(result["flow_id"], {CONF_KEY: KEY_A})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    node = sim_grid.nodes["NODE_A"]
    assert entry.data == {
        CONF_KIND: EntryKind.NODE,
        CONF_HOST: node.host,
        CONF_PORT: node.port,
        CONF_KEY: KEY_A,
    }
    await hass.async_block_till_done()
    assert len(mock_setup_entry.mock_calls) == 1


@pytest.mark.parametrize(
    ("key", "errors"),
    [
        pytest.param(WRONG_KEY, {CONF_KEY: "invalid_auth"}, id="invalid_auth"),
        pytest.param(SHORT_KEY, {CONF_KEY: "invalid_key"}, id="invalid_key"),
    ],
)
async def test_reauth_key_errors_then_recovery(
    hass: HomeAssistant, sim_grid: SimulatedGrid, key: str, errors: dict[str, str]
) -> None:
    """A key the node refuses, or of the wrong length, is shown; the right one is stored."""
    entry = _entry(sim_grid, data={CONF_KEY: "the-old-key-0123456789"})
    entry.add_to_hass(hass)

    result = await entry.start_reauth_flow(hass)
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {CONF_KEY: key})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reauth_confirm"
    assert result["errors"] == errors
    assert entry.data[CONF_KEY] == "the-old-key-0123456789"

    result = await hass.config_entries.flow.async_configure(result["flow_id"], {CONF_KEY: KEY_A})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    assert entry.data[CONF_KEY] == KEY_A


async def test_reauth_while_the_node_is_away_then_recovery(
    hass: HomeAssistant, sim_grid: SimulatedGrid
) -> None:
    """An offline node: cannot_connect; once it is back the key is checked and stored."""
    entry = _entry(sim_grid, data={CONF_KEY: "the-old-key-0123456789"})
    entry.add_to_hass(hass)
    result = await entry.start_reauth_flow(hass)

    await sim_grid.stop_node("NODE_A")
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {CONF_KEY: KEY_A})
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "cannot_connect"}

    await sim_grid.start_node("NODE_A")
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {CONF_KEY: KEY_A})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"


async def test_reauth_aborts_when_the_address_is_another_node(
    hass: HomeAssistant, sim_grid: SimulatedGrid
) -> None:
    """NODE_A's entry now reaches NODE_B: its key is not stored for NODE_A."""
    node_b = sim_grid.nodes["NODE_B"]
    entry = _entry(sim_grid, data={CONF_HOST: node_b.host, CONF_PORT: node_b.port})
    entry.add_to_hass(hass)
    before = dict(entry.data)

    result = await entry.start_reauth_flow(hass)
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {CONF_KEY: KEY_B})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "unique_id_mismatch"
    assert result["description_placeholders"] == {"uid": "NODE_B"}
    assert dict(entry.data) == before


# ----------------------------------------------------------------- reconfiguration


async def test_reconfigure_changes_address_and_key(
    hass: HomeAssistant, sim_grid: SimulatedGrid, mock_setup_entry: AsyncMock
) -> None:
    """The form starts from the entry; a new address and key that work are stored."""
    entry = _entry(
        sim_grid, data={CONF_HOST: "192.0.2.7", CONF_PORT: 7500, CONF_KEY: "the-old-key-0123456789"}
    )
    entry.add_to_hass(hass)

    result = await entry.start_reconfigure_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure"
    assert result["description_placeholders"] == {"name": "NODE_A"}
    assert _suggested(result, CONF_HOST) == "192.0.2.7"
    assert _suggested(result, CONF_PORT) == 7500

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], _node_input(sim_grid)
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert entry.data == {CONF_KIND: EntryKind.NODE, **_node_input(sim_grid)}
    assert entry.title == "NODE_A"
    await hass.async_block_till_done()
    assert len(mock_setup_entry.mock_calls) == 1


@pytest.mark.parametrize(("case", "errors"), FAILURES)
async def test_reconfigure_errors_then_recovery(
    hass: HomeAssistant, sim_grid: SimulatedGrid, case: str, errors: dict[str, str]
) -> None:
    """Each failure is shown with the user's input kept; the entry changes only on success."""
    entry = _entry(sim_grid, data={CONF_HOST: "192.0.2.7"})
    entry.add_to_hass(hass)
    before = dict(entry.data)

    result = await entry.start_reconfigure_flow(hass)
    async with _failing_input(case, sim_grid) as user_input:
        result = await hass.config_entries.flow.async_configure(result["flow_id"], user_input)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure"
    assert result["errors"] == errors
    assert _suggested(result, CONF_PORT) == user_input[CONF_PORT]
    assert dict(entry.data) == before

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], _node_input(sim_grid)
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert entry.data[CONF_HOST] == sim_grid.nodes["NODE_A"].host


async def test_reconfigure_aborts_for_another_node(
    hass: HomeAssistant, sim_grid: SimulatedGrid
) -> None:
    """Pointing NODE_A's entry at NODE_B is refused and changes nothing."""
    entry = _entry(sim_grid)
    entry.add_to_hass(hass)
    before = dict(entry.data)

    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], _node_input(sim_grid, "NODE_B", KEY_B)
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "unique_id_mismatch"
    assert result["description_placeholders"] == {"uid": "NODE_B"}
    assert dict(entry.data) == before


# ----------------------------------------------------------------- zeroconf (gateways)

GATEWAY = "rpi-4b-prod-01"


def _zeroconf(properties: dict[str, Any]) -> ZeroconfServiceInfo:
    """The announcement an edge gateway makes (edge/advertise.py), with ``properties``."""
    return ZeroconfServiceInfo(
        ip_address=ip_address("192.0.2.50"),
        ip_addresses=[ip_address("192.0.2.50")],
        port=0,
        hostname=f"peergrid-{GATEWAY}.local.",
        type="_peergrid._tcp.local.",
        name=f"{GATEWAY}._peergrid._tcp.local.",
        properties=properties,
    )


async def test_zeroconf_discovers_a_gateway(
    hass: HomeAssistant, mock_setup_entry: AsyncMock
) -> None:
    """A gateway's announcement is confirmed by the user and becomes a gateway entry."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN,
        context={"source": SOURCE_ZEROCONF},
        data=_zeroconf({"device_id": GATEWAY, "version": "0.3.0"}),
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "zeroconf_confirm"
    assert result["description_placeholders"] == {"name": GATEWAY}
    (progress,) = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert progress["context"]["title_placeholders"] == {"name": GATEWAY}
    assert progress["context"]["unique_id"] == f"gateway:{GATEWAY}"

    result = await hass.config_entries.flow.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == GATEWAY
    assert result["data"] == {CONF_KIND: "gateway", CONF_DEVICE_ID: GATEWAY}
    assert result["result"].unique_id == f"gateway:{GATEWAY}"
    assert len(mock_setup_entry.mock_calls) == 1


async def test_zeroconf_of_a_configured_gateway(hass: HomeAssistant) -> None:
    """A gateway that already has its entry is not offered again."""
    MockConfigEntry(
        domain=DOMAIN,
        title=GATEWAY,
        unique_id=f"gateway:{GATEWAY}",
        data={CONF_KIND: EntryKind.GATEWAY, CONF_DEVICE_ID: GATEWAY},
    ).add_to_hass(hass)
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=_zeroconf({"device_id": GATEWAY})
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


async def test_zeroconf_gateway_named_like_a_node_is_its_own_entry(hass: HomeAssistant) -> None:
    """A gateway whose device id equals a configured node's uid is still offered."""
    MockConfigEntry(
        domain=DOMAIN, title=GATEWAY, unique_id=GATEWAY, data={CONF_KIND: EntryKind.NODE}
    ).add_to_hass(hass)
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=_zeroconf({"device_id": GATEWAY})
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "zeroconf_confirm"


@pytest.mark.parametrize(
    "properties",
    [
        pytest.param({"version": "0.3.0"}, id="missing"),
        pytest.param({"device_id": ""}, id="empty"),
        pytest.param({"device_id": "rpi 4b/prod"}, id="bad_characters"),
        pytest.param({"device_id": "x" * 65}, id="too_long"),
    ],
)
async def test_zeroconf_without_a_valid_device_id(
    hass: HomeAssistant, properties: dict[str, Any]
) -> None:
    """A service without a valid device id in its TXT record is no gateway: nothing is offered."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=_zeroconf(properties)
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "not_peergrid_gateway"
    assert not hass.config_entries.flow.async_progress_by_handler(DOMAIN)


# ----------------------------------------------------------------- gateways added and changed by hand


def _gateway_entry(device_id: str = GATEWAY, title: str | None = None) -> MockConfigEntry:
    return MockConfigEntry(
        domain=DOMAIN,
        title=title or device_id,
        unique_id=f"gateway:{device_id}",
        data={CONF_KIND: EntryKind.GATEWAY, CONF_DEVICE_ID: device_id},
    )


async def _start_gateway_flow(hass: HomeAssistant) -> Any:
    """Open the add menu and choose a gateway: the device id form."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.MENU
    return await hass.config_entries.flow.async_configure(
        result["flow_id"], {"next_step_id": "gateway"}
    )


def _offered(result: Any) -> list[str]:
    """The device ids the gateway form offers."""
    selector = next(v for k, v in result["data_schema"].schema.items() if k == CONF_DEVICE_ID)
    assert selector.config["custom_value"] is True
    return list(selector.config["options"])


async def test_user_menu_offers_nodes_gateways_and_the_ledger(hass: HomeAssistant) -> None:
    """The user step asks what to add."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.MENU
    assert result["step_id"] == "user"
    assert result["menu_options"] == ["node", "gateway", "ledger"]


async def test_manual_gateway_flow_adds_the_gateway(
    hass: HomeAssistant, mock_setup_entry: AsyncMock
) -> None:
    """A valid device id, blanks around it ignored, becomes a gateway entry."""
    result = await _start_gateway_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "gateway"
    assert result["errors"] == {}
    assert _offered(result) == []

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_DEVICE_ID: f" {GATEWAY} "}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == GATEWAY
    assert result["data"] == {CONF_KIND: "gateway", CONF_DEVICE_ID: GATEWAY}
    assert result["result"].unique_id == f"gateway:{GATEWAY}"
    assert len(mock_setup_entry.mock_calls) == 1


async def test_manual_gateway_form_offers_the_gateways_heard_from(hass: HomeAssistant) -> None:
    """Gateways that pinged Home Assistant and have no entry yet are offered by their ids."""
    hub = IotHub(hass)
    hass.data[DATA_IOT_HUB] = hub
    for device_id in ("rpi-b", GATEWAY, "rpi-a"):
        hub.async_record_ping(HeartbeatPing(device_id=device_id, status="heartbeat"))
    _gateway_entry().add_to_hass(hass)

    result = await _start_gateway_flow(hass)
    assert _offered(result) == ["rpi-a", "rpi-b"]


@pytest.mark.parametrize("device_id", ["", "rpi 4b/prod", "-rpi", "x" * 65])
async def test_manual_gateway_invalid_device_id_then_recovery(
    hass: HomeAssistant, device_id: str
) -> None:
    """A device id the gateway could not have is refused at the field; the input stays."""
    result = await _start_gateway_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_DEVICE_ID: device_id}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "gateway"
    assert result["errors"] == {CONF_DEVICE_ID: "invalid_device_id"}
    assert _suggested(result, CONF_DEVICE_ID) == device_id
    assert not hass.config_entries.async_entries(DOMAIN)

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_DEVICE_ID: GATEWAY}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_manual_gateway_already_configured(hass: HomeAssistant) -> None:
    """The same gateway twice is refused."""
    _gateway_entry().add_to_hass(hass)
    result = await _start_gateway_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_DEVICE_ID: GATEWAY}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


async def test_manual_gateway_wins_over_a_pending_discovery(hass: HomeAssistant) -> None:
    """Adding a gateway by hand while its discovery waits finishes, and ends the discovery."""
    discovery = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=_zeroconf({"device_id": GATEWAY})
    )
    assert discovery["step_id"] == "zeroconf_confirm"

    result = await _start_gateway_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_DEVICE_ID: GATEWAY}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert not hass.config_entries.flow.async_progress_by_handler(DOMAIN)


async def test_reconfigure_gateway_follows_another_device_id(
    hass: HomeAssistant, mock_setup_entry: AsyncMock
) -> None:
    """A new device id replaces the old one, with the unique id and the default title."""
    entry = _gateway_entry("rpi-typo")
    entry.add_to_hass(hass)

    result = await entry.start_reconfigure_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure_gateway"
    assert result["description_placeholders"] == {"name": "rpi-typo"}
    assert _suggested(result, CONF_DEVICE_ID) == "rpi-typo"

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_DEVICE_ID: GATEWAY}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert entry.data == {CONF_KIND: EntryKind.GATEWAY, CONF_DEVICE_ID: GATEWAY}
    assert entry.unique_id == f"gateway:{GATEWAY}"
    assert entry.title == GATEWAY
    await hass.async_block_till_done()
    assert len(mock_setup_entry.mock_calls) == 1


async def test_reconfigure_gateway_keeps_a_title_the_user_chose(hass: HomeAssistant) -> None:
    """The same id again just reloads; a title of the user's own is never replaced."""
    entry = _gateway_entry(title="Shed gateway")
    entry.add_to_hass(hass)

    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_DEVICE_ID: GATEWAY}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert entry.title == "Shed gateway"
    assert entry.unique_id == f"gateway:{GATEWAY}"


async def test_reconfigure_gateway_errors_and_an_id_taken_by_another_entry(
    hass: HomeAssistant,
) -> None:
    """An invalid id is shown at the field; another entry's gateway is refused, nothing changes."""
    entry = _gateway_entry()
    entry.add_to_hass(hass)
    _gateway_entry("rpi-4b-prod-02").add_to_hass(hass)
    before = dict(entry.data)

    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_DEVICE_ID: "rpi 4b"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_DEVICE_ID: "invalid_device_id"}
    assert _suggested(result, CONF_DEVICE_ID) == "rpi 4b"

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_DEVICE_ID: "rpi-4b-prod-02"}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert dict(entry.data) == before
    assert entry.unique_id == f"gateway:{GATEWAY}"


# ----------------------------------------------------------------- grid entry and its options


async def test_system_step_creates_the_one_grid_entry(hass: HomeAssistant) -> None:
    """The integration's own flow creates the grid entry once; a second one aborts."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_SYSTEM}, data={CONF_KIND: EntryKind.GRID}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "PeerGrid grid"
    assert result["data"] == {CONF_KIND: "grid"}
    assert result["result"].unique_id == "grid"

    again = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_SYSTEM}, data={CONF_KIND: EntryKind.GRID}
    )
    assert again["type"] is FlowResultType.ABORT
    assert again["reason"] == "already_configured"


async def test_only_the_grid_entry_has_options(hass: HomeAssistant) -> None:
    """Node and gateway entries are reconfigured or rediscovered, never given options."""
    grid = MockConfigEntry(domain=DOMAIN, unique_id="grid", data={CONF_KIND: EntryKind.GRID})
    node = MockConfigEntry(domain=DOMAIN, unique_id="NODE_A", data={CONF_KIND: EntryKind.NODE})
    assert PeerGridConfigFlow.async_supports_options_flow(grid)
    assert not PeerGridConfigFlow.async_supports_options_flow(node)
    assert not PeerGridConfigFlow.async_supports_options_flow(_gateway_entry())


async def test_grid_options_refuse_thresholds_that_collide(hass: HomeAssistant) -> None:
    """The form starts at the current thresholds; a clash is shown, a valid set is stored."""
    entry = MockConfigEntry(domain=DOMAIN, unique_id="grid", data={CONF_KIND: EntryKind.GRID})
    entry.add_to_hass(hass)
    defaults = BalanceThresholds().as_dict()

    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "init"
    assert _suggested(result, "soc_low") == defaults["soc_low"]

    bad = {**defaults, "soc_low": 50, "soc_high": 50}
    result = await hass.config_entries.options.async_configure(result["flow_id"], bad)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"soc_high": "invalid_threshold"}
    assert _suggested(result, "soc_low") == 50

    good = {**defaults, "balance_deadband": 25}
    result = await hass.config_entries.options.async_configure(result["flow_id"], good)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options["balance_deadband"] == 25
