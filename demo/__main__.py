"""``python -m demo`` (``make demo``): a live PeerGrid in a real Home Assistant, until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from pathlib import Path
import sys

from .run import DEMO_PASSWORD, DEMO_USERNAME, DemoOptions, run_demo


def build_parser() -> argparse.ArgumentParser:
    """The command line (exposed for the documentation and the tests)."""
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description=(
            "Start simulated PeerGrid nodes, an edge gateway and Home Assistant with the "
            f"PeerGrid dashboard on 127.0.0.1 (login {DEMO_USERNAME} / {DEMO_PASSWORD}). "
            "Ctrl-C stops everything."
        ),
    )
    parser.add_argument(
        "--port", type=int, default=8123, help="Home Assistant's HTTP port (default: %(default)s)"
    )
    parser.add_argument(
        "--nodes",
        type=int,
        default=4,
        help="nodes Home Assistant controls directly, 2-8 (default: %(default)s)",
    )
    parser.add_argument(
        "--gateway-nodes",
        type=int,
        default=2,
        help="nodes behind the edge gateway, 0-4; 0 runs no gateway (default: %(default)s)",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(".demo"),
        help="the demo's folder, deleted and re-created on every run (default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options and run the demo; returns the exit status."""
    args = build_parser().parse_args(argv)
    options = DemoOptions(
        port=args.port, nodes=args.nodes, gateway_nodes=args.gateway_nodes, directory=args.dir
    )
    try:
        return asyncio.run(run_demo(options))
    except KeyboardInterrupt:
        # Ctrl-C before the demo had taken over the signals: asyncio.run cancelled
        # the run, whose cleanup stopped whatever had started.
        return 130


if __name__ == "__main__":
    sys.exit(main())
