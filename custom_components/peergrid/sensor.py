"""Sensors of a PeerGrid node: electrical values, energy counters, state and diagnostics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any, cast

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import (
    PERCENTAGE,
    SIGNAL_STRENGTH_DECIBELS_MILLIWATT,
    EntityCategory,
    UnitOfElectricCurrent,
    UnitOfElectricPotential,
    UnitOfEnergy,
    UnitOfMass,
    UnitOfPower,
    UnitOfTime,
)
from homeassistant.core import HomeAssistant
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.typing import StateType

from .const import (
    CONF_KIND,
    DOMAIN,
    ENERGY_TOKEN_UNIT,
    GRID_UNIQUE_ID,
    REWARD_TOKEN_UNIT,
    EntryKind,
)
from .coordinator import NodeData, PeerGridConfigEntry, PeerGridNodeCoordinator
from .entity import (
    PeerGridGatewayNodeEntity,
    PeerGridNodeEntity,
    async_setup_gateway_node_entities,
    grid_device_info,
)
from .gateway import PeerGridGatewayConfigEntry, PeerGridGatewayCoordinator
from .grid import DATA_GRID, PeerGridGrid
from .iot_hub import DATA_IOT_HUB
from .ledger import DATA_LEDGER, PeerGridLedger
from .peergrid_core.payloads import NodeDetail, NodeState as PingNodeState, NodeTelemetry
from .peergrid_core.protocol import NodeState, TripReason
from .peergrid_core.stability import voltage_stability_score

# Read-only platform: the coordinator pushes, so no update concurrency to limit.
PARALLEL_UPDATES = 0


@dataclass(frozen=True, kw_only=True)
class PeerGridSensorEntityDescription(SensorEntityDescription):
    """A node sensor: how to read its value from the node's data."""

    value_fn: Callable[[NodeData], StateType]
    grid_value_fn: Callable[[PeerGridGrid, str], StateType] | None = None
    """Reads the value from the grid (transfers) instead of the node's status."""


def _scaled(value: int | None, divisor: int) -> float | None:
    return None if value is None else value / divisor


def _stability(data: NodeData) -> float | None:
    volts = _scaled(data.status.mv, 1000)
    return None if volts is None else round(voltage_stability_score(volts), 1)


