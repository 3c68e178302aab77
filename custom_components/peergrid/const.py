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


class EntryKind(StrEnum):
    """The kinds of PeerGrid config entries.

    A node entry talks to one directly reachable node. A gateway entry (added
    with the edge gateway) reaches several nodes through a Raspberry Pi; its
    nodes become devices ``via_device`` the gateway, with the same entities.
    """

    NODE = "node"
    GATEWAY = "gateway"


LEASE_SECONDS: Final = 30
"""Lease Home Assistant asks for when it switches a relay on; renewed at a third of it."""
