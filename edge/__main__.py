"""``python -m edge --config gateway.yaml``: run the gateway until SIGTERM or Ctrl-C.

Exit status: 0 after a clean stop, 2 for a configuration that cannot be used
(the message names the key at fault).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
import logging
from pathlib import Path
import signal
import sys

from peergrid_core.errors import PeerGridValidationError

from . import __version__
from .config import ConfigError, GatewayConfig, load_config
from .gateway import Gateway

_LOGGER = logging.getLogger("edge")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m edge", description="PeerGrid edge gateway: nodes to Home Assistant."
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=Path("/etc/peergrid/gateway.yaml"),
        help="YAML configuration file (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging threshold (default: %(default)s)",
    )
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


async def _run(config: GatewayConfig) -> None:
    gateway = Gateway(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await gateway.start()
    try:
        await stop.wait()
        _LOGGER.info("Stopping")
    finally:
        await gateway.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, load the configuration and run; returns the exit status."""
    args = _parser().parse_args(argv)
    # systemd's journal adds its own timestamps.
    logging.basicConfig(
        level=args.log_level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        config = load_config(args.config)
    except ConfigError as err:
        _LOGGER.error("Configuration %s: %s", args.config, err)
        return 2
    if args.check:
        _LOGGER.info("Configuration %s is valid (%d nodes)", args.config, len(config.nodes))
        return 0
    try:
        asyncio.run(_run(config))
    except PeerGridValidationError as err:
        # Found only when starting, such as an outbox directory that does not exist.
        _LOGGER.error("Cannot start: %s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
