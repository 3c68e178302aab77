"""The node's TCP server over real loopback sockets, driven with raw frames.

The node runs on fake hardware with the golden node nonce, so its hello (and
hence every session key) equals the golden fixture's, and the fixture's
controller lines can be sent verbatim. Virtual time only moves when a test
advances it; sockets run in real time.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from .conftest import (
    GOLDEN,
    GOLDEN_KEY,
    Body,
    NodeFactory,
    RawController,
    RunningNode,
    golden_config,
)
from .fakes import FakeHw

type ControllerFactory = Any

CONVERSATION = GOLDEN["conversation"]
C2N_AFTER_AUTH = [e for e in CONVERSATION[2:] if e["dir"] == "c2n"]
MEASURED = {"mv", "ma", "mw", "soc", "e_out_mwh", "e_in_mwh", "e_session_mwh", "uptime_s"}


def _line(name: str) -> bytes:
    entry: Body = next(e for e in CONVERSATION if e["name"] == name)
    return str(entry["line"]).encode()


def pin_writes(rn: RunningNode) -> tuple[int, int]:
    """How many times each relay pin was written (to prove nothing moved)."""
    return len(rn.hw.supply_pin.writes), len(rn.hw.receive_pin.writes)


async def golden_session(rn: RunningNode, ctl: RawController) -> list[Body]:
    """Authenticate with the golden auth line and replay the golden requests.

    Returns every frame the node sent after ``auth_ok``.
    """
    assert ctl.hello_line + b"\n" == _line("hello")
    await ctl.send_raw(_line("auth"))
    assert await ctl.read_line() + b"\n" == _line("auth_ok")
    derived = GOLDEN["derived"]
    ctl.k_c2n = bytes.fromhex(derived["k_c2n"])
    ctl.k_n2c = bytes.fromhex(derived["k_n2c"])
    frames = [await ctl.recv()]
    for entry in C2N_AFTER_AUTH:
        await ctl.send_raw(entry["line"].encode())
        request = json.loads(entry["line"][65:])
        await asyncio.sleep(0.02)
        await rn.hw.clock.advance(150)
        while True:
            msg = await ctl.recv()
            frames.append(msg)
            if msg.get("id") == request["id"]:
                break
    ctl.tx_seq = GOLDEN["next_seq"]["c2n"] - 1
    return frames


def strip(body: Body, *extra: str) -> Body:
    """A body without its sequence number and the named fields."""
    return {k: v for k, v in body.items() if k != "seq" and k not in extra}


async def test_golden_conversation(start_node: NodeFactory, controllers: ControllerFactory) -> None:
    """Hello, auth_ok and the first ack are byte-exact; every reply matches."""
    rn = await start_node()
    rn.hw.cell.supply_ma = 1480
    ctl = await controllers(rn.node.port)
    frames = await golden_session(rn, ctl)
    # The first signed frames carry the same sequence numbers as the fixture,
    # so the node's MAC over its own bytes equals the fixture's.
    assert frames[0]["t"] == "status"
    assert frames[1] == next(e for e in CONVERSATION if e["name"] == "ack_supply")["body"]
    replies = {f["id"]: f for f in frames if "id" in f}
    for entry in CONVERSATION:
        body = entry.get("body")
        if entry["dir"] != "n2c" or body is None or "id" not in body:
            continue
        mine = replies[body["id"]]
        assert mine["t"] == body["t"]
        if body["t"] == "status":
            assert strip(mine, *MEASURED, "lease_left_s") == strip(body, *MEASURED, "lease_left_s")
        elif body["t"] == "pong":
            assert strip(mine, "lease_left_s") == strip(body, "lease_left_s")
            assert 57 <= mine["lease_left_s"] <= 60
        else:
            assert strip(mine) == strip(body)
    # After every accepted command a status follows its ack.
    acks = [i for i, f in enumerate(frames) if f["t"] == "ack"]
    assert all(frames[i + 1]["t"] == "status" for i in acks)


@pytest.mark.parametrize("case", GOLDEN["rejections"], ids=lambda c: c["name"])
async def test_golden_rejections_close_and_never_move_a_relay(
    start_node: NodeFactory, controllers: ControllerFactory, case: Body
) -> None:
    """Bad MAC, wrong key, replay, skipped seq, unsigned line: fatal err, no action."""
    rn = await start_node()
    ctl = await controllers(rn.node.port)
    await golden_session(rn, ctl)
    writes = pin_writes(rn)
    await ctl.send_raw(case["line"].encode())
    await asyncio.sleep(0.02)
    await rn.hw.clock.advance(200)
    err = await ctl.recv_type("err")
    assert strip(err) == strip(case["expect_body"])
    assert await ctl.closed()
    assert pin_writes(rn) == writes


MALFORMED = GOLDEN["malformed"]


@pytest.mark.parametrize(
    "case",
    [c for c in MALFORMED if c["state"] == "session"],
    ids=lambda c: c["code"] + ":" + c["line"][65:90],
)
async def test_malformed_in_session(
    start_node: NodeFactory, controllers: ControllerFactory, case: Body
) -> None:
    """Each malformed line gets its code and field; only fatal ones close."""
    rn = await start_node()
    ctl = await controllers(rn.node.port)
    await golden_session(rn, ctl)
    writes = pin_writes(rn)
    await ctl.send_raw(case["line"].encode())
    await asyncio.sleep(0.02)
    await rn.hw.clock.advance(200)
    err = await ctl.recv_type("err")
    assert err["code"] == case["code"]
    assert err.get("field") == case["field"]
    assert pin_writes(rn) == writes
    if case["fatal"]:
        assert err["close"] is True
        assert await ctl.closed()
    else:
        assert "close" not in err
        ctl.tx_seq += 1  # the refused request still used its sequence number
        pong = await ctl.request({"t": "ping", "id": 99})
        assert pong["t"] == "pong"


@pytest.mark.parametrize(
    "case",
    [c for c in MALFORMED if c["state"] == "pre_auth"],
    ids=lambda c: c["code"] + ":" + c["line"][:20],
)
async def test_malformed_before_auth_is_fatal(
    start_node: NodeFactory, controllers: ControllerFactory, case: Body
) -> None:
    """Before authentication every error is fatal and unsigned."""
    rn = await start_node()
    ctl = await controllers(rn.node.port)
    writes = pin_writes(rn)
    await ctl.send_raw(case["line"].encode())
    err = json.loads(await ctl.read_line())
    assert err["t"] == "err"
    assert "seq" not in err
    assert err["code"] == case["code"]
    assert err.get("field") == case["field"]
    assert err["close"] is True
    assert await ctl.closed()
    assert pin_writes(rn) == writes


async def bench_node(start_node: NodeFactory, **overrides: Any) -> RunningNode:
    """A bench-mode node like the fixture's (no key)."""
    config = {"uid": "pg-bench1", "bench_mode": True, "host": "127.0.0.1", "port": 0}
    config.update(overrides)
    return await start_node(config, hw=FakeHw(nonce=bytes.fromhex(GOLDEN["node_nonce"])))