SENSORS: tuple[PeerGridSensorEntityDescription, ...] = (
    PeerGridSensorEntityDescription(
        key="voltage",
        device_class=SensorDeviceClass.VOLTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=UnitOfElectricPotential.MILLIVOLT,
        suggested_unit_of_measurement=UnitOfElectricPotential.VOLT,
        suggested_display_precision=2,
        value_fn=lambda data: data.status.mv,
    ),
    PeerGridSensorEntityDescription(
        key="current",
        device_class=SensorDeviceClass.CURRENT,
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=UnitOfElectricCurrent.MILLIAMPERE,
        suggested_unit_of_measurement=UnitOfElectricCurrent.AMPERE,
        suggested_display_precision=2,
        value_fn=lambda data: data.status.ma,
    ),
    PeerGridSensorEntityDescription(
        key="power",
        device_class=SensorDeviceClass.POWER,
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=UnitOfPower.MILLIWATT,
        suggested_unit_of_measurement=UnitOfPower.WATT,
        suggested_display_precision=2,
        value_fn=lambda data: data.status.mw,
    ),
    PeerGridSensorEntityDescription(
        key="battery",
        device_class=SensorDeviceClass.BATTERY,
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=PERCENTAGE,
        suggested_display_precision=1,
        value_fn=lambda data: _scaled(data.status.soc, 10),
    ),
    PeerGridSensorEntityDescription(
        key="energy_supplied",
        translation_key="energy_supplied",
        device_class=SensorDeviceClass.ENERGY,
        state_class=SensorStateClass.TOTAL_INCREASING,
        native_unit_of_measurement=UnitOfEnergy.WATT_HOUR,
        suggested_unit_of_measurement=UnitOfEnergy.KILO_WATT_HOUR,
        suggested_display_precision=3,
        value_fn=lambda data: _scaled(data.status.e_out_mwh, 1000),
    ),
    PeerGridSensorEntityDescription(
        key="energy_received",
        translation_key="energy_received",
        device_class=SensorDeviceClass.ENERGY,
        state_class=SensorStateClass.TOTAL_INCREASING,
        native_unit_of_measurement=UnitOfEnergy.WATT_HOUR,
        suggested_unit_of_measurement=UnitOfEnergy.KILO_WATT_HOUR,
        suggested_display_precision=3,
        value_fn=lambda data: _scaled(data.status.e_in_mwh, 1000),
    ),
    PeerGridSensorEntityDescription(
        key="node_state",
        translation_key="node_state",
        device_class=SensorDeviceClass.ENUM,
        options=[state.value for state in NodeState],
        value_fn=lambda data: data.status.state.value,
    ),
    PeerGridSensorEntityDescription(
        key="last_trip",
        translation_key="last_trip",
        device_class=SensorDeviceClass.ENUM,
        options=[reason.value for reason in TripReason],
        value_fn=lambda data: data.status.last_trip.value if data.status.last_trip else None,
    ),
    PeerGridSensorEntityDescription(
        key="stability_score",
        translation_key="stability_score",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=_stability,
    ),
    PeerGridSensorEntityDescription(
        key="rssi",
        device_class=SensorDeviceClass.SIGNAL_STRENGTH,
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=SIGNAL_STRENGTH_DECIBELS_MILLIWATT,
        entity_category=EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=False,
        value_fn=lambda data: data.status.rssi,
    ),
    PeerGridSensorEntityDescription(
        key="uptime",
        translation_key="uptime",
        device_class=SensorDeviceClass.DURATION,
        native_unit_of_measurement=UnitOfTime.SECONDS,
        suggested_unit_of_measurement=UnitOfTime.HOURS,
        entity_category=EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=False,
        value_fn=lambda data: data.status.uptime_s,
    ),
    PeerGridSensorEntityDescription(
        key="firmware",
        translation_key="firmware",
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda data: data.status.fw,
    ),
    PeerGridSensorEntityDescription(
        key="protocol_version",
        translation_key="protocol_version",
        entity_category=EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=False,
        value_fn=lambda data: data.hello.proto,
    ),
    PeerGridSensorEntityDescription(
        key="lease_left",
        translation_key="lease_left",
        device_class=SensorDeviceClass.DURATION,
        native_unit_of_measurement=UnitOfTime.SECONDS,
        entity_category=EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=False,
        value_fn=lambda data: data.status.lease_left_s,
    ),
)


def _moved(grid: PeerGridGrid, uid: str) -> float | None:
    record = grid.active_transfer(uid)
    if record is None:
        return None
    return record.wh_out if record.sender == uid else record.wh_in


def _progress(grid: PeerGridGrid, uid: str) -> float | None:
    record = grid.active_transfer(uid)
    if record is None or record.progress_pct is None:
        return None
    return round(record.progress_pct, 1)


def _no_status(data: NodeData) -> StateType:
    return None


TRANSFER_SENSORS: tuple[PeerGridSensorEntityDescription, ...] = (
    PeerGridSensorEntityDescription(
        key="transfer_progress",
        translation_key="transfer_progress",
        native_unit_of_measurement=PERCENTAGE,
        suggested_display_precision=0,
        value_fn=_no_status,
        grid_value_fn=_progress,
    ),
    PeerGridSensorEntityDescription(
        key="energy_moved",
        translation_key="energy_moved",
        device_class=SensorDeviceClass.ENERGY,
        native_unit_of_measurement=UnitOfEnergy.WATT_HOUR,
        suggested_display_precision=2,
        value_fn=_no_status,
        grid_value_fn=_moved,
    ),
    PeerGridSensorEntityDescription(
        key="energy_shared",
        translation_key="energy_shared",
        device_class=SensorDeviceClass.ENERGY,
        state_class=SensorStateClass.TOTAL_INCREASING,
        native_unit_of_measurement=UnitOfEnergy.WATT_HOUR,
        suggested_unit_of_measurement=UnitOfEnergy.KILO_WATT_HOUR,
        suggested_display_precision=3,
        value_fn=_no_status,
        grid_value_fn=lambda grid, uid: round(grid.totals(uid).shared_wh, 3),
    ),
    PeerGridSensorEntityDescription(
        key="energy_received_from_peers",
        translation_key="energy_received_from_peers",
        device_class=SensorDeviceClass.ENERGY,
        state_class=SensorStateClass.TOTAL_INCREASING,
        native_unit_of_measurement=UnitOfEnergy.WATT_HOUR,
        suggested_unit_of_measurement=UnitOfEnergy.KILO_WATT_HOUR,
        suggested_display_precision=3,
        value_fn=_no_status,
        grid_value_fn=lambda grid, uid: round(grid.totals(uid).received_wh, 3),
    ),
)


