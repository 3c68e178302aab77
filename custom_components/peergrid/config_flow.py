"""Config flow for PeerGrid: add a node by hand or from DHCP, reauthenticate, reconfigure.

A node entry holds how to reach one node and its key: ``{kind: "node", host,
port, key}``. Its unique id is the node's ``uid`` from the hello, so the same
node cannot be added twice and a node that moves to another address is
recognised. Nothing is stored until a real connection has shown both that the
node accepts the key and that the node holds the same key.

The grid entry (``EntryKind.GRID``, one per installation) is created by the
integration itself with the first node; its options are the auto-balance
thresholds.

A gateway entry (``EntryKind.GATEWAY``) is an edge gateway found over
zeroconf (``_peergrid._tcp.local.``, TXT ``device_id``) or added by hand with
its device id: ``{kind: "gateway", device_id}``. The gateway pushes to Home
Assistant, so there is nothing to connect to: the user confirms a discovered
gateway, or types (or picks, among the gateways Home Assistant has heard from)
the device id of one. Reconfiguring changes the device id (a mistyped one, or
a gateway reinstalled under another). There is no reauthentication: Home
Assistant holds no credential of a gateway; the gateway authenticates to Home
Assistant with a Home Assistant access token, which lives on the gateway.
Its unique id is ``gateway:<device_id>``: a colon never appears in a node uid
or in ``grid``, so a gateway can never collide with a node entry or the grid
entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from homeassistant.config_entries import ConfigEntry, ConfigFlow, ConfigFlowResult, OptionsFlow
from homeassistant.const import CONF_HOST, CONF_PORT
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers.selector import (
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)
from homeassistant.helpers.service_info.dhcp import DhcpServiceInfo
from homeassistant.helpers.service_info.zeroconf import ZeroconfServiceInfo
from pydantic import TypeAdapter, ValidationError
import voluptuous as vol

from .const import (
    CONF_DEVICE_ID,
    CONF_KEY,
    CONF_KIND,
    DOMAIN,
    GRID_UNIQUE_ID,
    LOGGER,
    EntryKind,
    gateway_unique_id,
)
from .iot_hub import DATA_IOT_HUB
from .peergrid_core.errors import (
    PeerGridAuthenticationError,
    PeerGridConnectionError,
    PeerGridProtocolError,
    PeerGridValidationError,
)
from .peergrid_core.ledger.soroban import SorobanConfigError
from .peergrid_core.payload_fields import DeviceId
from .peergrid_core.protocol import (
    DEFAULT_PORT,
    Hello,
    NotPeerGridNodeError,
    UnsupportedProtocolError,
    probe_node,
    validate_node,
)
from .peergrid_core.thresholds import THRESHOLD_RANGES, BalanceThresholds
from .stellar import (
    CONF_CARBON_CONTRACT,
    CONF_ENERGY_CONTRACT,
    CONF_NETWORK_PASSPHRASE,
    CONF_NODE_ACCOUNTS,
    CONF_REWARD_CONTRACT,
    CONF_RPC_URL,
    CONF_SECRET_KEY,
    LEDGER_UNIQUE_ID,
    NETWORKS,
    TESTNET_RPC_URL,
    async_validate_stellar,
    config_error_field,
    format_node_accounts,
    parse_node_accounts,
)

_KEY_SELECTOR = TextSelector(TextSelectorConfig(type=TextSelectorType.PASSWORD))

NODE_SCHEMA = vol.Schema(
    {
        vol.Required(CONF_HOST): TextSelector(),
        vol.Required(CONF_PORT, default=DEFAULT_PORT): cv.port,
        vol.Required(CONF_KEY): _KEY_SELECTOR,
    }
)
"""Where a node is and its key: the user and reconfigure steps."""

KEY_SCHEMA = vol.Schema({vol.Required(CONF_KEY): _KEY_SELECTOR})
"""Only the key: the node's address is already known (discovery, reauth)."""

_DEVICE_ID: TypeAdapter[str] = TypeAdapter(DeviceId)
"""The payloads' rule for a gateway's device id, applied to the TXT record."""