async def read_reply(ctl: RawController) -> bytes:
    """The next unsigned line that is not a status push."""
    while True:
        line = await ctl.read_line()
        if json.loads(line)["t"] != "status":
            return line + b"\n"


async def test_bench_conversation(start_node: NodeFactory, controllers: ControllerFactory) -> None:
    """Plain-text SUPPLY/IDLE and unsigned JSON, byte-exact with the fixture."""
    rn = await bench_node(start_node)
    ctl = await controllers(rn.node.port)
    bench = GOLDEN["bench"]["conversation"]
    assert ctl.hello_line + b"\n" == bench[0]["line"].encode()
    for request, reply in zip(bench[1::2], bench[2::2], strict=True):
        await ctl.send_raw(request["line"].encode())
        await asyncio.sleep(0.02)
        await rn.hw.clock.advance(150)
        assert await read_reply(ctl) == reply["line"].encode()
    assert rn.node.mode == "RECEIVE"


@pytest.mark.parametrize(
    "case",
    [c for c in MALFORMED if c["state"] == "bench"],
    ids=lambda c: c["code"] + ":" + c["line"][:20],
)
async def test_malformed_in_bench_mode(
    start_node: NodeFactory, controllers: ControllerFactory, case: Body
) -> None:
    """Bench-mode errors: unknown plain text, missing lease, auth to a keyless node."""
    rn = await bench_node(start_node)
    ctl = await controllers(rn.node.port)
    await ctl.send_raw(case["line"].encode())
    err = json.loads(await read_reply(ctl))
    assert err["code"] == case["code"]
    assert err.get("field") == case["field"]
    if case["fatal"]:
        assert await ctl.closed()
    assert rn.node.mode == "IDLE"


