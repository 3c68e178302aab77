"""A stand-in for the PeerGrid HTTP API of Home Assistant, on 127.0.0.1.

It implements the contract's endpoints with the core's models (what the real
views validate with), keeps everything it received for the tests to inspect,
dedupes energy reports by ``report_id`` and can be stopped and started again
on the same port to play an outage or a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from peergrid_core.events import ScheduleData, ScheduleEvent
from peergrid_core.payloads import (
    DepinHeartbeat,
    DepinRegistration,
    EnergyReport,
    HeartbeatPing,
    parse_ping,
)

TOKEN = "fake-long-lived-token"


def _invalid(err: ValidationError) -> web.Response:
    fields = [
        {"field": ".".join(str(part) for part in e["loc"]), "message": e["msg"]}
        for e in err.errors()
    ]
    return web.json_response({"error": "invalid_payload", "fields": fields}, status=400)


class FakeHomeAssistant:
    """The contract's endpoints; ``keepalive_s`` paces ``: keep-alive`` comments."""

    def __init__(self, *, keepalive_s: float = 0.1) -> None:
        self.keepalive_s = keepalive_s
        self.port = 0
        self.heartbeats: list[dict[str, Any]] = []
        self.node_data: list[dict[str, Any]] = []
        self.report_posts: list[dict[str, Any]] = []
        self.reports: dict[str, dict[str, Any]] = {}
        self.registrations: list[dict[str, Any]] = []
        self.depin_heartbeats: list[dict[str, Any]] = []
        self.stream_connects = 0
        self.log: list[str] = []
        """What arrived, in order: ``heartbeat``, ``node_data``, ``report``, ``register``, ..."""
        self.fail_with: int | None = None
        """Answer every POST with this status instead (a broken Home Assistant)."""
        self.silent = False
        """Keep streams open but send nothing (not even keep-alives)."""
        self._streams: set[asyncio.Queue[str | None]] = set()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/peergrid/iot/ping", self._ping)
        app.router.add_get("/api/peergrid/iot/events", self._events)
        app.router.add_post("/api/peergrid/iot/energy/report", self._report)
        app.router.add_post("/api/peergrid/depin/register", self._register)
        app.router.add_post("/api/peergrid/depin/heartbeat", self._depin_heartbeat)
        runner = web.AppRunner(app, shutdown_timeout=0.5, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]
        self._runner = runner

    async def stop(self) -> None:
        """Go away: streams end, the port closes (the same port is reused by start)."""
        self.drop_streams()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def drop_streams(self) -> None:
        for queue in list(self._streams):
            queue.put_nowait(None)

    # ------------------------------------------------------------ publishing

    def publish_schedule(self, data: ScheduleData) -> None:
        text = ScheduleEvent(data=data).to_sse()
        for queue in list(self._streams):
            queue.put_nowait(text)

    # ------------------------------------------------------------ handlers

    @staticmethod
    def _authorized(request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {TOKEN}"

    def _failure(self) -> web.Response | None:
        if self.fail_with is not None:
            return web.json_response({"error": "failure"}, status=self.fail_with)
        return None

    async def _ping(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"message": "unauthorized"}, status=401)
        if (failure := self._failure()) is not None:
            return failure
        body = await request.json()
        try:
            ping = parse_ping(body)
        except ValidationError as err:
            return _invalid(err)
        if isinstance(ping, HeartbeatPing):
            self.heartbeats.append(body)
            self.log.append("heartbeat")
            return web.json_response({"accepted": "heartbeat"})
        self.node_data.append(body)
        self.log.append("node_data")
        return web.json_response({"accepted": "node_data"})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.json_response({"message": "unauthorized"}, status=401)
        device_id = request.query.get("device_id")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._streams.add(queue)
        self.stream_connects += 1
        self.log.append("stream")
        try:
            while True:
                try:
                    async with asyncio.timeout(self.keepalive_s):
                        text = await queue.get()
                except TimeoutError:
                    if not self.silent:
                        await response.write(b": keep-alive\n\n")
                    continue
                if text is None:
                    break
                if device_id is None or f'"device_id":"{device_id}"' in text:
                    await response.write(text.encode())
        except ConnectionResetError:
            pass
        finally:
            self._streams.discard(queue)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def _report(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"message": "unauthorized"}, status=401)
        if (failure := self._failure()) is not None:
            return failure
        body = await request.json()
        self.report_posts.append(body)
        try:
            report = EnergyReport.model_validate(body)
        except ValidationError as err:
            return _invalid(err)
        if report.report_id is None:
            return web.json_response(
                {
                    "error": "invalid_payload",
                    "fields": [{"field": "report_id", "message": "required"}],
                },
                status=400,
            )
        if report.report_id in self.reports:
            return web.json_response({"accepted": False, "duplicate": True})
        self.reports[report.report_id] = body
        self.log.append("report")
        return web.json_response(
            {"accepted": True, "duplicate": False, "report_id": report.report_id}
        )

    async def _register(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"message": "unauthorized"}, status=401)
        if (failure := self._failure()) is not None:
            return failure
        body = await request.json()
        try:
            DepinRegistration.model_validate(body)
        except ValidationError as err:
            return _invalid(err)
        self.registrations.append(body)
        self.log.append("register")
        return web.json_response({"registered": True})

    async def _depin_heartbeat(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"message": "unauthorized"}, status=401)
        if (failure := self._failure()) is not None:
            return failure
        body = await request.json()
        try:
            heartbeat = DepinHeartbeat.model_validate(body)
        except ValidationError as err:
            return _invalid(err)
        if not any(r["device_id"] == heartbeat.device_id for r in self.registrations):
            return web.json_response(
                {
                    "error": "invalid_payload",
                    "fields": [{"field": "device_id", "message": "not registered"}],
                },
                status=400,
            )
        self.depin_heartbeats.append(body)
        self.log.append("depin_heartbeat")
        return web.json_response({"accepted": True})
