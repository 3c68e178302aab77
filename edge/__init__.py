"""The PeerGrid edge gateway: nodes on one side, Home Assistant on the other.

It runs on a Raspberry Pi beside the batteries (``python -m edge --config
gateway.yaml``): it holds a protocol connection to every node it owns, tells
Home Assistant about them (heartbeat and node-data pings), carries out the
scheduler's commands with leases, reports completed transfers and keeps every
report in a SQLite outbox until Home Assistant has taken it.
"""

from __future__ import annotations

from typing import Final

__version__: Final = "0.1.0"
"""The gateway software's version, sent in DePIN registrations and zeroconf TXT records."""

SOURCE_NAME: Final = "rpi_energy_grid"
"""The ``source`` of every node-data ping this gateway sends."""
