"""The Stellar ledger entry: anchor PeerGrid's mints on Soroban token contracts.

The embedded ledger always records every mint first. With a Stellar ledger
entry, each new mint is also written to the Soroban journal in the same
transaction and a background worker mints it on chain: build, simulate,
sign, journal, send, poll (the core's :class:`SorobanLedger`). Unloading the
entry stops the worker; jobs left in the journal resume at the next setup.

Where the tokens go: a node's energy tokens and carbon credits go to the
Stellar account the entry's options give for it; a gateway's rewards go to
the wallet it registered in the DePIN registry; anything else is minted to
the minting key's own account and held there (the embedded ledger keeps who
owns what).

A repair issue tells the user when the minting account is missing or cannot
pay fees; the entry asks for a new key (reauth) when the configured key is no
longer the tokens' admin.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ConfigEntryAuthFailed, ConfigEntryNotReady
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.event import async_track_time_interval
from stellar_sdk import StrKey

from . import ledger as ledger_module
from .const import DOMAIN, LOGGER
from .iot_hub import DATA_IOT_HUB
from .ledger import DATA_LEDGER
from .peergrid_core.errors import PeerGridConnectionError, PeerGridValidationError
from .peergrid_core.ledger import LedgerDatabase, LedgerError, Token
from .peergrid_core.ledger.soroban import (
    AccountCheck,
    SorobanConfig,
    SorobanConfigError,
    SorobanLedger,
)

CONF_RPC_URL: Final = "rpc_url"
CONF_NETWORK_PASSPHRASE: Final = "network_passphrase"  # noqa: S105 - a field name
CONF_SECRET_KEY: Final = "secret_key"  # noqa: S105 - a field name
CONF_NODE_ACCOUNTS: Final = "node_accounts"
"""Option: the Stellar account each node's tokens are minted to, by node uid."""
CONF_ENERGY_CONTRACT: Final = "energy_contract"
CONF_CARBON_CONTRACT: Final = "carbon_contract"
CONF_REWARD_CONTRACT: Final = "reward_contract"
CONTRACT_FIELDS: Final[Mapping[Token, str]] = {
    Token.ENERGY: CONF_ENERGY_CONTRACT,
    Token.CARBON: CONF_CARBON_CONTRACT,
    Token.REWARD: CONF_REWARD_CONTRACT,
}
LEDGER_UNIQUE_ID: Final = "ledger"
"""Unique id of the one Stellar ledger entry."""
NETWORKS: Final[Mapping[str, str]] = {
    "testnet": "Test SDF Network ; September 2015",
    "mainnet": "Public Global Stellar Network ; September 2015",
    "futurenet": "Test SDF Future Network ; October 2022",
}
"""Network passphrases by name."""
TESTNET_RPC_URL: Final = "https://soroban-testnet.stellar.org"
"""Stellar's public testnet RPC, suggested in the configuration form."""
ACCOUNT_CHECK_INTERVAL: Final = timedelta(minutes=30)
ISSUE_PREFIX: Final = "stellar_account_"

type PeerGridStellarConfigEntry = ConfigEntry[SorobanLedger]


def soroban_config(data: Mapping[str, Any]) -> SorobanConfig:
    """The core's configuration from an entry's (or a form's) data."""
    return SorobanConfig(
        rpc_url=data[CONF_RPC_URL],
        network_passphrase=data[CONF_NETWORK_PASSPHRASE],
        secret_key=data[CONF_SECRET_KEY],
        contracts={token: data[field] for token, field in CONTRACT_FIELDS.items()},
    )


def parse_node_accounts(text: str) -> dict[str, str]:
    """Read ``NODE_UID = G...`` lines (blank lines and ``#`` comments ignored).

    Raises :class:`PeerGridValidationError` naming the line for a malformed
    line, an address that is not a Stellar account or contract, or a node
    listed twice.
    """
    accounts: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        uid, sep, address = (part.strip() for part in line.partition("="))
        if not sep or not uid or not address:
            raise PeerGridValidationError(f"line {number}", "expected NODE_UID = G... or C...")
        if not (StrKey.is_valid_ed25519_public_key(address) or StrKey.is_valid_contract(address)):
            raise PeerGridValidationError(f"line {number}", f"{address} is not a Stellar address")
        if uid in accounts:
            raise PeerGridValidationError(f"line {number}", f"{uid} is listed twice")
        accounts[uid] = address
    return accounts


def format_node_accounts(accounts: Mapping[str, str]) -> str:
    """The option as the form shows it: one ``NODE_UID = address`` line per node, sorted."""
    return "\n".join(f"{uid} = {address}" for uid, address in sorted(accounts.items()))


def config_error_field(err: SorobanConfigError) -> str:
    """The form field a configuration error belongs to."""
    if err.field == "contract" and err.token is not None:
        return CONTRACT_FIELDS[err.token]
    if err.field in (CONF_RPC_URL, CONF_NETWORK_PASSPHRASE, CONF_SECRET_KEY):
        return err.field
    return "base"