@dataclass(frozen=True, kw_only=True)
class PeerGridGridSensorEntityDescription(SensorEntityDescription):
    """A grid-wide sensor: how to read it from the grid."""

    value_fn: Callable[[PeerGridGrid], StateType]


GRID_SENSORS: tuple[PeerGridGridSensorEntityDescription, ...] = (
    PeerGridGridSensorEntityDescription(
        key="soc_spread",
        translation_key="soc_spread",
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=PERCENTAGE,
        suggested_display_precision=1,
        value_fn=lambda grid: grid.soc_spread,
    ),
    PeerGridGridSensorEntityDescription(
        key="active_transfers",
        translation_key="active_transfers",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda grid: grid.active_count,
    ),
    PeerGridGridSensorEntityDescription(
        key="nodes_online",
        translation_key="nodes_online",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda grid: sum(1 for node in grid.node_socs() if node.online),
    ),
)


def _always(node: NodeDetail) -> bool:
    return True


def _metered(node: NodeDetail) -> bool:
    return node.telemetry is not None


@dataclass(frozen=True, kw_only=True)
class PeerGridGatewayNodeSensorEntityDescription(SensorEntityDescription):
    """A sensor of a node behind a gateway: how to read it from the gateway's node data."""

    value_fn: Callable[[NodeDetail], StateType]
    exists_fn: Callable[[NodeDetail], bool] = _always
    """Whether the node has this sensor (the telemetry ones need the ping's extension)."""

    grid_value_fn: Callable[[PeerGridGrid, str], StateType] | None = None
    """Reads the value from the grid (transfers through the gateway) instead."""


GATEWAY_NODE_STATES: dict[PingNodeState, NodeState] = {
    PingNodeState.IDLE: NodeState.IDLE,
    PingNodeState.SUPPLY: NodeState.SUPPLYING,
    PingNodeState.RECEIVE: NodeState.RECEIVING,
}
"""The gateway's relay tokens as the node states a direct node reports.

A gateway never reports ``tripped`` (a tripped node reads ``IDLE`` there), so
its node-state sensor has the three states below."""


def _no_reading(node: NodeDetail) -> StateType:
    return None


def _like(
    key: str,
    *,
    value_fn: Callable[[NodeDetail], StateType] = _no_reading,
    exists_fn: Callable[[NodeDetail], bool] = _always,
) -> PeerGridGatewayNodeSensorEntityDescription:
    """The gateway node's twin of the direct node's sensor ``key``: same name, units and class.

    Only where the value comes from differs: the gateway's reading of the
    node (``value_fn``), or the grid's transfers as for the direct node.
    """
    original = next(d for d in (*SENSORS, *TRANSFER_SENSORS) if d.key == key)
    shown: dict[str, Any] = {
        field.name: getattr(original, field.name)
        for field in fields(original)
        if field.name not in ("value_fn", "grid_value_fn")
    }
    return PeerGridGatewayNodeSensorEntityDescription(
        **shown, value_fn=value_fn, exists_fn=exists_fn, grid_value_fn=original.grid_value_fn
    )


def _telemetry_value(
    read: Callable[[NodeTelemetry], int | None], divisor: int | None = None
) -> Callable[[NodeDetail], StateType]:
    """Reads a telemetry value of the node, in the direct node's unit (``divisor`` applied)."""

    def value(node: NodeDetail) -> StateType:
        if node.telemetry is None or (reading := read(node.telemetry)) is None:
            return None
        return reading if divisor is None else reading / divisor

    return value


