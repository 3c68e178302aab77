"""Start-up on the ESP32: configuration, Wi-Fi, hardware, node (MicroPython only)."""

import asyncio

from . import board, config, wifi
from .node import Node


async def _announce(node):
    # The port is known once the server listens (it may be ephemeral).
    while node.port is None:
        await asyncio.sleep_ms(20)
    print("peergrid: %s listening on %s:%d" % (node.uid, node.config["host"], node.port))


async def _serve(node, wlan, cfg):
    keeper = asyncio.create_task(wifi.keep(wlan, cfg))
    announce = asyncio.create_task(_announce(node))
    try:
        await node.run()
    finally:
        keeper.cancel()
        announce.cancel()


def main(path=config.CONFIG_PATH):
    """Load the configuration, bring up the network and run the node forever."""
    cfg, problems = config.load(path)
    for problem in problems:
        print("peergrid: config:", problem)
    if not cfg["uid"]:
        cfg["uid"] = board.default_uid()
        try:
            config.save(cfg, path)
        except (OSError, ValueError) as err:
            print("peergrid: could not store the uid:", err)
    if not cfg["key"]:
        print("peergrid: WARNING no key configured, the node accepts unsigned commands")
    wlan = wifi.start(cfg)
    hw = board.Board(cfg["watchdog_ms"], wlan)

    def save(new):
        config.save(new, path)

    node = Node(cfg, hw, save)
    try:
        asyncio.run(_serve(node, wlan, cfg))
    finally:
        # Whatever ended the program (Ctrl-C, a bug), leave the relays open.
        node.stop()
        hw.supply_pin.value(0)
        hw.receive_pin.value(0)