async def async_validate_stellar(hass: HomeAssistant, data: Mapping[str, Any]) -> str:
    """Check a configuration against its RPC; return the minting account (``G...``).

    Raises :class:`SorobanConfigError` for a bad setting (field named),
    :class:`PeerGridConnectionError` when the RPC cannot be reached. The
    account may still be missing or unfunded: a repair issue says so later,
    so that a user can configure first and fund afterwards.
    """
    config = soroban_config(data)
    config.validate()
    # The checks only talk to the RPC; the journal file is never opened here.
    chain = SorobanLedger(
        LedgerDatabase(hass.config.path(ledger_module.LEDGER_FILE)),
        config,
        session=async_get_clientsession(hass),
    )
    try:
        await chain.check_network()
        await chain.check_contracts()
    finally:
        await chain.close()
    return config.public_key


async def async_setup_stellar_entry(hass: HomeAssistant, entry: PeerGridStellarConfigEntry) -> None:
    """Attach the Soroban backend to the ledger and start its mint worker."""
    ledger = hass.data[DATA_LEDGER]
    try:
        config = soroban_config(entry.data)
        chain = SorobanLedger(ledger.db, config, session=async_get_clientsession(hass))
    except SorobanConfigError as err:
        raise ConfigEntryAuthFailed(str(err)) from err
    try:
        await chain.check_network()
        await chain.check_contracts()
        account = await chain.check_account()
    except SorobanConfigError as err:
        await chain.close()
        if err.field == "contract":
            # The key is no longer the tokens' admin: ask for the one that is.
            raise ConfigEntryAuthFailed(str(err)) from err
        raise ConfigEntryNotReady(str(err)) from err
    except (PeerGridConnectionError, LedgerError) as err:
        await chain.close()
        raise ConfigEntryNotReady(f"Stellar RPC {config.rpc_url}: {err}") from err
    _update_account_issue(hass, config.public_key, account)
    accounts = dict(entry.options.get(CONF_NODE_ACCOUNTS, {}))
    await ledger.async_attach_chain(chain, chain_account(hass, config.public_key, accounts))
    entry.async_on_unload(entry.add_update_listener(_async_options_updated))
    entry.runtime_data = chain
    entry.async_create_background_task(hass, chain.run(), f"{DOMAIN} Soroban mints")

    async def _async_check_account(_now: datetime) -> None:
        try:
            state = await chain.check_account()
        except (PeerGridConnectionError, LedgerError) as err:
            LOGGER.debug("Stellar account check failed: %s", err)
            return
        _update_account_issue(hass, config.public_key, state)

    entry.async_on_unload(
        async_track_time_interval(hass, _async_check_account, ACCOUNT_CHECK_INTERVAL)
    )
    entry.async_on_unload(chain.add_listener(lambda _receipt: ledger.async_notify()))


async def async_unload_stellar_entry(
    hass: HomeAssistant, entry: PeerGridStellarConfigEntry
) -> bool:
    """Mint locally only again; pending chain jobs wait in the journal for the next setup."""
    await hass.data[DATA_LEDGER].async_detach_chain()
    await entry.runtime_data.close()
    for state in (AccountCheck.MISSING, AccountCheck.UNFUNDED):
        ir.async_delete_issue(hass, DOMAIN, f"{ISSUE_PREFIX}{state}")
    return True


async def _async_options_updated(hass: HomeAssistant, entry: ConfigEntry) -> None:
    """New node accounts apply to the next mints: reload the entry."""
    await hass.config_entries.async_reload(entry.entry_id)


def chain_account(
    hass: HomeAssistant, custody: str, node_accounts: Mapping[str, str]
) -> Callable[[str], str]:
    """Map a ledger account to its Stellar address (see the module docstring)."""

    def _address(account: str) -> str:
        if (address := node_accounts.get(account)) is not None:
            return address
        hub = hass.data.get(DATA_IOT_HUB)
        if hub is not None and (gateway := hub.depin.node(account)) is not None:
            return gateway.wallet_address
        return custody

    return _address


def _update_account_issue(hass: HomeAssistant, account_id: str, state: AccountCheck) -> None:
    """Raise the repair issue for a missing or unfunded account; clear it once fixed."""
    for problem in (AccountCheck.MISSING, AccountCheck.UNFUNDED):
        issue_id = f"{ISSUE_PREFIX}{problem}"
        if state is problem:
            ir.async_create_issue(
                hass,
                DOMAIN,
                issue_id,
                is_fixable=False,
                severity=ir.IssueSeverity.ERROR,
                translation_key=issue_id,
                translation_placeholders={"account": account_id},
            )
        else:
            ir.async_delete_issue(hass, DOMAIN, issue_id)