GATEWAY_NODE_SENSORS: tuple[PeerGridGatewayNodeSensorEntityDescription, ...] = (
    PeerGridGatewayNodeSensorEntityDescription(
        key="voltage",
        device_class=SensorDeviceClass.VOLTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=UnitOfElectricPotential.VOLT,
        suggested_display_precision=2,
        value_fn=lambda node: node.voltage,
    ),
    PeerGridGatewayNodeSensorEntityDescription(
        key="battery",
        device_class=SensorDeviceClass.BATTERY,
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=PERCENTAGE,
        suggested_display_precision=1,
        value_fn=lambda node: node.soc,
    ),
    PeerGridGatewayNodeSensorEntityDescription(
        key="node_state",
        translation_key="node_state",
        device_class=SensorDeviceClass.ENUM,
        options=[state.value for state in GATEWAY_NODE_STATES.values()],
        value_fn=lambda node: GATEWAY_NODE_STATES[node.state].value,
    ),
    _like("current", value_fn=_telemetry_value(lambda t: t.ma), exists_fn=_metered),
    _like("power", value_fn=_telemetry_value(lambda t: t.mw), exists_fn=_metered),
    _like(
        "energy_supplied",
        value_fn=_telemetry_value(lambda t: t.e_out_mwh, 1000),
        exists_fn=_metered,
    ),
    _like(
        "energy_received",
        value_fn=_telemetry_value(lambda t: t.e_in_mwh, 1000),
        exists_fn=_metered,
    ),
    _like(
        "stability_score",
        value_fn=lambda node: round(voltage_stability_score(node.voltage), 1),
    ),
    *(_like(description.key) for description in TRANSFER_SENSORS),
)
"""The sensors of a node behind a gateway: the direct node's, where the ping carries them.

The node's own protocol details (signal, uptime, firmware, lease) do not
reach Home Assistant through a gateway; the energy counters, current and
power come with the ping's telemetry extension."""


