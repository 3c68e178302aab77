"""LeaseKeeper: renews a held mode, and never restarts a transfer the node stopped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from peergrid_core.errors import PeerGridValidationError
from peergrid_core.protocol import CommandRefusedError, Mode, NodeClient, TripReason
from peergrid_core.protocol.lease import LeaseKeeper

from .protocol_fake_node import FakeNode

pytestmark = pytest.mark.usefixtures("socket_enabled")

KEY = b"a-sixteen-plus-byte-key"


class CountingNode(FakeNode):
    """The fake node, counting the commands it accepts per mode."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(key=KEY, **kwargs)  # type: ignore[arg-type]
        self.commands: list[Mode] = []

    def _command(self, session, cmd):  # type: ignore[no-untyped-def]
        ack = super()._command(session, cmd)
        self.commands.append(cmd.mode)
        return ack


class ManualSleep:
    """A sleep the test releases by hand, so renewals happen when the test says."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self._gate = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await self._gate.wait()
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()


async def _until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not predicate():  # noqa: ASYNC110 - conditions span several objects
            await asyncio.sleep(0.005)


@pytest.fixture
async def node() -> AsyncIterator[CountingNode]:
    fake = CountingNode()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def client(node: CountingNode) -> AsyncIterator[NodeClient]:
    async with NodeClient("127.0.0.1", node.port, KEY, keepalive_interval=0) as client:
        yield client


async def test_hold_renews_at_a_third_of_the_lease(node: CountingNode, client: NodeClient) -> None:
    """The mode is renewed at lease/3, each renewal the same command again."""
    sleep = ManualSleep()
    keeper = LeaseKeeper(client, lease_s=30, sleep=sleep)
    ack = await keeper.hold(Mode.SUPPLY)
    assert ack.mode is Mode.SUPPLY
    assert keeper.mode is Mode.SUPPLY
    await _until(lambda: sleep.calls == [10.0])

    for renewals in (2, 3):
        sleep.release()
        await _until(lambda n=renewals: len(node.commands) == n)  # type: ignore[misc]
    assert node.commands == [Mode.SUPPLY] * 3
    assert node.mode is Mode.SUPPLY

    await keeper.close()
    assert node.mode is Mode.IDLE
    assert keeper.mode is Mode.IDLE


async def test_trip_drops_the_hold_and_is_never_renewed(
    node: CountingNode, client: NodeClient
) -> None:
    """After the node trips, the keeper forgets the mode and tells why."""
    released: list[tuple[Mode, str]] = []
    sleep = ManualSleep()
    keeper = LeaseKeeper(
        client, lease_s=30, sleep=sleep, on_release=lambda m, why: released.append((m, why))
    )
    await keeper.hold(Mode.SUPPLY)
    await node.trip_now(TripReason.LOW_VOLTAGE)
    await _until(lambda: keeper.mode is Mode.IDLE)
    assert released == [(Mode.SUPPLY, "trip:low_voltage")]

    sleep.release()
    await asyncio.sleep(0.05)
    assert node.commands == [Mode.SUPPLY], "a tripped transfer must not be restarted"
    assert node.mode is Mode.IDLE
    await keeper.close()


async def test_mode_changed_elsewhere_drops_the_hold(
    node: CountingNode, client: NodeClient
) -> None:
    """A status showing another mode (someone sent IDLE) ends the hold."""
    released: list[tuple[Mode, str]] = []
    keeper = LeaseKeeper(
        client, lease_s=30, sleep=ManualSleep(), on_release=lambda m, w: released.append((m, w))
    )
    await keeper.hold(Mode.RECEIVE)
    node.mode = Mode.IDLE
    await node.push_status()
    await _until(lambda: keeper.mode is Mode.IDLE)
    assert released == [(Mode.RECEIVE, "node:IDLE")]
    await keeper.close()


async def test_disconnect_drops_the_hold(node: CountingNode, client: NodeClient) -> None:
    """The node opens its relays when the controller's session ends; so does the hold."""
    released: list[str] = []
    keeper = LeaseKeeper(
        client, lease_s=30, sleep=ManualSleep(), on_release=lambda m, w: released.append(w)
    )
    await keeper.hold(Mode.SUPPLY)
    await node.drop_all()
    await _until(lambda: keeper.mode is Mode.IDLE)
    assert released == ["disconnected"]
    await keeper.close()  # nothing to release, no connection: no error


async def test_refused_command_holds_nothing(node: CountingNode, client: NodeClient) -> None:
    """A SUPPLY the node refuses raises and leaves the keeper idle."""
    node.mv = 3_100
    keeper = LeaseKeeper(client, lease_s=30, sleep=ManualSleep())
    with pytest.raises(CommandRefusedError):
        await keeper.hold(Mode.SUPPLY)
    assert keeper.mode is Mode.IDLE
    await keeper.close()


async def test_refused_renewal_drops_the_hold(node: CountingNode, client: NodeClient) -> None:
    """When a renewal is refused (the node moved on), the hold ends."""
    released: list[str] = []
    sleep = ManualSleep()
    keeper = LeaseKeeper(
        client, lease_s=30, sleep=sleep, on_release=lambda m, w: released.append(w)
    )
    await keeper.hold(Mode.SUPPLY)
    node.mv = 3_100  # the next SUPPLY is refused: low voltage
    await _until(lambda: sleep.calls == [10.0])
    sleep.release()
    await _until(lambda: keeper.mode is Mode.IDLE)
    assert released == ["renew_failed"]
    await keeper.close()


async def test_idle_hold_releases(node: CountingNode, client: NodeClient) -> None:
    """Holding IDLE sends IDLE and stops any renewal."""
    sleep = ManualSleep()
    keeper = LeaseKeeper(client, lease_s=30, sleep=sleep)
    await keeper.hold(Mode.RECEIVE)
    ack = await keeper.hold(Mode.IDLE)
    assert ack.mode is Mode.IDLE
    assert node.mode is Mode.IDLE
    assert keeper.mode is Mode.IDLE
    await keeper.close()


@pytest.mark.parametrize("lease_s", [0, 2, 3601])
async def test_lease_out_of_range_is_refused(client: NodeClient, lease_s: int) -> None:
    """A lease too short to renew in time, or beyond the protocol's range, is refused."""
    with pytest.raises(PeerGridValidationError) as err:
        LeaseKeeper(client, lease_s=lease_s)
    assert err.value.field == "lease_s"
