"""The PeerGrid Lovelace dashboard and the helpers behind its transfer form.

A Lovelace dashboard names entities one by one, so it is written for a given
set of nodes: :func:`dashboard` builds it, :func:`package` builds the Home
Assistant package with the form's helpers (sender, receiver, energy) and the
script that starts the transfer. Both use only Home Assistant's built-in cards
and integrations, so nothing has to be installed besides PeerGrid.

``python -m demo.dashboard --node NODE_A --node NODE_B --output-dir DIR``
writes ``DIR/peergrid.yaml`` (the dashboard) and ``DIR/peergrid_package.yaml``
(the package) for your own nodes; the files in the repository's
``dashboards/`` folder are its output for the demo's nodes.

Entity ids follow from the names Home Assistant gives PeerGrid's entities when
it first sees a node: ``<domain>.<node uid, slugified>_<entity name>``, for
example ``sensor.node_a_battery``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
import sys
from typing import Any, Final

from homeassistant.util import slugify
import yaml

__all__ = [
    "DASHBOARD_FILE",
    "DASHBOARD_TITLE",
    "DASHBOARD_URL_PATH",
    "DEFAULT_HISTORY_HOURS",
    "DEMO_GATEWAY_NODES",
    "DEMO_NODES",
    "GRID_ENTITIES",
    "PACKAGE_FILE",
    "SCRIPT_START_TRANSFER",
    "VIEW_PATH",
    "Layout",
    "dashboard",
    "main",
    "node_entity",
    "package",
    "render",
    "write",
]

type Card = dict[str, Any]
type Config = dict[str, Any]

DASHBOARD_FILE: Final = "peergrid.yaml"
PACKAGE_FILE: Final = "peergrid_package.yaml"
DASHBOARD_TITLE: Final = "PeerGrid"
DASHBOARD_URL_PATH: Final = "peergrid-grid"
"""Where the dashboard lives in Home Assistant (a dashboard's path needs a hyphen)."""
VIEW_PATH: Final = "grid"

DEMO_NODES: Final = ("NODE_A", "NODE_B", "NODE_C", "NODE_D")
"""The nodes the demo connects directly (and that ``dashboards/`` is written for)."""
DEMO_GATEWAY: Final = "garage-gateway"
DEMO_GATEWAY_NODES: Final = ("GARAGE_1", "GARAGE_2")
"""The nodes the demo's edge gateway reports."""

GRID_SENSORS: Final = {
    "sensor.peergrid_grid_nodes_online": "Nodes online",
    "sensor.peergrid_grid_active_transfers": "Active transfers",
    "sensor.peergrid_grid_soc_spread": "SoC spread",
}
"""The grid device's sensors (the grid entry is named "PeerGrid grid") and their short names."""
GRID_ENTITIES: Final = tuple(GRID_SENSORS)

DEFAULT_HISTORY_HOURS: Final = 24.0
MAX_HISTORY_HOURS: Final = 24.0 * 31

SENDER: Final = "input_select.peergrid_sender"
RECEIVER: Final = "input_select.peergrid_receiver"
ENERGY: Final = "input_number.peergrid_transfer_energy"
SCRIPT_START_TRANSFER: Final = "script.peergrid_start_transfer"

# The balancer's default thresholds (critical 20 %, low 40 %): the gauges turn
# red where a node is served first and yellow where it should receive.
_SEVERITY: Final = {"green": 40, "yellow": 20, "red": 0}
_HEADER: Final = (
    "# Written by `python -m demo.dashboard`: regenerate it for your own nodes rather than\n"
    "# editing it (docs/home-assistant.md, section Dashboard).\n"
)


class _Dumper(yaml.SafeDumper):
    """Plain YAML for people: no anchors and aliases for repeated values."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


@dataclass(frozen=True, kw_only=True, slots=True)
class Layout:
    """Which nodes the dashboard shows.

    ``nodes`` are configured directly (node entries: full control and
    transfers); ``gateway_nodes`` are reported by an edge gateway (telemetry
    only). Uids are the nodes' own, as in their hello.
    """

    nodes: tuple[str, ...]
    gateway_nodes: tuple[str, ...] = ()
    history_hours: float = DEFAULT_HISTORY_HOURS
    """How far back the history graphs reach."""

    def __post_init__(self) -> None:
        """Refuse layouts that cannot make a dashboard."""
        if not 0 < self.history_hours <= MAX_HISTORY_HOURS:
            raise ValueError(
                f"history_hours: {self.history_hours} is outside 0 < hours <= {MAX_HISTORY_HOURS}"
            )
        if not self.nodes:
            raise ValueError("nodes: at least one directly configured node is needed")
        every = [*self.nodes, *self.gateway_nodes]
        slugs = [slugify(uid) for uid in every]
        if len(set(slugs)) != len(slugs):
            raise ValueError(f"nodes: two uids give the same entity ids in {every}")


def node_entity(domain: str, uid: str, name: str) -> str:
    """The entity id Home Assistant gives a node's entity named ``name``."""
    return f"{domain}.{slugify(uid)}_{slugify(name)}"


def _tile(entity: str, **extra: Any) -> Card:
    return {"type": "tile", "entity": entity, **extra}


def _heading(text: str, icon: str, **extra: Any) -> Card:
    return {"type": "heading", "heading": text, "icon": icon, **extra}


def _action_button(name: str, icon: str, action: str) -> Card:
    return {
        "type": "button",
        "name": name,
        "icon": icon,
        "show_state": False,
        "tap_action": {"action": "perform-action", "perform_action": action},
        "grid_options": {"columns": 6, "rows": 2},
    }


def _grid_section(layout: Layout) -> Config:
    """The grid-wide sensors and the grid-wide actions."""
    return {
        "type": "grid",
        "cards": [
            _heading("Grid", "mdi:transmission-tower"),
            *(
                _tile(entity, name=name, grid_options={"columns": 4})
                for entity, name in GRID_SENSORS.items()
            ),
            _action_button("Auto-balance", "mdi:scale-balance", "peergrid.auto_balance"),
            _action_button(
                "Stop all transfers", "mdi:stop-circle-outline", "peergrid.stop_transfer"
            ),
        ],
    }


def _transfer_form_section() -> Config:
    """Pick a sender, a receiver and an amount; the button runs the package's script."""
    return {
        "type": "grid",
        "cards": [
            _heading("Send energy", "mdi:battery-sync"),
            _tile(SENDER, features=[{"type": "select-options"}], grid_options={"columns": 6}),
            _tile(RECEIVER, features=[{"type": "select-options"}], grid_options={"columns": 6}),
            _tile(
                ENERGY,
                features=[{"type": "numeric-input", "style": "buttons"}],
                grid_options={"columns": 6},
            ),
            _action_button("Start transfer", "mdi:send", SCRIPT_START_TRANSFER),
        ],
    }


def _transfers_section(layout: Layout) -> Config:
    """Live progress of the running transfers; a note while none runs."""
    cards: list[Card] = [
        _heading("Transfers", "mdi:transfer"),
        {
            "type": "markdown",
            "content": "No transfer is running. Start one above, or let *Auto-balance* pair "
            "the fullest and the emptiest batteries.",
            "visibility": [
                {
                    "condition": "state",
                    "entity": "sensor.peergrid_grid_active_transfers",
                    "state": "0",
                }
            ],
        },
    ]
    for uid in layout.nodes:
        progress = node_entity("sensor", uid, "Transfer progress")
        moved = node_entity("sensor", uid, "Energy moved")
        # The sensors have a number only while the node is in a transfer.
        running = [{"condition": "numeric_state", "entity": progress, "above": -1}]
        cards.append(
            {
                "type": "gauge",
                "entity": progress,
                "name": f"{uid} progress",
                "min": 0,
                "max": 100,
                "visibility": running,
                "grid_options": {"columns": 6},
            }
        )
        cards.append(
            _tile(moved, name=f"{uid} moved", visibility=running, grid_options={"columns": 6})
        )
    return {"type": "grid", "cards": cards}


def _battery_gauge(uid: str) -> Card:
    return {
        "type": "gauge",
        "entity": node_entity("sensor", uid, "Battery"),
        "name": "State of charge",
        "min": 0,
        "max": 100,
        "needle": True,
        "severity": dict(_SEVERITY),
        "grid_options": {"columns": 12, "rows": 3},
    }


def _node_section(uid: str) -> Config:
    """One directly configured node: SoC gauge, voltage, power, state and its Mode control."""
    return {
        "type": "grid",
        "cards": [
            _heading(
                uid,
                "mdi:home-battery",
                badges=[{"type": "entity", "entity": node_entity("sensor", uid, "Node state")}],
            ),
            _battery_gauge(uid),
            _tile(
                node_entity("sensor", uid, "Voltage"), name="Voltage", grid_options={"columns": 6}
            ),
            _tile(node_entity("sensor", uid, "Power"), name="Power", grid_options={"columns": 6}),
            _tile(
                node_entity("select", uid, "Mode"),
                name="Mode",
                features=[{"type": "select-options"}],
                grid_options={"columns": 12},
            ),
        ],
    }


def _gateway_node_section(uid: str) -> Config:
    """A node reported by the edge gateway: telemetry only."""
    return {
        "type": "grid",
        "cards": [
            _heading(
                uid,
                "mdi:router-network",
                badges=[{"type": "entity", "entity": node_entity("sensor", uid, "Node state")}],
            ),
            _battery_gauge(uid),
            _tile(
                node_entity("sensor", uid, "Voltage"), name="Voltage", grid_options={"columns": 6}
            ),
            _tile(
                node_entity("sensor", uid, "Node state"), name="State", grid_options={"columns": 6}
            ),
        ],
    }


def _history_section(layout: Layout) -> Config:
    every = (*layout.nodes, *layout.gateway_nodes)
    return {
        "type": "grid",
        "column_span": 2,
        "cards": [
            _heading("History", "mdi:chart-line"),
            {
                "type": "history-graph",
                "title": "State of charge",
                "hours_to_show": layout.history_hours,
                "entities": [node_entity("sensor", uid, "Battery") for uid in every],
                "grid_options": {"columns": "full"},
            },
            {
                "type": "history-graph",
                "title": "Power (positive: out of the cell)",
                "hours_to_show": layout.history_hours,
                "entities": [node_entity("sensor", uid, "Power") for uid in layout.nodes],
                "grid_options": {"columns": "full"},
            },
        ],
    }


def _ledger_section(layout: Layout) -> Config:
    """The ledger: tokens, carbon, market price, and what each node shared and took."""
    cards: list[Card] = [
        _heading("Sharing ledger", "mdi:book-open-variant"),
        {
            "type": "entities",
            "title": "Tokens and market",
            "icon": "mdi:hand-coin",
            "entities": [
                {"entity": f"sensor.peergrid_grid_{key}"}
                for key in (
                    "tokens_minted",
                    "carbon_saved",
                    "carbon_credits_retired",
                    "market_price",
                    "open_sell_orders",
                )
            ],
            "grid_options": {"columns": 12},
        },
    ]
    for title, icon, name in (
        ("Shared with peers", "mdi:battery-arrow-up-outline", "Energy shared to peers"),
        ("Received from peers", "mdi:battery-arrow-down-outline", "Energy received from peers"),
    ):
        cards.append(
            {
                "type": "entities",
                "title": title,
                "icon": icon,
                "entities": [
                    {"entity": node_entity("sensor", uid, name), "name": uid}
                    for uid in layout.nodes
                ],
                "grid_options": {"columns": 12},
            }
        )
    return {"type": "grid", "cards": cards}


def dashboard(layout: Layout) -> Config:
    """The dashboard's configuration (what its YAML file holds)."""
    sections = [
        _grid_section(layout),
        _transfer_form_section(),
        _transfers_section(layout),
        *(_node_section(uid) for uid in layout.nodes),
        *(_gateway_node_section(uid) for uid in layout.gateway_nodes),
        _history_section(layout),
        _ledger_section(layout),
    ]
    return {
        "title": DASHBOARD_TITLE,
        "views": [
            {
                "title": "Grid",
                "path": VIEW_PATH,
                "icon": "mdi:battery-sync",
                "type": "sections",
                "max_columns": 4,
                "sections": sections,
            }
        ],
    }


def package(layout: Layout) -> Config:
    """The Home Assistant package behind the dashboard's transfer form.

    Two selects and a number hold the form's values; the script hands them to
    ``peergrid.start_transfer``, which checks them like any other caller (a
    refused transfer shows its reason on the dashboard).
    """
    nodes = list(layout.nodes)
    return {
        "input_select": {
            "peergrid_sender": {
                "name": "Sender",
                "icon": "mdi:battery-arrow-up",
                "options": nodes,
                "initial": nodes[0],
            },
            "peergrid_receiver": {
                "name": "Receiver",
                "icon": "mdi:battery-charging",
                "options": nodes,
                "initial": nodes[-1],
            },
        },
        "input_number": {
            "peergrid_transfer_energy": {
                "name": "Energy to send",
                "icon": "mdi:lightning-bolt",
                "min": 0.5,
                "max": 20,
                "step": 0.5,
                "initial": 2,
                "unit_of_measurement": "Wh",
                "mode": "box",
            }
        },
        "script": {
            "peergrid_start_transfer": {
                "alias": "Start PeerGrid transfer",
                "icon": "mdi:send",
                "description": "Send the chosen energy from the chosen sender to the chosen receiver.",
                "mode": "single",
                "sequence": [
                    {
                        "action": "peergrid.start_transfer",
                        "data": {
                            "sender": f"{{{{ states('{SENDER}') }}}}",
                            "receiver": f"{{{{ states('{RECEIVER}') }}}}",
                            "energy_wh": f"{{{{ states('{ENERGY}') | float }}}}",
                        },
                    }
                ],
            }
        },
    }


def render(config: Config) -> str:
    """YAML text of a dashboard or package, with the header that says where it came from."""
    return _HEADER + yaml.dump(
        config, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100
    )


def write(layout: Layout, directory: Path) -> tuple[Path, Path]:
    """Write the dashboard and the package into ``directory``; return both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    board = directory / DASHBOARD_FILE
    helpers = directory / PACKAGE_FILE
    board.write_text(render(dashboard(layout)), encoding="utf-8")
    helpers.write_text(render(package(layout)), encoding="utf-8")
    return board, helpers


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m demo.dashboard``: write the dashboard and package for the given nodes."""
    parser = argparse.ArgumentParser(
        prog="python -m demo.dashboard",
        description="Write the PeerGrid Lovelace dashboard and its helper package.",
    )
    parser.add_argument(
        "--node",
        action="append",
        metavar="UID",
        help="a directly configured node (repeat; default: the demo's nodes)",
    )
    parser.add_argument(
        "--gateway-node",
        action="append",
        metavar="UID",
        help="a node reported by an edge gateway (repeat)",
    )
    parser.add_argument(
        "--history-hours",
        type=float,
        default=DEFAULT_HISTORY_HOURS,
        help="how far back the history graphs reach, in hours (default: %(default)s)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("dashboards"),
        help="folder to write peergrid.yaml and peergrid_package.yaml to (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.node is None:
        nodes, gateway_nodes = DEMO_NODES, tuple(args.gateway_node or DEMO_GATEWAY_NODES)
    else:
        nodes, gateway_nodes = tuple(args.node), tuple(args.gateway_node or ())
    try:
        layout = Layout(nodes=nodes, gateway_nodes=gateway_nodes, history_hours=args.history_hours)
    except ValueError as err:
        parser.error(str(err))
    for path in write(layout, args.output_dir):
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