async def async_setup_entry(
    hass: HomeAssistant,
    entry: PeerGridConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the sensors of the entry's node or gateway, or the grid entry's grid-wide sensors."""
    grid = hass.data[DATA_GRID]
    if entry.data[CONF_KIND] == EntryKind.GRID:
        async_add_entities(PeerGridGridSensor(grid, description) for description in GRID_SENSORS)
        ledger = hass.data[DATA_LEDGER]
        async_add_entities(
            PeerGridLedgerSensor(ledger, description, grid_device_info(), GRID_UNIQUE_ID)
            for description in LEDGER_SENSORS
        )
        return
    if entry.data[CONF_KIND] == EntryKind.GATEWAY:
        # Gateway entries carry a gateway coordinator (see __init__.py).
        gateway = cast("PeerGridGatewayConfigEntry", entry)
        _async_setup_gateway_sensors(gateway, async_add_entities, grid)
        device_id = gateway.runtime_data.device_id
        async_add_entities(
            PeerGridLedgerSensor(
                hass.data[DATA_LEDGER],
                description,
                DeviceInfo(identifiers={(DOMAIN, device_id)}),
                device_id,
            )
            for description in REWARD_SENSORS
        )
        return
    coordinator = entry.runtime_data
    async_add_entities(
        PeerGridSensor(coordinator, description, grid)
        for description in (*SENSORS, *TRANSFER_SENSORS)
    )


class PeerGridSensor(PeerGridNodeEntity, SensorEntity):
    """A sensor of a PeerGrid node."""

    entity_description: PeerGridSensorEntityDescription

    def __init__(
        self,
        coordinator: PeerGridNodeCoordinator,
        description: PeerGridSensorEntityDescription,
        grid: PeerGridGrid,
    ) -> None:
        """Keep the grid for the sensors that read transfers."""
        super().__init__(coordinator, description)
        self._grid = grid

    @property
    def available(self) -> bool:
        """Transfer totals are Home Assistant's records, available while the node is away."""
        if self.entity_description.state_class is SensorStateClass.TOTAL_INCREASING and (
            self.entity_description.grid_value_fn is not None
        ):
            return True
        return super().available

    @property
    def native_value(self) -> StateType:
        """The value from the node's latest status, or from the grid's transfers."""
        if (grid_value := self.entity_description.grid_value_fn) is not None:
            return grid_value(self._grid, self.coordinator.uid)
        return self.entity_description.value_fn(self.coordinator.data)


def _async_setup_gateway_sensors(
    entry: PeerGridGatewayConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
    grid: PeerGridGrid,
) -> None:
    """Add the sensors of the gateway's nodes now, and of every node that joins later."""

    def _sensors(
        coordinator: PeerGridGatewayCoordinator, node: NodeDetail
    ) -> list[PeerGridGatewayNodeSensor]:
        return [
            PeerGridGatewayNodeSensor(coordinator, node.uid, description, grid)
            for description in GATEWAY_NODE_SENSORS
            if description.exists_fn(node)
        ]

    async_setup_gateway_node_entities(entry, async_add_entities, _sensors)


class PeerGridGatewayNodeSensor(PeerGridGatewayNodeEntity, SensorEntity):
    """A sensor of a node, read from its gateway's node-data pings (or the grid's transfers)."""

    entity_description: PeerGridGatewayNodeSensorEntityDescription

    def __init__(
        self,
        coordinator: PeerGridGatewayCoordinator,
        uid: str,
        description: PeerGridGatewayNodeSensorEntityDescription,
        grid: PeerGridGrid,
    ) -> None:
        """Identify the sensor by gateway, node and description; keep the grid for transfers."""
        super().__init__(coordinator, uid, description)
        self._grid = grid

    @property
    def available(self) -> bool:
        """Transfer totals are Home Assistant's records, available while the node is away."""
        description = self.entity_description
        if (
            description.state_class is SensorStateClass.TOTAL_INCREASING
            and description.grid_value_fn is not None
        ):
            return True
        return super().available

    @property
    def native_value(self) -> StateType:
        """The value from the gateway's latest reading of the node, or from the grid."""
        if (grid_value := self.entity_description.grid_value_fn) is not None:
            return grid_value(self._grid, self.uid)
        node = self.node
        return None if node is None else self.entity_description.value_fn(node)


class PeerGridGridSensor(SensorEntity):
    """A grid-wide sensor on the grid device."""

    _attr_has_entity_name = True
    _attr_should_poll = False
    entity_description: PeerGridGridSensorEntityDescription

    def __init__(
        self, grid: PeerGridGrid, description: PeerGridGridSensorEntityDescription
    ) -> None:
        """Identify the sensor under the grid device."""
        self.entity_description = description
        self._grid = grid
        self._attr_unique_id = f"{GRID_UNIQUE_ID}_{description.key}"
        self._attr_device_info = grid_device_info()

    async def async_added_to_hass(self) -> None:
        """Follow the grid's changes and the nodes' pushes."""
        self.async_on_remove(self._grid.async_add_listener(self.async_write_ha_state))

    @property
    def native_value(self) -> StateType:
        """The grid's current value."""
        return self.entity_description.value_fn(self._grid)


# ------------------------------------------------------------ ledger


@dataclass(frozen=True, kw_only=True)
class PeerGridLedgerSensorEntityDescription(SensorEntityDescription):
    """A ledger sensor: how to read it for an account (the grid's, or a gateway's)."""

    value_fn: Callable[[PeerGridLedger, str], StateType | Decimal]
    unit_fn: Callable[[PeerGridLedger], str] | None = None


def _reliability(ledger: PeerGridLedger, device_id: str) -> float | None:
    hub = ledger.hass.data.get(DATA_IOT_HUB)
    node = hub.depin.node(device_id) if hub is not None else None
    return None if node is None else node.reliability_pct


LEDGER_SENSORS: tuple[PeerGridLedgerSensorEntityDescription, ...] = (
    PeerGridLedgerSensorEntityDescription(
        key="tokens_minted",
        translation_key="tokens_minted",
        state_class=SensorStateClass.TOTAL_INCREASING,
        native_unit_of_measurement=ENERGY_TOKEN_UNIT,
        suggested_display_precision=3,
        value_fn=lambda ledger, _: ledger.service.totals().tokens_minted,
    ),
    PeerGridLedgerSensorEntityDescription(
        key="carbon_saved",
        translation_key="carbon_saved",
        device_class=SensorDeviceClass.WEIGHT,
        state_class=SensorStateClass.TOTAL_INCREASING,
        native_unit_of_measurement=UnitOfMass.KILOGRAMS,
        suggested_display_precision=4,
        value_fn=lambda ledger, _: ledger.service.totals().carbon_kg_credited,
    ),
    PeerGridLedgerSensorEntityDescription(
        key="carbon_retired",
        translation_key="carbon_retired",
        device_class=SensorDeviceClass.WEIGHT,
        state_class=SensorStateClass.TOTAL_INCREASING,
        native_unit_of_measurement=UnitOfMass.KILOGRAMS,
        suggested_display_precision=4,
        value_fn=lambda ledger, _: ledger.service.totals().carbon_kg_retired,
    ),
    PeerGridLedgerSensorEntityDescription(
        key="market_price",
        translation_key="market_price",
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=4,
        value_fn=lambda ledger, _: ledger.price_now(),
        unit_fn=lambda ledger: f"{ledger.service.pricing.currency}/{UnitOfEnergy.KILO_WATT_HOUR}",
    ),
    PeerGridLedgerSensorEntityDescription(
        key="open_sell_orders",
        translation_key="open_sell_orders",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda ledger, _: ledger.service.totals().open_orders,
    ),
)
"""Ledger totals on the grid device."""

REWARD_SENSORS: tuple[PeerGridLedgerSensorEntityDescription, ...] = (
    PeerGridLedgerSensorEntityDescription(
        key="reward_balance",
        translation_key="reward_balance",
        state_class=SensorStateClass.TOTAL_INCREASING,
        native_unit_of_measurement=REWARD_TOKEN_UNIT,
        suggested_display_precision=0,
        value_fn=lambda ledger, device_id: ledger.service.totals().rewards_paid.get(
            device_id, Decimal(0)
        ),
    ),
    PeerGridLedgerSensorEntityDescription(
        key="reliability",
        translation_key="reliability",
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=PERCENTAGE,
        suggested_display_precision=1,
        value_fn=_reliability,
    ),
)
"""DePIN rewards paid to a gateway and its uptime reliability, on the gateway's device."""


class PeerGridLedgerSensor(SensorEntity):
    """A sensor of the ledger: grid-wide totals, or one gateway's rewards."""

    _attr_has_entity_name = True
    _attr_should_poll = False
    entity_description: PeerGridLedgerSensorEntityDescription

    def __init__(
        self,
        ledger: PeerGridLedger,
        description: PeerGridLedgerSensorEntityDescription,
        device_info: DeviceInfo,
        account: str,
    ) -> None:
        """Identify the sensor on ``device_info``, reading the ledger for ``account``."""
        self.entity_description = description
        self._ledger = ledger
        self._account = account
        self._attr_unique_id = f"{account}_{description.key}"
        self._attr_device_info = device_info

    async def async_added_to_hass(self) -> None:
        """Follow the ledger, and the grid too (the market price moves with the nodes' SoC)."""
        self.async_on_remove(self._ledger.async_add_listener(self.async_write_ha_state))
        self.async_on_remove(
            self.hass.data[DATA_GRID].async_add_listener(self.async_write_ha_state)
        )

    @property
    def native_unit_of_measurement(self) -> str | None:
        """The unit; the market price's follows the configured currency."""
        if (unit_fn := self.entity_description.unit_fn) is not None:
            return unit_fn(self._ledger)
        return self.entity_description.native_unit_of_measurement

    @property
    def native_value(self) -> StateType | Decimal:
        """The ledger's current value for this sensor's account, exact and without padding."""
        value = self.entity_description.value_fn(self._ledger, self._account)
        if isinstance(value, Decimal):
            # 4.5000000 reads 4.5 and 100 stays 100 (normalize alone would give 1E+2).
            return value.quantize(Decimal(1)) if value == value.to_integral() else value.normalize()
        return value
