"""The Home Assistant client: POST answers, the event stream, and its failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
import socket

import aiohttp
from aiohttp import web
import pytest

from edge.backend import HomeAssistantBackend
from peergrid_core.errors import (
    PeerGridAuthenticationError,
    PeerGridConnectionError,
    PeerGridProtocolError,
    PeerGridTimeoutError,
)
from peergrid_core.events import ScheduleData, ScheduleEvent

from .fake_backend import TOKEN, FakeHomeAssistant

pytestmark = pytest.mark.usefixtures("socket_enabled")

SCHEDULE = ScheduleData.model_validate(
    {
        "device_id": "gw-1",
        "commands": [{"uid": "NODE_A", "action": "discharge"}],
        "grid_summary": {"node_count": 2, "avg_soc": 50.0, "soc_spread": 10.0},
    }
)

type Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/api/peergrid/{tail:.*}", handler)
        runner = web.AppRunner(app, shutdown_timeout=0.2, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def _stream(request: web.Request, chunks: list[bytes]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


async def test_stream_skips_comments_and_invalid_events(
    serve: Callable[[Handler], Awaitable[str]], caplog: pytest.LogCaptureFixture
) -> None:
    chunks = [
        b": keep-alive\n\n",
        b'event: schedule\ndata: {"device_id": "gw-1"}\n\n',
        b"event: schedule\ndata: not json\n\n",
        b"data: {}\n\n",
        ScheduleEvent(data=SCHEDULE).to_sse().encode(),
        b"\n",
    ]
    seen: dict[str, str] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        seen["auth"] = request.headers["Authorization"]
        seen["query"] = request.query_string
        return await _stream(request, chunks)

    url = await serve(handler)
    lines = 0

    def on_line() -> None:
        nonlocal lines
        lines += 1

    opened: list[bool] = []
    async with HomeAssistantBackend(url, TOKEN) as backend:
        events = [
            e
            async for e in backend.events(
                "gw-1", on_open=lambda: opened.append(True), on_line=on_line
            )
        ]
    assert opened == [True]
    assert [type(e) for e in events] == [ScheduleEvent]
    assert events[0].data == SCHEDULE
    assert seen == {"auth": f"Bearer {TOKEN}", "query": "device_id=gw-1"}
    assert lines >= 10
    assert caplog.text.count("Ignoring an invalid event") == 3


async def test_stream_refused_token(serve: Callable[[Handler], Awaitable[str]]) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response({"message": "unauthorized"}, status=401)

    url = await serve(handler)
    async with HomeAssistantBackend(url, "wrong") as backend:
        with pytest.raises(PeerGridAuthenticationError):
            _ = [e async for e in backend.events("gw-1")]


async def test_stream_other_status(serve: Callable[[Handler], Awaitable[str]]) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response({"message": "not found"}, status=404)

    url = await serve(handler)
    async with HomeAssistantBackend(url, TOKEN) as backend:
        with pytest.raises(PeerGridProtocolError):
            _ = [e async for e in backend.events("gw-1")]


async def test_silent_stream_times_out(serve: Callable[[Handler], Awaitable[str]]) -> None:
    done = asyncio.Event()

    async def mute(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await done.wait()  # the stream stays open and says nothing until the test ends
        return response

    url = await serve(mute)
    async with HomeAssistantBackend(url, TOKEN, stream_timeout_s=0.2) as backend:
        with pytest.raises(PeerGridTimeoutError):
            _ = [e async for e in backend.events("gw-1")]
    done.set()


async def test_post_answers_and_failures() -> None:
    fake = FakeHomeAssistant()
    await fake.start()
    try:
        async with HomeAssistantBackend(fake.url, TOKEN) as backend:
            answer = await backend.post("iot/ping", {"device_id": "gw-1", "status": "heartbeat"})
            assert answer.ok
            assert answer.body == {"accepted": "heartbeat"}
            refused = await backend.post("iot/ping", {"device_id": "gw-1", "status": "nope"})
            assert refused.status == 400
            assert isinstance(refused.body, dict)
            assert refused.body["fields"][0]["field"] == "status"
            assert await backend.post_status("iot/energy/report", {}) == 400
        async with HomeAssistantBackend(fake.url, "wrong") as backend:
            assert await backend.post_status("iot/ping", {}) == 401
    finally:
        await fake.stop()
    # Nothing listens there any more.
    async with HomeAssistantBackend(fake.url, TOKEN) as backend:
        with pytest.raises(PeerGridConnectionError):
            await backend.post("iot/ping", {})


async def test_uses_a_given_session_without_closing_it() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with aiohttp.ClientSession() as session:
        backend = HomeAssistantBackend(f"http://127.0.0.1:{port}/", TOKEN, session=session)
        assert backend.url == f"http://127.0.0.1:{port}"
        with pytest.raises(PeerGridConnectionError):
            await backend.post("iot/ping", {})
        await backend.close()
        assert not session.closed
