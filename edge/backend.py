"""The gateway's client for the PeerGrid HTTP API inside Home Assistant.

Two operations: :meth:`HomeAssistantBackend.post` (JSON in, HTTP status and
JSON out) and :meth:`HomeAssistantBackend.events` (the server-sent event
stream of ``GET /api/peergrid/iot/events``, parsed into the core's event
models). Every failure to get an answer is a
:class:`~peergrid_core.errors.PeerGridConnectionError`; what an answer means is
the caller's business (the outbox retries, the gateway logs).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
import json
import logging
from typing import Final, Self

import aiohttp
from pydantic import ValidationError

from peergrid_core.errors import (
    PeerGridAuthenticationError,
    PeerGridConnectionError,
    PeerGridProtocolError,
    PeerGridTimeoutError,
)
from peergrid_core.events import (
    EnergyMintEvent,
    HeartbeatEvent,
    NodeDataEvent,
    ScheduleEvent,
    parse_sse,
)

__all__ = [
    "API_PREFIX",
    "DEPIN_HEARTBEAT_PATH",
    "DEPIN_REGISTER_PATH",
    "ENERGY_REPORT_PATH",
    "EVENTS_PATH",
    "PING_PATH",
    "BackendResponse",
    "HomeAssistantBackend",
]

_LOGGER = logging.getLogger(__name__)

API_PREFIX: Final = "/api/peergrid/"
PING_PATH: Final = "iot/ping"
EVENTS_PATH: Final = "iot/events"
ENERGY_REPORT_PATH: Final = "iot/energy/report"
DEPIN_REGISTER_PATH: Final = "depin/register"
DEPIN_HEARTBEAT_PATH: Final = "depin/heartbeat"

_MAX_EVENT_BYTES: Final = 256 * 1024
"""A schedule for 64 nodes is a few kilobytes; anything far larger is not an event."""

type AnyGridEvent = HeartbeatEvent | NodeDataEvent | ScheduleEvent | EnergyMintEvent


@dataclass(frozen=True, kw_only=True)
class BackendResponse:
    """An answer from Home Assistant: the status and the decoded JSON body (if any)."""

    status: int
    body: object

    @property
    def ok(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status < 300


class HomeAssistantBackend:
    """Talks to one Home Assistant instance with a bearer token.

    ``session`` is an aiohttp session to use (closed by its owner); without
    one the backend opens its own and closes it in :meth:`close`.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        session: aiohttp.ClientSession | None = None,
        request_timeout_s: float = 10.0,
        stream_timeout_s: float = 45.0,
        verify_ssl: bool = True,
    ) -> None:
        """Store the settings; nothing connects until the first request."""
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._session = session
        self._own_session = session is None
        self._request_timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        # The stream has no total deadline; a read that sees nothing for
        # ``stream_timeout_s`` (no event, no keep-alive) means Home Assistant is gone.
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=request_timeout_s, sock_read=stream_timeout_s
        )
        self._ssl = verify_ssl

    def _url(self, path: str) -> str:
        return f"{self.url}{API_PREFIX}{path}"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def post(self, path: str, body: Mapping[str, object]) -> BackendResponse:
        """POST ``body`` as JSON to ``/api/peergrid/<path>``.

        Returns the response whatever its status. Raises
        :class:`PeerGridTimeoutError` or :class:`PeerGridConnectionError` when
        there is no answer.
        """
        try:
            async with self._client().post(
                self._url(path),
                data=json.dumps(body, separators=(",", ":")),
                headers=self._headers | {"Content-Type": "application/json"},
                timeout=self._request_timeout,
                ssl=self._ssl,
            ) as response:
                text = await response.text()
                status = response.status
        except TimeoutError as err:
            raise PeerGridTimeoutError(f"Home Assistant did not answer POST {path}") from err
        except aiohttp.ClientError as err:
            raise PeerGridConnectionError(f"POST {path} failed: {err}") from err
        try:
            decoded: object = json.loads(text) if text else None
        except ValueError:
            decoded = text
        return BackendResponse(status=status, body=decoded)

    async def post_status(self, path: str, body: Mapping[str, object]) -> int:
        """:meth:`post` reduced to the status (the outbox's sender); logs a refusal's body."""
        response = await self.post(path, body)
        if not response.ok:
            _LOGGER.debug("POST %s -> %s %s", path, response.status, response.body)
        return response.status

    async def events(
        self,
        device_id: str,
        *,
        on_open: Callable[[], None] | None = None,
        on_line: Callable[[], None] | None = None,
    ) -> AsyncGenerator[AnyGridEvent]:
        """Follow the event stream for ``device_id``; yields each valid event.

        ``on_open`` is called once the stream is established (HTTP 200), before
        any event arrives; ``on_line`` for every line received, keep-alive
        comments included (proof that Home Assistant is still talking).

        The iterator ends when Home Assistant closes the stream. An event that
        fails validation is logged and skipped (one bad event must not stop
        the stream). Raises :class:`PeerGridAuthenticationError` for a 401 or
        403, :class:`PeerGridConnectionError` (or its timeout) when the stream
        cannot be opened or goes silent, and :class:`PeerGridProtocolError` for
        another status.
        """
        try:
            async with self._client().get(
                self._url(EVENTS_PATH),
                params={"device_id": device_id},
                headers=self._headers | {"Accept": "text/event-stream"},
                timeout=self._stream_timeout,
                ssl=self._ssl,
            ) as response:
                if response.status in (401, 403):
                    raise PeerGridAuthenticationError(
                        f"Home Assistant refused the token (HTTP {response.status})"
                    )
                if response.status != 200:
                    raise PeerGridProtocolError(f"the event stream answered HTTP {response.status}")
                if on_open is not None:
                    on_open()
                async for event in self._read_stream(response, on_line):
                    yield event
        except TimeoutError as err:
            raise PeerGridTimeoutError("the event stream went silent") from err
        except aiohttp.ClientError as err:
            raise PeerGridConnectionError(f"the event stream failed: {err}") from err

    @staticmethod
    async def _read_stream(
        response: aiohttp.ClientResponse, on_line: Callable[[], None] | None
    ) -> AsyncIterator[AnyGridEvent]:
        lines: list[str] = []
        size = 0
        async for raw in response.content:
            if on_line is not None:
                on_line()
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if line:
                size += len(raw)
                if size > _MAX_EVENT_BYTES:
                    raise PeerGridProtocolError("an event on the stream is too large")
                lines.append(line)
                continue
            message, lines, size = "\n".join(lines), [], 0
            if not any(not part.startswith(":") for part in message.splitlines()):
                continue  # keep-alive comment, or nothing
            try:
                yield parse_sse(message)
            except (PeerGridProtocolError, ValidationError) as err:
                _LOGGER.warning("Ignoring an invalid event from Home Assistant: %s", err)

    async def close(self) -> None:
        """Close the session if this backend opened it."""
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        """Use as an async context manager that closes on exit."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the session if owned."""
        await self.close()
