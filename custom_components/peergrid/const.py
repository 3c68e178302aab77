"""Constants of the PeerGrid integration."""

from __future__ import annotations

import logging
from typing import Final

DOMAIN: Final = "peergrid"
LOGGER = logging.getLogger(__package__)