@dataclass(frozen=True, kw_only=True, slots=True)
class _DiscoveredNode:
    """A node found by DHCP whose hello was read, waiting for its key."""

    host: str
    port: int
    uid: str


async def _async_try_node(host: str, port: int, key: str, errors: dict[str, str]) -> Hello | None:
    """Connect and authenticate; return the node's hello, or record why not in ``errors``.

    ``errors`` uses the translation keys of the ``config.error`` section,
    under the form field they concern or ``base``.
    """
    try:
        return await validate_node(host, port, key)
    except PeerGridValidationError:
        # The schemas bound host and port, so the key is the one input left
        # that validate_node can refuse before connecting.
        errors[CONF_KEY] = "invalid_key"
    except PeerGridAuthenticationError:
        errors[CONF_KEY] = "invalid_auth"
    except UnsupportedProtocolError:
        errors["base"] = "unsupported_protocol"
    except NotPeerGridNodeError:
        errors["base"] = "not_peergrid_node"
    except (PeerGridConnectionError, PeerGridProtocolError) as err:
        # A protocol error after a valid hello is a node failing mid-handshake;
        # for the user that is a node that cannot be reached properly.
        LOGGER.debug("Cannot connect to PeerGrid node at %s:%s: %s", host, port, err)
        errors["base"] = "cannot_connect"
    except Exception:  # noqa: BLE001 - the form must show 'unknown', not crash
        LOGGER.exception("Unexpected error while checking PeerGrid node at %s:%s", host, port)
        errors["base"] = "unknown"
    return None


_CONTRACT_SELECTOR = TextSelector()

LEDGER_RECONFIGURE_SCHEMA = vol.Schema(
    {
        vol.Required(CONF_RPC_URL): TextSelector(TextSelectorConfig(type=TextSelectorType.URL)),
        vol.Required(CONF_NETWORK_PASSPHRASE): TextSelector(),
        vol.Required(CONF_ENERGY_CONTRACT): _CONTRACT_SELECTOR,
        vol.Required(CONF_CARBON_CONTRACT): _CONTRACT_SELECTOR,
        vol.Required(CONF_REWARD_CONTRACT): _CONTRACT_SELECTOR,
    }
)
"""Where the ledger mints: the RPC, the network and the three token contracts."""

SECRET_SCHEMA = vol.Schema({vol.Required(CONF_SECRET_KEY): _KEY_SELECTOR})
"""The minting key's secret seed (``S...``), shown masked."""

LEDGER_SCHEMA = LEDGER_RECONFIGURE_SCHEMA.extend(SECRET_SCHEMA.schema)
"""Everything the Stellar ledger needs."""


def _ledger_data(user_input: Mapping[str, Any]) -> dict[str, Any]:
    """The ledger's settings from a form, without stray whitespace."""
    return {
        field: str(user_input[field]).strip()
        for field in (
            CONF_RPC_URL,
            CONF_NETWORK_PASSPHRASE,
            CONF_ENERGY_CONTRACT,
            CONF_CARBON_CONTRACT,
            CONF_REWARD_CONTRACT,
            CONF_SECRET_KEY,
        )
        if field in user_input
    }


