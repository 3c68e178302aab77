"""Sensors of a PeerGrid node: electrical values, energy counters, state and diagnostics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
    UnitOfPower,
    UnitOfTime,
)
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.typing import StateType

from .coordinator import NodeData, PeerGridConfigEntry
from .entity import PeerGridNodeEntity
from .peergrid_core.protocol import NodeState, TripReason
from .peergrid_core.stability import voltage_stability_score

# Read-only platform: the coordinator pushes, so no update concurrency to limit.
PARALLEL_UPDATES = 0


@dataclass(frozen=True, kw_only=True)
class PeerGridSensorEntityDescription(SensorEntityDescription):
    """A node sensor: how to read its value from the node's data."""

    value_fn: Callable[[NodeData], StateType]


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


async def async_setup_entry(
    hass: HomeAssistant,
    entry: PeerGridConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the sensors of the entry's node."""
    coordinator = entry.runtime_data
    async_add_entities(PeerGridSensor(coordinator, description) for description in SENSORS)


class PeerGridSensor(PeerGridNodeEntity, SensorEntity):
    """A sensor of a PeerGrid node."""

    entity_description: PeerGridSensorEntityDescription

    @property
    def native_value(self) -> StateType:
        """The value from the node's latest status."""
        return self.entity_description.value_fn(self.coordinator.data)
