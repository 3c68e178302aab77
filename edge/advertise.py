"""Announce the gateway on the local network over multicast DNS.

The service type is ``_peergrid._tcp.local.``; the instance is named after
the gateway's ``device_id`` and its TXT record carries ``device_id`` and
``version``, so Home Assistant (or a person with ``avahi-browse``) can find
the gateways of a site without knowing their addresses.
"""

from __future__ import annotations

from collections.abc import Sequence
import ipaddress
import logging
from typing import Final

import ifaddr
from zeroconf import InterfaceChoice, IPVersion, NonUniqueNameException
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from peergrid_core.errors import PeerGridValidationError

__all__ = ["SERVICE_TYPE", "GatewayAdvertiser", "build_service_info", "local_addresses"]

_LOGGER = logging.getLogger(__name__)

SERVICE_TYPE: Final = "_peergrid._tcp.local."


def local_addresses() -> list[str]:
    """The host's IPv4 addresses other than loopback and link-local."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if not isinstance(ip.ip, str):
                continue
            address = ipaddress.IPv4Address(ip.ip)
            if not (address.is_loopback or address.is_link_local):
                found.append(str(address))
    return found


def build_service_info(
    device_id: str, version: str, *, addresses: Sequence[str], port: int = 0
) -> AsyncServiceInfo:
    """The service record: ``<device_id>._peergrid._tcp.local.`` with its TXT keys.

    ``port`` is 0 because the gateway serves nothing itself: the record is
    for discovery, and the gateway talks to Home Assistant, never the reverse.
    """
    if not addresses:
        raise PeerGridValidationError("addresses", "the gateway has no address to announce")
    return AsyncServiceInfo(
        SERVICE_TYPE,
        f"{device_id}.{SERVICE_TYPE}",
        parsed_addresses=list(addresses),
        port=port,
        properties={"device_id": device_id, "version": version},
        server=f"peergrid-{device_id}.local.",
    )


class GatewayAdvertiser:
    """Registers the service while the gateway runs.

    ``interfaces`` defaults to every interface; tests pass ``["127.0.0.1"]``.
    ``addresses`` defaults to :func:`local_addresses`.
    """

    def __init__(
        self,
        device_id: str,
        version: str,
        *,
        interfaces: Sequence[str] | InterfaceChoice = InterfaceChoice.All,
        addresses: Sequence[str] | None = None,
    ) -> None:
        """Store what to announce; nothing is sent until :meth:`start`."""
        self.device_id = device_id
        self.version = version
        self._interfaces = interfaces
        self._addresses = addresses
        self._zeroconf: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None

    @property
    def info(self) -> AsyncServiceInfo | None:
        """The registered service record, while registered."""
        return self._info

    async def start(self) -> bool:
        """Register the service; returns whether it is announced.

        A failure (no usable address, the name taken by another gateway, no
        multicast) is logged: discovery is a convenience, and the gateway
        works without it.
        """
        addresses = list(self._addresses) if self._addresses is not None else local_addresses()
        try:
            info = build_service_info(self.device_id, self.version, addresses=addresses)
        except PeerGridValidationError as err:
            _LOGGER.warning("Not advertising the gateway: %s", err.message)
            return False
        interfaces = (
            self._interfaces
            if isinstance(self._interfaces, InterfaceChoice)
            else list(self._interfaces)
        )
        zeroconf = AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
        try:
            # The call returns the announcement task; waiting for it means the
            # service is on the network (and no task outlives a quick stop).
            announced = await zeroconf.async_register_service(info)
            await announced
        except (NonUniqueNameException, OSError) as err:
            _LOGGER.warning("Not advertising %s: %s", info.name, err)
            await zeroconf.async_close()
            return False
        self._zeroconf = zeroconf
        self._info = info
        _LOGGER.info("Advertising %s", info.name)
        return True

    async def stop(self) -> None:
        """Withdraw the service (goodbye packets) and close the sockets."""
        zeroconf, info = self._zeroconf, self._info
        self._zeroconf = self._info = None
        if zeroconf is None:
            return
        if info is not None:
            goodbye = await zeroconf.async_unregister_service(info)
            await goodbye
        await zeroconf.async_close()