def _ledger_suggestions(user_input: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the ledger form shows: the user's input again, or Stellar's public testnet."""
    if user_input is not None:
        return {k: v for k, v in user_input.items() if k != CONF_SECRET_KEY}
    return {CONF_RPC_URL: TESTNET_RPC_URL, CONF_NETWORK_PASSPHRASE: NETWORKS["testnet"]}


async def _async_try_stellar(
    hass: HomeAssistant, data: Mapping[str, Any], errors: dict[str, str]
) -> str | None:
    """Check the ledger settings against the RPC; the minting account, or ``errors`` filled."""
    try:
        return await async_validate_stellar(hass, data)
    except SorobanConfigError as err:
        field = config_error_field(err)
        errors[field] = (
            "wrong_network"
            if field == CONF_NETWORK_PASSPHRASE and "serves" in err.message
            else f"invalid_{field}"
            if field != "base"
            else "invalid_ledger_setting"
        )
    except PeerGridConnectionError as err:
        LOGGER.debug("Cannot reach the Stellar RPC %s: %s", data.get(CONF_RPC_URL), err)
        errors["base"] = "cannot_connect_rpc"
    except Exception:  # noqa: BLE001 - the form must show 'unknown', not crash
        LOGGER.exception("Unexpected error while checking the Stellar ledger settings")
        errors["base"] = "unknown"
    return None


def _gateway_device_id(user_input: Mapping[str, Any], errors: dict[str, str]) -> str | None:
    """The device id the user entered if it is a valid one, or record why not in ``errors``."""
    try:
        return _DEVICE_ID.validate_python(str(user_input[CONF_DEVICE_ID]).strip())
    except ValidationError:
        errors[CONF_DEVICE_ID] = "invalid_device_id"
    return None


class PeerGridConfigFlow(ConfigFlow, domain=DOMAIN):
    """Add PeerGrid nodes, and keep their address and key up to date."""

    VERSION = 1
    MINOR_VERSION = 1

    _discovered: _DiscoveredNode
    """Set by the DHCP step before it hands over to ``discovery_confirm``."""

    _gateway_device_id: str
    """Set by the zeroconf step before it hands over to ``zeroconf_confirm``."""

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: ConfigEntry) -> OptionsFlow:
        """The grid entry's thresholds, or the Stellar ledger's node accounts."""
        if config_entry.data.get(CONF_KIND) == EntryKind.LEDGER:
            return LedgerOptionsFlow()
        return GridOptionsFlow()

    @classmethod
    @callback
    def async_supports_options_flow(cls, config_entry: ConfigEntry) -> bool:
        """The grid and the ledger entries have options; the others are reconfigured instead."""
        return config_entry.data.get(CONF_KIND) in (EntryKind.GRID, EntryKind.LEDGER)

    async def async_step_system(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Create the grid entry (started by the integration with the first node)."""
        await self.async_set_unique_id(GRID_UNIQUE_ID)
        self._abort_if_unique_id_configured()
        return self.async_create_entry(title="PeerGrid grid", data={CONF_KIND: EntryKind.GRID})

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Ask what to add: a node, or the Stellar ledger."""
        return self.async_show_menu(step_id="user", menu_options=["node", "gateway", "ledger"])

    async def async_step_node(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Ask for a node's address and key, check them, add the node."""
        errors: dict[str, str] = {}
        if user_input is not None:
            host: str = user_input[CONF_HOST].strip()
            port: int = user_input[CONF_PORT]
            key: str = user_input[CONF_KEY]
            if (hello := await _async_try_node(host, port, key, errors)) is not None:
                # The user asked for this node by name: finish even while a
                # discovery of it waits (that flow is aborted once we create it).
                await self.async_set_unique_id(hello.uid, raise_on_progress=False)
                self._abort_if_unique_id_configured()
                return self._async_create_node_entry(hello, host=host, port=port, key=key)
        return self.async_show_form(
            step_id="node",
            data_schema=self.add_suggested_values_to_schema(NODE_SCHEMA, user_input or {}),
            errors=errors,
        )

    async def async_step_ledger(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Anchor the ledger on Stellar Soroban: RPC, network, minting key, token contracts."""
        await self.async_set_unique_id(LEDGER_UNIQUE_ID)
        self._abort_if_unique_id_configured()
        errors: dict[str, str] = {}
        if user_input is not None:
            data = _ledger_data(user_input)
            if (account := await _async_try_stellar(self.hass, data, errors)) is not None:
                return self.async_create_entry(
                    title=f"Stellar ledger ({account[:6]}…{account[-4:]})",
                    data={CONF_KIND: EntryKind.LEDGER, **data},
                )
        return self.async_show_form(
            step_id="ledger",
            data_schema=self.add_suggested_values_to_schema(
                LEDGER_SCHEMA, _ledger_suggestions(user_input)
            ),
            errors=errors,
        )

    async def async_step_dhcp(self, discovery_info: DhcpServiceInfo) -> ConfigFlowResult:
        """A device named ``peergrid-*`` joined the network: read its hello.

        The hello names the node without a key. A node that is already
        configured gets its new address (and is reloaded); a new one is
        offered to the user, who confirms with its key.
        """
        host = discovery_info.ip
        try:
            hello = await probe_node(host, DEFAULT_PORT)
        except UnsupportedProtocolError as err:
            LOGGER.debug("Discovered %s (%s): %s", discovery_info.hostname, host, err)
            return self.async_abort(reason="unsupported_protocol")
        except PeerGridProtocolError as err:
            LOGGER.debug("Discovered %s (%s) is no node: %s", discovery_info.hostname, host, err)
            return self.async_abort(reason="not_peergrid_node")
        except PeerGridConnectionError as err:
            LOGGER.debug(
                "Discovered %s (%s) did not answer: %s", discovery_info.hostname, host, err
            )
            return self.async_abort(reason="cannot_connect")
        await self.async_set_unique_id(hello.uid)
        # The node just answered on the default port at this address, so both
        # are right for a known node whose address changed.
        self._abort_if_unique_id_configured(updates={CONF_HOST: host, CONF_PORT: DEFAULT_PORT})
        self._discovered = _DiscoveredNode(host=host, port=DEFAULT_PORT, uid=hello.uid)
        self.context["title_placeholders"] = {"name": hello.uid, "host": host}
        return await self.async_step_discovery_confirm()

    async def async_step_discovery_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for the key of a discovered node, check it, add the node."""
        node = self._discovered
        errors: dict[str, str] = {}
        if user_input is not None:
            key: str = user_input[CONF_KEY]
            if (hello := await _async_try_node(node.host, node.port, key, errors)) is not None:
                if hello.uid != node.uid:
                    # The address was handed to another node since discovery.
                    return self.async_abort(
                        reason="unique_id_mismatch", description_placeholders={"uid": hello.uid}
                    )
                return self._async_create_node_entry(hello, host=node.host, port=node.port, key=key)
        return self.async_show_form(
            step_id="discovery_confirm",
            data_schema=KEY_SCHEMA,
            errors=errors,
            description_placeholders={"name": node.uid, "host": node.host},
        )

    async def async_step_zeroconf(self, discovery_info: ZeroconfServiceInfo) -> ConfigFlowResult:
        """An edge gateway announced itself: offer it by the device id in its TXT record."""
        try:
            device_id = _DEVICE_ID.validate_python(discovery_info.properties.get(CONF_DEVICE_ID))
        except ValidationError as err:
            LOGGER.debug("Zeroconf service %s is no PeerGrid gateway: %s", discovery_info.name, err)
            return self.async_abort(reason="not_peergrid_gateway")
        await self.async_set_unique_id(gateway_unique_id(device_id))
        self._abort_if_unique_id_configured()
        self._gateway_device_id = device_id
        self.context["title_placeholders"] = {"name": device_id}
        return await self.async_step_zeroconf_confirm()

    async def async_step_zeroconf_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask the user to add the discovered gateway."""
        device_id = self._gateway_device_id
        if user_input is not None:
            return self._async_create_gateway_entry(device_id)
        self._set_confirm_only()
        return self.async_show_form(
            step_id="zeroconf_confirm", description_placeholders={"name": device_id}
        )

    async def async_step_gateway(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Add an edge gateway by its device id (the ``device_id`` of its configuration)."""
        errors: dict[str, str] = {}
        if (
            user_input is not None
            and (device_id := _gateway_device_id(user_input, errors)) is not None
        ):
            # Asked for by name: finish even while a discovery of it waits.
            await self.async_set_unique_id(gateway_unique_id(device_id), raise_on_progress=False)
            self._abort_if_unique_id_configured()
            return self._async_create_gateway_entry(device_id)
        return self.async_show_form(
            step_id="gateway",
            data_schema=self.add_suggested_values_to_schema(
                self._gateway_schema(), user_input or {}
            ),
            errors=errors,
        )

    async def async_step_reconfigure_gateway(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Change a gateway entry's device id; its nodes follow the gateway that reports them."""
        entry = self._get_reconfigure_entry()
        current: str = entry.data[CONF_DEVICE_ID]
        errors: dict[str, str] = {}
        if (
            user_input is not None
            and (device_id := _gateway_device_id(user_input, errors)) is not None
        ):
            await self.async_set_unique_id(gateway_unique_id(device_id), raise_on_progress=False)
            if device_id != current:
                self._abort_if_unique_id_configured()
            return self.async_update_reload_and_abort(
                entry,
                unique_id=gateway_unique_id(device_id),
                # A title the user chose stays; the default one follows the id.
                title=device_id if entry.title == current else entry.title,
                data_updates={CONF_DEVICE_ID: device_id},
            )
        return self.async_show_form(
            step_id="reconfigure_gateway",
            data_schema=self.add_suggested_values_to_schema(
                self._gateway_schema(), user_input or {CONF_DEVICE_ID: current}
            ),
            errors=errors,
            description_placeholders={"name": entry.title},
        )

    def _gateway_schema(self) -> vol.Schema:
        """The device id field, offering the gateways heard from that have no entry yet."""
        hub = self.hass.data.get(DATA_IOT_HUB)
        configured = {
            entry.data.get(CONF_DEVICE_ID)
            for entry in self._async_current_entries(include_ignore=False)
        }
        heard = sorted(set(hub.gateways) - configured) if hub is not None else []
        return vol.Schema(
            {
                vol.Required(CONF_DEVICE_ID): SelectSelector(
                    SelectSelectorConfig(
                        options=heard, custom_value=True, mode=SelectSelectorMode.DROPDOWN
                    )
                )
            }
        )

    @callback
    def _async_create_gateway_entry(self, device_id: str) -> ConfigFlowResult:
        """The entry of a gateway, named after its device id."""
        return self.async_create_entry(
            title=device_id, data={CONF_KIND: EntryKind.GATEWAY, CONF_DEVICE_ID: device_id}
        )

    async def async_step_reauth(self, entry_data: Mapping[str, Any]) -> ConfigFlowResult:
        """The node refused the stored key, or the minting key may not mint: ask for a new one."""
        if entry_data.get(CONF_KIND) == EntryKind.LEDGER:
            return await self.async_step_reauth_ledger()
        return await self.async_step_reauth_confirm()

    async def async_step_reauth_ledger(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Check a new minting key against the token contracts and store it."""
        entry = self._get_reauth_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            data = {**entry.data, CONF_SECRET_KEY: user_input[CONF_SECRET_KEY].strip()}
            if await _async_try_stellar(self.hass, data, errors) is not None:
                return self.async_update_reload_and_abort(
                    entry, data_updates={CONF_SECRET_KEY: data[CONF_SECRET_KEY]}
                )
        return self.async_show_form(
            step_id="reauth_ledger",
            data_schema=SECRET_SCHEMA,
            errors=errors,
            description_placeholders={"name": entry.title},
        )

    async def async_step_reauth_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Check a new key against the entry's node and store it."""
        entry = self._get_reauth_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            key: str = user_input[CONF_KEY]
            hello = await _async_try_node(entry.data[CONF_HOST], entry.data[CONF_PORT], key, errors)
            if hello is not None:
                await self._async_abort_if_other_node(hello)
                return self.async_update_reload_and_abort(entry, data_updates={CONF_KEY: key})
        return self.async_show_form(
            step_id="reauth_confirm",
            data_schema=KEY_SCHEMA,
            errors=errors,
            description_placeholders={"name": entry.title},
        )

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Change the address or the key of a node; it must remain the same node."""
        entry = self._get_reconfigure_entry()
        if entry.data[CONF_KIND] == EntryKind.LEDGER:
            return await self.async_step_reconfigure_ledger()
        if entry.data[CONF_KIND] == EntryKind.GATEWAY:
            return await self.async_step_reconfigure_gateway()
        errors: dict[str, str] = {}
        if user_input is not None:
            host: str = user_input[CONF_HOST].strip()
            port: int = user_input[CONF_PORT]
            key: str = user_input[CONF_KEY]
            if (hello := await _async_try_node(host, port, key, errors)) is not None:
                await self._async_abort_if_other_node(hello)
                return self.async_update_reload_and_abort(
                    entry, data_updates={CONF_HOST: host, CONF_PORT: port, CONF_KEY: key}
                )
        return self.async_show_form(
            step_id="reconfigure",
            data_schema=self.add_suggested_values_to_schema(NODE_SCHEMA, user_input or entry.data),
            errors=errors,
            description_placeholders={"name": entry.title},
        )

    async def async_step_reconfigure_ledger(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Point the ledger at another RPC, network or contracts (the key stays)."""
        entry = self._get_reconfigure_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            data = {**_ledger_data(user_input), CONF_SECRET_KEY: entry.data[CONF_SECRET_KEY]}
            if await _async_try_stellar(self.hass, data, errors) is not None:
                return self.async_update_reload_and_abort(entry, data_updates=data)
        return self.async_show_form(
            step_id="reconfigure_ledger",
            data_schema=self.add_suggested_values_to_schema(
                LEDGER_RECONFIGURE_SCHEMA, user_input or dict(entry.data)
            ),
            errors=errors,
            description_placeholders={"name": entry.title},
        )

    async def _async_abort_if_other_node(self, hello: Hello) -> None:
        """Abort a reauth or reconfigure that reached a different node than its entry's."""
        # The entry is being edited, so a discovery of the same node waiting
        # elsewhere must not stop this flow.
        await self.async_set_unique_id(hello.uid, raise_on_progress=False)
        self._abort_if_unique_id_mismatch(
            reason="unique_id_mismatch", description_placeholders={"uid": hello.uid}
        )

    @callback
    def _async_create_node_entry(
        self, hello: Hello, *, host: str, port: int, key: str
    ) -> ConfigFlowResult:
        """The entry of a checked node, named after its uid."""
        return self.async_create_entry(
            title=hello.uid,
            data={CONF_KIND: EntryKind.NODE, CONF_HOST: host, CONF_PORT: port, CONF_KEY: key},
        )


class GridOptionsFlow(OptionsFlow):
    """Edit the auto-balance thresholds, each within its safe range."""

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Show the thresholds; refuse combinations the balancer cannot use."""
        errors: dict[str, str] = {}
        if user_input is not None:
            try:
                thresholds = BalanceThresholds.from_options(user_input)
            except PeerGridValidationError as err:
                errors[err.field] = "invalid_threshold"
            else:
                return self.async_create_entry(data=thresholds.as_dict())
        current = BalanceThresholds.from_options(self.config_entry.options).as_dict()
        schema = vol.Schema(
            {
                vol.Required(name): NumberSelector(
                    NumberSelectorConfig(
                        min=low,
                        max=high,
                        step=1,
                        unit_of_measurement="%",
                        mode=NumberSelectorMode.BOX,
                    )
                )
                for name, (low, high) in THRESHOLD_RANGES.items()
            }
        )
        return self.async_show_form(
            step_id="init",
            data_schema=self.add_suggested_values_to_schema(schema, user_input or current),
            errors=errors,
        )


class LedgerOptionsFlow(OptionsFlow):
    """Which Stellar account each node's tokens are minted to."""

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """The only step: the node accounts."""
        return await self.async_step_accounts()

    async def async_step_accounts(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """One line per node, ``NODE_UID = G...``; nodes not listed keep minting to the key."""
        errors: dict[str, str] = {}
        if user_input is not None:
            try:
                accounts = parse_node_accounts(user_input.get(CONF_NODE_ACCOUNTS, ""))
            except PeerGridValidationError as err:
                errors[CONF_NODE_ACCOUNTS] = "invalid_node_accounts"
                LOGGER.debug("Node accounts refused: %s", err)
            else:
                return self.async_create_entry(data={CONF_NODE_ACCOUNTS: accounts})
        current = format_node_accounts(self.config_entry.options.get(CONF_NODE_ACCOUNTS, {}))
        schema = vol.Schema(
            {vol.Optional(CONF_NODE_ACCOUNTS): TextSelector(TextSelectorConfig(multiline=True))}
        )
        return self.async_show_form(
            step_id="accounts",
            data_schema=self.add_suggested_values_to_schema(
                schema, user_input or {CONF_NODE_ACCOUNTS: current}
            ),
            errors=errors,
        )
