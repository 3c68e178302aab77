"""Config flow of the Stellar ledger entry: add, refuse bad settings, reauth, reconfigure.

Every check runs against the offline Stellar test RPC served on 127.0.0.1
(``peergrid_core.sim.soroban_rpc``) through Home Assistant's aiohttp session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
import socket
from typing import Any
from unittest.mock import patch

from homeassistant.config_entries import SOURCE_USER
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from stellar_sdk import Keypair, Network

from custom_components.peergrid.const import CONF_KIND, DOMAIN, EntryKind
from custom_components.peergrid.peergrid_core.sim.soroban_rpc import FakeSorobanRpc
from custom_components.peergrid.stellar import (
    CONF_CARBON_CONTRACT,
    CONF_ENERGY_CONTRACT,
    CONF_NETWORK_PASSPHRASE,
    CONF_REWARD_CONTRACT,
    CONF_RPC_URL,
    CONF_SECRET_KEY,
    LEDGER_UNIQUE_ID,
    NETWORKS,
    TESTNET_RPC_URL,
)

PASSPHRASE = Network.TESTNET_NETWORK_PASSPHRASE
ADMIN = Keypair.from_raw_ed25519_seed(bytes([1]) * 32)
OTHER = Keypair.from_raw_ed25519_seed(bytes([7]) * 32)


@pytest.fixture
async def settings(socket_enabled: None) -> AsyncIterator[dict[str, Any]]:
    """Good ledger settings: the test RPC, with tokens whose admin is ADMIN."""
    fake = FakeSorobanRpc(PASSPHRASE)
    fake.create_account(ADMIN.public_key)
    url = await fake.serve()
    yield {
        CONF_RPC_URL: url,
        CONF_NETWORK_PASSPHRASE: PASSPHRASE,
        CONF_ENERGY_CONTRACT: fake.deploy_token(ADMIN.public_key, symbol="ENRG"),
        CONF_CARBON_CONTRACT: fake.deploy_token(ADMIN.public_key, symbol="CO2"),
        CONF_REWARD_CONTRACT: fake.deploy_token(ADMIN.public_key, symbol="LT"),
        CONF_SECRET_KEY: ADMIN.secret,
        "other_token": fake.deploy_token(OTHER.public_key, symbol="OTH"),
    }
    await fake.stop()


def _form(settings: dict[str, Any], **changes: Any) -> dict[str, Any]:
    values = {key: value for key, value in settings.items() if key != "other_token"}
    return values | changes


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def _ledger_form(hass: HomeAssistant) -> Any:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.MENU
    assert {"node", "ledger"} <= set(result["menu_options"])
    return await hass.config_entries.flow.async_configure(
        result["flow_id"], {"next_step_id": "ledger"}
    )


async def test_ledger_flow_adds_the_ledger(hass: HomeAssistant, settings: dict[str, Any]) -> None:
    """Good settings create the one ledger entry; the form suggests Stellar's testnet."""
    result = await _ledger_form(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "ledger"
    suggested = {
        str(key): key.description["suggested_value"]
        for key in result["data_schema"].schema
        if key.description and "suggested_value" in key.description
    }
    assert suggested == {
        CONF_RPC_URL: TESTNET_RPC_URL,
        CONF_NETWORK_PASSPHRASE: NETWORKS["testnet"],
    }
    secret = next(v for k, v in result["data_schema"].schema.items() if k == CONF_SECRET_KEY)
    assert secret.config["type"] == "password"

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], _form(settings, **{CONF_SECRET_KEY: f" {ADMIN.secret} "})
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == f"Stellar ledger ({ADMIN.public_key[:6]}…{ADMIN.public_key[-4:]})"
    assert result["data"] == {CONF_KIND: EntryKind.LEDGER, **_form(settings)}
    assert result["result"].unique_id == LEDGER_UNIQUE_ID
    await hass.async_block_till_done()

    again = await _ledger_form(hass)
    assert again["type"] is FlowResultType.ABORT
    assert again["reason"] == "already_configured"