async def test_plain_text_needs_bench_mode(
    start_node: NodeFactory, controllers: ControllerFactory
) -> None:
    """Without a key but with bench_mode off, plain text moves nothing."""
    rn = await bench_node(start_node, bench_mode=False)
    ctl = await controllers(rn.node.port)
    assert ctl.hello["auth"] == "none"
    await ctl.send_raw(b"SUPPLY\n")
    err = json.loads(await read_reply(ctl))
    assert err["code"] == "unknown_type"
    assert rn.node.mode == "IDLE"


async def test_a_key_disables_bench_mode(
    start_node: NodeFactory, controllers: ControllerFactory
) -> None:
    """bench_mode with a key: the hello demands auth and plain text is fatal."""
    rn = await start_node(golden_config(bench_mode=True))
    ctl = await controllers(rn.node.port)
    assert ctl.hello["auth"] == "hmac-sha256"
    await ctl.send_raw(b"SUPPLY\n")
    err = json.loads(await ctl.read_line())
    assert err["code"] == "auth_required"
    assert await ctl.closed()
    assert rn.node.mode == "IDLE"


async def test_endless_line_is_cut_off(
    start_node: NodeFactory, controllers: ControllerFactory
) -> None:
    """A peer that never sends LF cannot grow the buffer beyond one line."""
    rn = await start_node()
    ctl = await controllers(rn.node.port)
    await ctl.authenticate()
    for _ in range(4):
        await ctl.send_raw(b"x" * 200)
    err = await ctl.recv_type("err")
    assert err["code"] == "line_too_long"
    assert await ctl.closed()
    assert rn.node.sessions == []


async def test_line_of_exactly_512_bytes_is_accepted(
    start_node: NodeFactory, controllers: ControllerFactory
) -> None:
    """512 bytes including the LF is the largest legal line."""
    rn = await start_node()
    ctl = await controllers(rn.node.port)
    await ctl.authenticate()
    line = ctl.sign({"t": "ping", "id": 5, "pad": ""})
    padded = line[:-3] + b"x" * (512 - len(line)) + line[-3:]
    ctl.tx_seq -= 1
    body = padded[65:-1]
    # Re-sign the padded body so only its length differs.
    from .conftest import mac_hex

    padded = mac_hex(ctl.k_c2n, body).encode() + b" " + body + b"\n"
    assert len(padded) == 512
    ctl.tx_seq += 1
    await ctl.send_raw(padded)
    pong = await ctl.recv_type("pong")
    assert pong["id"] == 5


async def test_session_limit(start_node: NodeFactory, controllers: ControllerFactory) -> None:
    """A fourth connection is closed right after accept."""
    rn = await start_node()
    for _ in range(3):
        ctl = await controllers(rn.node.port)
        await ctl.authenticate()
    reader, writer = await asyncio.open_connection("127.0.0.1", rn.node.port)
    try:
        assert await asyncio.wait_for(reader.read(100), 5) == b""
    finally:
        writer.close()
        await writer.wait_closed()


async def test_auth_deadline(start_node: NodeFactory, controllers: ControllerFactory) -> None:
    """No auth within 10 s of hello: idle_timeout and close."""
    rn = await start_node()
    ctl = await controllers(rn.node.port)
    await rn.hw.clock.advance(9000)
    assert rn.node.sessions
    await rn.hw.clock.advance(1500)
    err = json.loads(await ctl.read_line())
    assert err["code"] == "idle_timeout"
    assert await ctl.closed()


async def test_idle_timeout_and_controller_lost(
    start_node: NodeFactory, controllers: ControllerFactory
) -> None:
    """A silent controller is dropped after idle_s and its transfer stops."""
    rn = await start_node()
    ctl = await controllers(rn.node.port)
    watcher = await controllers(rn.node.port)
    await ctl.authenticate()
    await watcher.authenticate()
    await ctl.send({"t": "cmd", "id": 1, "mode": "SUPPLY", "lease_s": 120})
    await asyncio.sleep(0.02)
    await rn.hw.clock.advance(150)
    assert (await ctl.recv_type("ack"))["mode"] == "SUPPLY"
    # The watcher keeps itself alive with pings; the controller stays silent.
    for _ in range(7):
        await rn.hw.clock.advance(5000)
        await watcher.request({"t": "ping", "id": 7})
    err = await ctl.recv_type("err")
    assert err["code"] == "idle_timeout"
    assert await ctl.closed()
    await watcher.request({"t": "ping", "id": 8})
    events = [f for f in watcher.received if f["t"] == "event"]
    assert [(e["reason"], e["mode"]) for e in events] == [("controller_lost", "SUPPLY")]
    after = watcher.received[watcher.received.index(events[0]) + 1]
    assert (after["t"], after["state"]) == ("status", "tripped")
    assert rn.node.mode == "IDLE"


