"""Zeroconf: the gateway is seen as ``_peergrid._tcp.local.`` with its device id.

Multicast works on the loopback interface here, so both the advertiser and
the browser are bound to 127.0.0.1 only: nothing reaches a real network.
"""

from __future__ import annotations

import asyncio

import pytest
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from edge import __version__
from edge.advertise import SERVICE_TYPE, GatewayAdvertiser, build_service_info
from peergrid_core.errors import PeerGridValidationError

pytestmark = pytest.mark.usefixtures("socket_enabled")


def test_service_info() -> None:
    info = build_service_info("rpi-4b-prod-01", "0.1.0", addresses=["192.168.1.20"])
    assert info.type == SERVICE_TYPE == "_peergrid._tcp.local."
    assert info.name == "rpi-4b-prod-01._peergrid._tcp.local."
    assert info.server == "peergrid-rpi-4b-prod-01.local."
    assert info.properties == {b"device_id": b"rpi-4b-prod-01", b"version": b"0.1.0"}
    assert info.parsed_addresses() == ["192.168.1.20"]


def test_service_info_needs_an_address() -> None:
    with pytest.raises(PeerGridValidationError) as err:
        build_service_info("gw", "0.1.0", addresses=[])
    assert err.value.field == "addresses"


async def test_browser_on_loopback_sees_the_gateway() -> None:
    advertiser = GatewayAdvertiser(
        "rpi-test-01", __version__, interfaces=["127.0.0.1"], addresses=["127.0.0.1"]
    )
    assert await advertiser.start()
    browser_zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    seen: asyncio.Queue[str] = asyncio.Queue()

    def on_change(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is ServiceStateChange.Added:
            seen.put_nowait(name)

    browser = AsyncServiceBrowser(browser_zc.zeroconf, SERVICE_TYPE, handlers=[on_change])
    try:
        async with asyncio.timeout(10):
            name = await seen.get()
        assert name == "rpi-test-01._peergrid._tcp.local."
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        assert await info.async_request(browser_zc.zeroconf, 3000)
        assert info.properties[b"device_id"] == b"rpi-test-01"
        assert info.properties[b"version"] == __version__.encode()
        assert info.parsed_addresses() == ["127.0.0.1"]
    finally:
        await browser.async_cancel()
        await browser_zc.async_close()
        await advertiser.stop()
    assert advertiser.info is None


async def test_no_address_means_no_advertisement(caplog: pytest.LogCaptureFixture) -> None:
    advertiser = GatewayAdvertiser("gw", __version__, interfaces=["127.0.0.1"], addresses=[])
    assert not await advertiser.start()
    assert "Not advertising" in caplog.text
    await advertiser.stop()