@pytest.mark.parametrize(
    ("change", "errors"),
    [
        ({CONF_SECRET_KEY: "SNOTASECRET"}, {CONF_SECRET_KEY: "invalid_secret_key"}),
        ({CONF_RPC_URL: "ftp://rpc.example"}, {CONF_RPC_URL: "invalid_rpc_url"}),
        ({CONF_NETWORK_PASSPHRASE: " "}, {CONF_NETWORK_PASSPHRASE: "invalid_network_passphrase"}),
        (
            {CONF_NETWORK_PASSPHRASE: NETWORKS["mainnet"]},
            {CONF_NETWORK_PASSPHRASE: "wrong_network"},
        ),
        (
            {CONF_ENERGY_CONTRACT: "CNOTACONTRACT"},
            {CONF_ENERGY_CONTRACT: "invalid_energy_contract"},
        ),
        ({CONF_SECRET_KEY: OTHER.secret}, {CONF_ENERGY_CONTRACT: "invalid_energy_contract"}),
        ("other_carbon", {CONF_CARBON_CONTRACT: "invalid_carbon_contract"}),
        ("closed_port", {"base": "cannot_connect_rpc"}),
    ],
)
async def test_ledger_flow_errors_then_recovery(
    hass: HomeAssistant,
    settings: dict[str, Any],
    change: dict[str, Any] | str,
    errors: dict[str, str],
) -> None:
    """Each bad setting is shown at its field, nothing is stored, and the user can fix it."""
    if change == "other_carbon":
        change = {CONF_CARBON_CONTRACT: settings["other_token"]}
    elif change == "closed_port":
        change = {CONF_RPC_URL: f"http://127.0.0.1:{_closed_port()}/"}
    assert isinstance(change, dict)
    result = await _ledger_form(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], _form(settings, **change)
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == errors
    assert not hass.config_entries.async_entries(DOMAIN)
    suggested = {
        str(key): key.description.get("suggested_value")
        for key in result["data_schema"].schema
        if key.description
    }
    assert CONF_SECRET_KEY not in suggested or suggested[CONF_SECRET_KEY] is None

    result = await hass.config_entries.flow.async_configure(result["flow_id"], _form(settings))
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_ledger_flow_unknown_error(
    hass: HomeAssistant, settings: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected failure is logged and shown as 'unknown'; the secret is not logged."""
    result = await _ledger_form(hass)
    with patch(
        "custom_components.peergrid.config_flow.async_validate_stellar",
        side_effect=RuntimeError("boom"),
    ):
        result = await hass.config_entries.flow.async_configure(result["flow_id"], _form(settings))
    assert result["errors"] == {"base": "unknown"}
    assert "boom" in caplog.text
    assert ADMIN.secret not in caplog.text


async def test_ledger_flow_setting_out_of_range(
    hass: HomeAssistant, settings: dict[str, Any]
) -> None:
    """A setting the form does not show but the core refuses lands on 'base'."""
    from custom_components.peergrid.peergrid_core.ledger.soroban import SorobanConfigError

    result = await _ledger_form(hass)
    with patch(
        "custom_components.peergrid.config_flow.async_validate_stellar",
        side_effect=SorobanConfigError("max_fee", "too low"),
    ):
        result = await hass.config_entries.flow.async_configure(result["flow_id"], _form(settings))
    assert result["errors"] == {"base": "invalid_ledger_setting"}


def _ledger_entry(settings: dict[str, Any], secret: str) -> MockConfigEntry:
    return MockConfigEntry(
        domain=DOMAIN,
        unique_id=LEDGER_UNIQUE_ID,
        title="Stellar ledger",
        data={CONF_KIND: EntryKind.LEDGER, **_form(settings, **{CONF_SECRET_KEY: secret})},
    )


async def test_reauth_stores_the_admin_key(hass: HomeAssistant, settings: dict[str, Any]) -> None:
    """A key that may not mint is replaced by one that may; a wrong one is refused first."""
    entry = _ledger_entry(settings, OTHER.secret)
    entry.add_to_hass(hass)
    result = await entry.start_reauth_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reauth_ledger"

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_SECRET_KEY: OTHER.secret}
    )
    assert result["errors"] == {CONF_ENERGY_CONTRACT: "invalid_energy_contract"}
    assert entry.data[CONF_SECRET_KEY] == OTHER.secret

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_SECRET_KEY: ADMIN.secret}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    assert entry.data[CONF_SECRET_KEY] == ADMIN.secret


async def test_reconfigure_changes_contracts(hass: HomeAssistant, settings: dict[str, Any]) -> None:
    """New contracts are checked before they are stored; the key stays."""
    entry = _ledger_entry(settings, ADMIN.secret)
    entry.add_to_hass(hass)
    result = await entry.start_reconfigure_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure_ledger"
    assert CONF_SECRET_KEY not in {str(key) for key in result["data_schema"].schema}

    changed = {key: value for key, value in _form(settings).items() if key != CONF_SECRET_KEY}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], changed | {CONF_REWARD_CONTRACT: settings["other_token"]}
    )
    assert result["errors"] == {CONF_REWARD_CONTRACT: "invalid_reward_contract"}

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"],
        changed | {CONF_REWARD_CONTRACT: settings[CONF_ENERGY_CONTRACT]},
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert entry.data[CONF_REWARD_CONTRACT] == settings[CONF_ENERGY_CONTRACT]
    assert entry.data[CONF_SECRET_KEY] == ADMIN.secret


ALICE = Keypair.from_raw_ed25519_seed(bytes([2]) * 32).public_key


@pytest.mark.parametrize(
    "text",
    [
        "NODE_A G-not-an-address",
        "NODE_A = GNOTANADDRESS",
        f"NODE_A = {ALICE}\nNODE_A = {ALICE}",
        f" = {ALICE}",
    ],
)
async def test_node_accounts_refused(
    hass: HomeAssistant, settings: dict[str, Any], text: str
) -> None:
    """A malformed line, an address that is not Stellar's, a node twice: refused, nothing kept."""
    entry = _ledger_entry(settings, ADMIN.secret)
    entry.add_to_hass(hass)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["step_id"] == "accounts"
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"node_accounts": text}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"node_accounts": "invalid_node_accounts"}
    assert not entry.options


async def test_node_accounts_stored_and_shown(
    hass: HomeAssistant, settings: dict[str, Any]
) -> None:
    """Comments and blank lines are ignored; the stored mapping is shown again, sorted."""
    entry = _ledger_entry(settings, ADMIN.secret)
    entry.add_to_hass(hass)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {"node_accounts": f"# garage\nNODE_B = {ADMIN.public_key}\n\nNODE_A = {ALICE}  # shed\n"},
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == {"node_accounts": {"NODE_A": ALICE, "NODE_B": ADMIN.public_key}}
    await hass.async_block_till_done()

    again = await hass.config_entries.options.async_init(entry.entry_id)
    shown = {
        str(key): key.description["suggested_value"]
        for key in again["data_schema"].schema
        if key.description
    }
    assert shown == {"node_accounts": f"NODE_A = {ALICE}\nNODE_B = {ADMIN.public_key}"}