async def test_push_period_and_trip_event(
    start_node: NodeFactory, controllers: ControllerFactory
) -> None:
    """Status every push_s; a lease expiry sends event then status."""
    rn = await start_node()
    ctl = await controllers(rn.node.port)
    await ctl.authenticate()
    await rn.hw.clock.advance(5100)
    pushed = await ctl.recv_type("status")
    assert "id" not in pushed
    await ctl.send({"t": "cmd", "id": 2, "mode": "SUPPLY", "lease_s": 3})
    await asyncio.sleep(0.02)
    await rn.hw.clock.advance(150)
    assert (await ctl.recv_type("ack"))["lease_s"] == 3
    await rn.hw.clock.advance(3000)
    event = await ctl.recv_type("event")
    assert event["reason"] == "lease_expired"
    status = await ctl.recv()
    assert status["t"] == "status"
    assert status["trip"] == "lease_expired"
    assert status["mode"] == "IDLE"


async def test_busy_for_a_second_controller(
    start_node: NodeFactory, controllers: ControllerFactory
) -> None:
    """Two controllers: the second gets busy, but its IDLE is obeyed."""
    rn = await start_node()
    first = await controllers(rn.node.port)
    second = await controllers(rn.node.port)
    await first.authenticate()
    await second.authenticate()
    await first.send({"t": "cmd", "id": 1, "mode": "RECEIVE", "lease_s": 30})
    await asyncio.sleep(0.02)
    await rn.hw.clock.advance(150)
    assert (await first.recv_type("ack"))["mode"] == "RECEIVE"
    busy = await second.request({"t": "cmd", "id": 1, "mode": "SUPPLY", "lease_s": 30})
    assert busy["code"] == "busy"
    assert rn.node.mode == "RECEIVE"
    await second.send({"t": "cmd", "id": 2, "mode": "IDLE"})
    await asyncio.sleep(0.02)
    await rn.hw.clock.advance(50)
    assert (await second.recv_type("ack"))["mode"] == "IDLE"
    assert rn.node.mode == "IDLE"
    assert rn.hw.monitor.both_on == 0


async def test_wrong_key_is_refused(
    start_node: NodeFactory, controllers: ControllerFactory
) -> None:
    """A controller with another key fails authentication."""
    rn = await start_node()
    ctl = await controllers(rn.node.port)
    with pytest.raises(AssertionError):
        await ctl.authenticate(key="another-key-of-16-bytes")
    assert await ctl.closed()


async def test_set_config_validates_everything_first(
    start_node: NodeFactory, controllers: ControllerFactory
) -> None:
    """A bad key in set_config changes nothing; a good one is stored."""
    saved: list[Body] = []
    from peergrid_node.node import Node

    hw = FakeHw(nonce=bytes.fromhex(GOLDEN["node_nonce"]))
    node = Node(golden_config(), hw, saved.append)
    task = asyncio.create_task(node.run())
    try:
        for _ in range(200):
            if node.port is not None:
                break
            await asyncio.sleep(0.005)
        ctl = await controllers(node.port)
        await ctl.authenticate(GOLDEN_KEY)
        err = await ctl.request({"t": "set_config", "id": 1, "min_mv": 3500, "max_ma": 50})
        assert (err["code"], err["field"]) == ("bad_request", "max_ma")
        assert node.config["limits"]["min_mv"] == 3300
        assert saved == []
        cfg = await ctl.request({"t": "set_config", "id": 2, "min_mv": 3500, "push_s": 10})
        assert cfg["min_mv"] == 3500
        assert cfg["push_s"] == 10
        assert saved[-1]["limits"]["min_mv"] == 3500
        assert saved[-1]["key"] == GOLDEN_KEY  # the file keeps it; the wire never shows it
        assert GOLDEN_KEY not in json.dumps(cfg)
    finally:
        node.stop()
        await task
