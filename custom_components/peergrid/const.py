"""Constants of the PeerGrid integration."""

from __future__ import annotations

from enum import StrEnum
import logging
from typing import Final

DOMAIN: Final = "peergrid"
LOGGER = logging.getLogger(__package__)

MANUFACTURER: Final = "PeerGrid"
NODE_MODEL: Final = "Battery node (ESP32, 18650, INA219)"

CONF_KEY: Final = "key"
"""The node's pre-shared key, as text (its UTF-8 bytes are the key)."""
CONF_KIND: Final = "kind"
"""Which kind of config entry this is; see :class:`EntryKind`."""
CONF_DEVICE_ID: Final = "device_id"
"""A gateway entry's gateway: its ``device_id`` (also the TXT key it announces)."""

GATEWAY_MODEL: Final = "Edge gateway (Raspberry Pi)"

ENERGY_TOKEN_UNIT: Final = "ENRG"  # noqa: S105 - a unit symbol, not a secret
"""Unit of energy tokens (one token is one watt-hour at quality factor 1)."""
REWARD_TOKEN_UNIT: Final = "LT"  # noqa: S105 - a unit symbol, not a secret
"""Unit of DePIN reward tokens."""


class EntryKind(StrEnum):
    """The kinds of PeerGrid config entries.

    A node entry talks to one directly reachable node. A gateway entry (found
    over zeroconf) follows an edge gateway, a Raspberry Pi that reports
    several nodes over HTTP; each node becomes a device ``via_device`` the
    gateway, with its voltage, battery and state sensors.
    The one grid entry holds grid-wide settings (balance thresholds) and
    sensors; the integration creates it with the first node. The optional
    ledger entry anchors the embedded ledger's mints on Stellar Soroban.
    """

    NODE = "node"
    GATEWAY = "gateway"
    GRID = "grid"
    LEDGER = "ledger"


LEASE_SECONDS: Final = 30
"""Lease Home Assistant asks for when it switches a relay on; renewed at a third of it."""

EVENT_TRANSFER_STARTED: Final = "peergrid_transfer_started"
EVENT_TRANSFER_PROGRESS: Final = "peergrid_transfer_progress"
EVENT_TRANSFER_COMPLETED: Final = "peergrid_transfer_completed"
EVENT_TRANSFER_ABORTED: Final = "peergrid_transfer_aborted"

GRID_UNIQUE_ID: Final = "grid"
"""Unique id of the one grid entry (grid-wide settings and entities)."""


def gateway_unique_id(device_id: str) -> str:
    """The unique id of the config entry of gateway ``device_id``.

    The colon cannot appear in a device id, a node uid or ``grid``, so the
    three kinds of entries never share a unique id.
    """
    return f"gateway:{device_id}"
