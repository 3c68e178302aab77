"""The IoT HTTP API, against a real Home Assistant HTTP server on 127.0.0.1.

Every endpoint is exercised with a good request and with each class of bad
request; every rejection is checked to leave the hub exactly as it was (no
gateway state, no stored report, no registry change, no event on the bus or
on an event stream).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Iterator
import copy
from datetime import UTC, datetime, timedelta
from decimal import Decimal
import json
from typing import Any
from unittest.mock import patch

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from freezegun.api import FrozenDateTimeFactory
from homeassistant.const import MATCH_ALL
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.setup import async_setup_component
from hypothesis import HealthCheck, given, settings, strategies as st
import pytest
from pytest_homeassistant_custom_component.common import (
    CLIENT_ID,
    MockUser,
    async_fire_time_changed,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.peergrid.const import DOMAIN
from custom_components.peergrid.grid import STORAGE_KEY as GRID_STORAGE_KEY
from custom_components.peergrid.http_api import async_setup_http_api
from custom_components.peergrid.iot_hub import (
    DATA_IOT_HUB,
    DEPIN_STORAGE_KEY,
    EVENT_ENERGY_REPORT,
    EVENT_IOT_HEARTBEAT,
    EVENT_IOT_NODE_DATA,
    EVENT_IOT_SCHEDULE,
    REPORTS_STORAGE_KEY,
    EventSubscription,
    GatewayState,
    IotHub,
    _with_compacted_heartbeat,
)
from custom_components.peergrid.peergrid_core import depin as depin_rules
from custom_components.peergrid.peergrid_core.api import (
    MAX_BODY_BYTES,
    ApiPath,
    GatewayEnergyReport,
)
from custom_components.peergrid.peergrid_core.events import (
    GridSummary,
    HeartbeatEvent,
    NodeDataEvent,
    ScheduleCommand,
    ScheduleData,
    ScheduleEvent,
    SchedulerAction,
    parse_sse,
)
from custom_components.peergrid.peergrid_core.payloads import (
    DepinHeartbeat,
    DepinRegistration,
    HeartbeatPing,
    NodeDataPing,
)

type ApiClient = TestClient[web.Request, web.Application]

NOW = datetime(2026, 2, 23, 10, 0, tzinfo=UTC)
DEVICE = "rpi-4b-prod-01"
OTHER_DEVICE = "rpi-4b-prod-02"
WALLET = "GBRPYHIL2CI3FNQ4BXLFMNDLFJUNPU2HY3ZMFSHONUCEOASW7QC7OX2H"
REPORT_ID = "6f1c2a8e-3b7d-4c55-9a0e-2d4b8c7f1e93"
NAN = "__NAN__"
"""Placeholder replaced by a bare JSON-ish token in the request text."""

HEARTBEAT_PING: dict[str, Any] = {"device_id": DEVICE, "status": "heartbeat"}
NODE_DATA_PING: dict[str, Any] = {
    "device_id": DEVICE,
    "voltage": 3.921,
    "battery_level": 72.4,
    "state": "IDLE",
    "source": "rpi_energy_grid",
    "timestamp": "2026-02-23T09:56:48Z",
    "connected_nodes_count": 2,
    "connected_nodes": [
        {"uid": "NODE_A", "voltage": 3.921},
        {"uid": "NODE_B", "voltage": 3.61},
    ],
    "nodes_detail": [
        {"uid": "NODE_A", "ip": "192.168.1.101", "voltage": 3.921, "soc": 72.4, "state": "IDLE"},
        {"uid": "NODE_B", "ip": "192.168.1.102", "voltage": 3.61, "soc": 28.1, "state": "IDLE"},
    ],
}
ENERGY_REPORT: dict[str, Any] = {
    "device_id": DEVICE,
    "sender_uid": "NODE_A",
    "receiver_uid": "NODE_B",
    "kwh_transferred": 0.5,
    "duration_seconds": 1800,
    "avg_voltage": 3.92,
    "avg_current": 0.27,
    "report_id": REPORT_ID,
}
REGISTRATION: dict[str, Any] = {
    "device_id": DEVICE,
    "hardware_model": "Raspberry Pi 4B",
    "firmware_version": "0.3.0",
    "wallet_address": WALLET,
    "location": {"latitude": 52.37, "longitude": 4.89},
}
DEPIN_HEARTBEAT: dict[str, Any] = {
    "device_id": DEVICE,
    "uptime_seconds": 3600,
    "timestamp": "2026-02-23T10:00:00Z",
}

POST_ENDPOINTS: dict[ApiPath, dict[str, Any]] = {
    ApiPath.IOT_PING: NODE_DATA_PING,
    ApiPath.IOT_ENERGY_REPORT: ENERGY_REPORT,
    ApiPath.DEPIN_REGISTER: REGISTRATION,
    ApiPath.DEPIN_HEARTBEAT: DEPIN_HEARTBEAT,
}


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def fast_keepalive() -> Iterator[None]:
    """Keep-alive comments every 50 ms instead of 15 s (patched before setup)."""
    with patch("custom_components.peergrid.http_api.SSE_KEEPALIVE_SECONDS", 0.05):
        yield


@pytest.fixture
def clock(freezer: FrozenDateTimeFactory) -> FrozenDateTimeFactory:
    """Home Assistant's clock frozen at :data:`NOW`.

    The event loop's clock freezes with it, so tests that wait on the event
    stream's timers run on the real clock instead.
    """
    freezer.move_to(NOW)
    return freezer


@pytest.fixture(autouse=True)
def grid_history(hass_storage: dict[str, Any]) -> None:
    """Two 0.5 kWh transfers from NODE_A to NODE_B that the grid ran through a gateway.

    An energy report mints only for a transfer the grid knows; these are what
    :data:`ENERGY_REPORT` (the specification's example) and a second report
    with another id describe.
    """
    ended = datetime.now(UTC) - timedelta(minutes=5)
    hass_storage[GRID_STORAGE_KEY] = {
        "version": 1,
        "minor_version": 1,
        "key": GRID_STORAGE_KEY,
        "data": {
            "transfers": [
                {
                    "transfer_id": transfer_id,
                    "sender": "NODE_A",
                    "receiver": "NODE_B",
                    "requested_wh": None,
                    "requested_duration_s": 1800.0,
                    "started_at": (ended - timedelta(seconds=1800)).isoformat(),
                    "ended_at": ended.isoformat(),
                    "state": "completed",
                    "stop_reason": "duration_reached",
                    "wh_out": 500.0,
                    "wh_in": 390.0,
                    "loss_wh": 110.0,
                    "avg_voltage_v": 3.92,
                    "avg_current_a": 0.27,
                    "trip_reason": None,
                }
                for transfer_id in ("a" * 32, "b" * 32)
            ],
            "totals": {},
        },
    }


@pytest.fixture
async def hub(hass: HomeAssistant) -> IotHub:
    """The integration set up with its HTTP API."""
    assert await async_setup_component(hass, "http", {})
    assert await async_setup_component(hass, DOMAIN, {})
    await hass.async_block_till_done()
    # Idempotent: returns the hub the integration's async_setup created, if it did.
    return await async_setup_http_api(hass)


@pytest.fixture
async def client(hub: IotHub, hass_client: ClientSessionGenerator) -> ApiClient:
    """An HTTP client holding a valid Home Assistant access token."""
    api_client: ApiClient = await hass_client()
    return api_client


@pytest.fixture
def peergrid_events(hass: HomeAssistant) -> list[Event]:
    """Every PeerGrid event fired on the Home Assistant bus."""
    events: list[Event] = []

    @callback
    def _capture(event: Event) -> None:
        if str(event.event_type).startswith(f"{DOMAIN}_"):
            events.append(event)

    hass.bus.async_listen(MATCH_ALL, _capture)
    return events


@pytest.fixture
def stream(hub: IotHub) -> EventSubscription:
    """An event subscription standing in for a connected event-stream client."""
    return hub.subscribe()


def hub_snapshot(hub: IotHub, hass_storage: dict[str, Any]) -> tuple[object, ...]:
    """Everything a request could change, as comparable data."""
    return (
        dict(hub.gateways),
        hub.reports.reports,
        hub.depin.nodes(),
        copy.deepcopy(hass_storage.get(REPORTS_STORAGE_KEY)),
        copy.deepcopy(hass_storage.get(DEPIN_STORAGE_KEY)),
    )


def body_text(body: dict[str, Any], token: str | None = None) -> str:
    """JSON text of ``body`` with the :data:`NAN` placeholder replaced by ``token``."""
    text = json.dumps(body)
    return text if token is None else text.replace(json.dumps(NAN), token)


def mutated(body: dict[str, Any], path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    """A deep copy of ``body`` with ``path`` set to ``value`` (or deleted for ``...``)."""
    result = copy.deepcopy(body)
    target: Any = result
    for part in path[:-1]:
        target = target[part]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return result


async def post(client: ApiClient, path: ApiPath, body: dict[str, Any]) -> ClientResponse:
    """POST ``body`` as JSON."""
    return await client.post(path.value, json=body)


async def next_message(response: ClientResponse) -> str:
    """Read one server-sent events message (up to its blank line)."""
    async with asyncio.timeout(5):
        raw = await response.content.readuntil(b"\n\n")
    return raw.decode()


async def next_event(response: ClientResponse) -> HeartbeatEvent | NodeDataEvent | Any:
    """Read messages until one is an event (skipping keep-alives) and parse it."""
    while (message := await next_message(response)).startswith(":"):
        pass
    return parse_sse(message)


async def wait_for(hass: HomeAssistant, predicate: Callable[[], bool]) -> None:
    """Let the loop run until ``predicate()`` holds (bounded for a failing test)."""
    async with asyncio.timeout(5):
        while not predicate():  # noqa: ASYNC110  (the server side has no event to wait on)
            await asyncio.sleep(0.01)
    await hass.async_block_till_done()


async def register(client: ApiClient, body: dict[str, Any] = REGISTRATION) -> dict[str, Any]:
    """Register a gateway and return its listing."""
    response = await post(client, ApiPath.DEPIN_REGISTER, body)
    assert response.status in (200, 201), await response.text()
    listing: dict[str, Any] = await response.json()
    return listing


# ---------------------------------------------------------------- setup


async def test_setup_is_idempotent(hass: HomeAssistant, hub: IotHub) -> None:
    """A second setup returns the same hub instead of registering the views twice."""
    assert hass.data[DATA_IOT_HUB] is hub
    assert await async_setup_http_api(hass) is hub


# ---------------------------------------------------------------- authentication


@pytest.mark.parametrize(
    ("method", "path"),
    [
        *(("post", path) for path in POST_ENDPOINTS),
        ("get", ApiPath.IOT_EVENTS),
        ("get", ApiPath.DEPIN_NODES),
        ("get", ApiPath.DEPIN_STATS),
    ],
)
async def test_requires_token(
    hass: HomeAssistant,
    hub: IotHub,
    hass_client_no_auth: ClientSessionGenerator,
    hass_storage: dict[str, Any],
    peergrid_events: list[Event],
    method: str,
    path: ApiPath,
) -> None:
    """Without a token Home Assistant answers 401 and the API changes nothing."""
    before = hub_snapshot(hub, hass_storage)
    client = await hass_client_no_auth()
    body = POST_ENDPOINTS.get(path)
    response = await client.request(method, path.value, json=body)
    assert response.status == 401
    await hass.async_block_till_done()
    assert hub_snapshot(hub, hass_storage) == before
    assert peergrid_events == []
    assert hub.subscriber_count == 0


# ---------------------------------------------------------------- POST iot/ping


async def test_heartbeat_ping(
    clock: FrozenDateTimeFactory,
    hass: HomeAssistant,
    hub: IotHub,
    client: ApiClient,
    stream: EventSubscription,
    peergrid_events: list[Event],
) -> None:
    """A heartbeat is recorded, published on the streams and fired on the bus."""
    response = await post(client, ApiPath.IOT_PING, HEARTBEAT_PING)
    assert response.status == 200
    assert await response.json() == {"accepted": "heartbeat"}
    await hass.async_block_till_done()

    state = hub.gateway(DEVICE)
    assert state == GatewayState(device_id=DEVICE, last_seen_at=NOW, last_heartbeat_at=NOW)
    assert [(event.event_type, event.data) for event in peergrid_events] == [
        (EVENT_IOT_HEARTBEAT, HEARTBEAT_PING)
    ]
    assert await stream.next_event() == HeartbeatEvent(data=HeartbeatPing(**HEARTBEAT_PING))


async def test_node_data_ping(
    clock: FrozenDateTimeFactory,
    hass: HomeAssistant,
    hub: IotHub,
    client: ApiClient,
    stream: EventSubscription,
    peergrid_events: list[Event],
) -> None:
    """Node data is kept as the gateway's latest telemetry; the heartbeat time survives it."""
    await post(client, ApiPath.IOT_PING, HEARTBEAT_PING)
    clock.tick(timedelta(seconds=10))
    response = await post(client, ApiPath.IOT_PING, NODE_DATA_PING)
    assert response.status == 200
    assert await response.json() == {"accepted": "node_data"}
    await hass.async_block_till_done()

    ping = NodeDataPing.model_validate(NODE_DATA_PING)
    state = hub.gateway(DEVICE)
    assert state is not None
    assert state.node_data == ping
    assert state.node_data_at == state.last_seen_at == NOW + timedelta(seconds=10)
    assert state.last_heartbeat_at == NOW
    assert peergrid_events[-1].event_type == EVENT_IOT_NODE_DATA
    assert peergrid_events[-1].data == ping.model_dump(mode="json")
    assert await stream.next_event() == HeartbeatEvent(data=HeartbeatPing(**HEARTBEAT_PING))
    assert await stream.next_event() == NodeDataEvent(data=ping)


async def test_heartbeat_after_node_data_keeps_telemetry(
    clock: FrozenDateTimeFactory, hub: IotHub, client: ApiClient
) -> None:
    """A reconnecting gateway's heartbeat does not erase its last telemetry."""
    await post(client, ApiPath.IOT_PING, NODE_DATA_PING)
    clock.tick(timedelta(seconds=5))
    await post(client, ApiPath.IOT_PING, HEARTBEAT_PING)
    state = hub.gateway(DEVICE)
    assert state is not None
    assert state.node_data == NodeDataPing.model_validate(NODE_DATA_PING)
    assert state.node_data_at == NOW
    assert state.last_heartbeat_at == NOW + timedelta(seconds=5)


async def test_ping_listeners(hub: IotHub, client: ApiClient) -> None:
    """Listeners hear every ping until they are removed."""
    heard: list[GatewayState] = []
    remove = hub.async_add_listener(heard.append)
    await post(client, ApiPath.IOT_PING, HEARTBEAT_PING)
    await post(client, ApiPath.IOT_PING, NODE_DATA_PING)
    assert [state.node_data is not None for state in heard] == [False, True]
    remove()
    remove()  # removing twice is harmless
    await post(client, ApiPath.IOT_PING, HEARTBEAT_PING)
    assert len(heard) == 2
    assert hub.gateway(OTHER_DEVICE) is None


# ---------------------------------------------------------------- bad requests, all endpoints

BAD_BODIES: list[tuple[ApiPath, dict[str, Any], str | None, str]] = [
    # (endpoint, body, bare token for the placeholder, field named in the answer)
    # iot/ping, node data
    (ApiPath.IOT_PING, mutated(NODE_DATA_PING, ("voltage",), ...), None, "voltage"),
    (ApiPath.IOT_PING, mutated(NODE_DATA_PING, ("batery_level",), 50), None, "batery_level"),
    (ApiPath.IOT_PING, mutated(NODE_DATA_PING, ("voltage",), "3.9"), None, "voltage"),
    (ApiPath.IOT_PING, mutated(NODE_DATA_PING, ("voltage",), True), None, "voltage"),
    (ApiPath.IOT_PING, mutated(NODE_DATA_PING, ("voltage",), NAN), "NaN", ""),
    (ApiPath.IOT_PING, mutated(NODE_DATA_PING, ("battery_level",), NAN), "Infinity", ""),
    (ApiPath.IOT_PING, mutated(NODE_DATA_PING, ("battery_level",), NAN), "-Infinity", ""),
    (ApiPath.IOT_PING, mutated(NODE_DATA_PING, ("voltage",), NAN), "1e999", ""),
    (ApiPath.IOT_PING, mutated(NODE_DATA_PING, ("battery_level",), -5), None, "battery_level"),
    (
        ApiPath.IOT_PING,
        mutated(NODE_DATA_PING, ("connected_nodes", 1, "voltage"), 1e9),
        None,
        "connected_nodes.1.voltage",
    ),
    (
        ApiPath.IOT_PING,
        mutated(NODE_DATA_PING, ("nodes_detail", 0, "ip"), 3232235877),
        None,
        "nodes_detail.0.ip",
    ),
    (
        ApiPath.IOT_PING,
        mutated(NODE_DATA_PING, ("connected_nodes_count",), 10**30),
        None,
        "connected_nodes_count",
    ),
    (
        ApiPath.IOT_PING,
        mutated(NODE_DATA_PING, ("timestamp",), "2026-02-23T11:00:00Z"),
        None,
        "timestamp",
    ),
    # iot/ping, heartbeat
    (ApiPath.IOT_PING, mutated(HEARTBEAT_PING, ("device_id",), ...), None, "device_id"),
    (ApiPath.IOT_PING, mutated(HEARTBEAT_PING, ("status",), "alive"), None, "status"),
    (ApiPath.IOT_PING, mutated(HEARTBEAT_PING, ("device_id",), "rpi 4b"), None, "device_id"),
    # iot/energy/report
    (ApiPath.IOT_ENERGY_REPORT, mutated(ENERGY_REPORT, ("report_id",), ...), None, "report_id"),
    (ApiPath.IOT_ENERGY_REPORT, mutated(ENERGY_REPORT, ("note",), "x"), None, "note"),
    (
        ApiPath.IOT_ENERGY_REPORT,
        mutated(ENERGY_REPORT, ("report_id",), "report-1"),
        None,
        "report_id",
    ),
    (
        ApiPath.IOT_ENERGY_REPORT,
        mutated(ENERGY_REPORT, ("kwh_transferred",), -0.5),
        None,
        "kwh_transferred",
    ),
    (
        ApiPath.IOT_ENERGY_REPORT,
        mutated(ENERGY_REPORT, ("kwh_transferred",), 1e12),
        None,
        "kwh_transferred",
    ),
    (ApiPath.IOT_ENERGY_REPORT, mutated(ENERGY_REPORT, ("kwh_transferred",), NAN), "NaN", ""),
    (
        ApiPath.IOT_ENERGY_REPORT,
        mutated(ENERGY_REPORT, ("duration_seconds",), "1800"),
        None,
        "duration_seconds",
    ),
    (
        ApiPath.IOT_ENERGY_REPORT,
        mutated(ENERGY_REPORT, ("receiver_uid",), "NODE_A"),
        None,
        "receiver_uid",
    ),
    # depin/register
    (
        ApiPath.DEPIN_REGISTER,
        mutated(REGISTRATION, ("wallet_address",), ...),
        None,
        "wallet_address",
    ),
    (
        ApiPath.DEPIN_REGISTER,
        mutated(REGISTRATION, ("wallet_address",), WALLET[:-1] + "A"),
        None,
        "wallet_address",
    ),
    (ApiPath.DEPIN_REGISTER, mutated(REGISTRATION, ("owner",), "me"), None, "owner"),
    (
        ApiPath.DEPIN_REGISTER,
        mutated(REGISTRATION, ("location", "latitude"), 91.0),
        None,
        "location.latitude",
    ),
    (
        ApiPath.DEPIN_REGISTER,
        mutated(REGISTRATION, ("location", "longitude"), "4.89"),
        None,
        "location.longitude",
    ),
    (ApiPath.DEPIN_REGISTER, mutated(REGISTRATION, ("location", "latitude"), NAN), "NaN", ""),
    (
        ApiPath.DEPIN_REGISTER,
        mutated(REGISTRATION, ("firmware_version",), 3),
        None,
        "firmware_version",
    ),
    # depin/heartbeat (the gateway is registered first, see the test)
    (
        ApiPath.DEPIN_HEARTBEAT,
        mutated(DEPIN_HEARTBEAT, ("device_id",), OTHER_DEVICE),
        None,
        "device_id",
    ),
    (
        ApiPath.DEPIN_HEARTBEAT,
        mutated(DEPIN_HEARTBEAT, ("uptime_seconds",), ...),
        None,
        "uptime_seconds",
    ),
    (ApiPath.DEPIN_HEARTBEAT, mutated(DEPIN_HEARTBEAT, ("uptime",), 1), None, "uptime"),
    (
        ApiPath.DEPIN_HEARTBEAT,
        mutated(DEPIN_HEARTBEAT, ("uptime_seconds",), -1),
        None,
        "uptime_seconds",
    ),
    (ApiPath.DEPIN_HEARTBEAT, mutated(DEPIN_HEARTBEAT, ("uptime_seconds",), NAN), "Infinity", ""),
    (
        ApiPath.DEPIN_HEARTBEAT,
        mutated(DEPIN_HEARTBEAT, ("routed_kwh",), -1.0),
        None,
        "routed_kwh",
    ),
    (
        ApiPath.DEPIN_HEARTBEAT,
        mutated(DEPIN_HEARTBEAT, ("routed_kwh",), 1e20),
        None,
        "routed_kwh",
    ),
    (
        ApiPath.DEPIN_HEARTBEAT,
        mutated(DEPIN_HEARTBEAT, ("timestamp",), 1771840800),
        None,
        "timestamp",
    ),
    (
        ApiPath.DEPIN_HEARTBEAT,
        mutated(DEPIN_HEARTBEAT, ("timestamp",), "2026-02-23T10:30:00Z"),
        None,
        "timestamp",
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "token", "field"),
    BAD_BODIES,
    ids=[
        f"{path.name}-{field or 'body'}-{index}"
        for index, (path, _, _, field) in enumerate(BAD_BODIES)
    ],
)
async def test_invalid_payload(  # noqa: PLR0917  (fixtures and parameters)
    clock: FrozenDateTimeFactory,
    hass: HomeAssistant,
    hub: IotHub,
    client: ApiClient,
    hass_storage: dict[str, Any],
    stream: EventSubscription,
    peergrid_events: list[Event],
    path: ApiPath,
    body: dict[str, Any],
    token: str | None,
    field: str,
) -> None:
    """A bad body is answered 400 at the offending field and changes nothing."""
    await register(client)
    await hass.async_block_till_done()
    peergrid_events.clear()
    before = hub_snapshot(hub, hass_storage)

    response = await client.post(
        path.value, data=body_text(body, token), headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    answer = await response.json()
    assert answer["error"] == "invalid_payload"
    assert field in [problem["field"] for problem in answer["fields"]], answer
    assert all(problem["message"] for problem in answer["fields"])

    await hass.async_block_till_done()
    assert hub_snapshot(hub, hass_storage) == before
    assert peergrid_events == []
    assert stream.queued == 0


@pytest.mark.parametrize("path", list(POST_ENDPOINTS))
@pytest.mark.parametrize(
    ("text", "message_part"),
    [
        ("{", "not JSON"),
        ("", "not JSON"),
        ("[]", ""),
        ("null", ""),
        ('{"device_id": "a", "device_id": "b"}', "more than once"),
        ("[" * 100_00 + "]" * 100_00, ""),
        ("1" * 5000, "not usable JSON"),
    ],
    ids=["truncated", "empty", "array", "null", "repeated-key", "deep", "long-int"],
)
async def test_malformed_body(
    hass: HomeAssistant,
    hub: IotHub,
    client: ApiClient,
    hass_storage: dict[str, Any],
    peergrid_events: list[Event],
    path: ApiPath,
    text: str,
    message_part: str,
) -> None:
    """Bodies that are not one JSON object are refused with a 400 and change nothing."""
    before = hub_snapshot(hub, hass_storage)
    response = await client.post(
        path.value, data=text, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    answer = await response.json()
    assert answer["error"] == "invalid_payload"
    assert any(message_part in problem["message"] for problem in answer["fields"]), answer
    await hass.async_block_till_done()
    assert hub_snapshot(hub, hass_storage) == before
    assert peergrid_events == []


@pytest.mark.parametrize("path", list(POST_ENDPOINTS))
async def test_non_utf8_body(hub: IotHub, client: ApiClient, path: ApiPath) -> None:
    """A body that is not UTF-8 is refused at the body."""
    response = await client.post(
        path.value, data=b'{"device_id": "\xff"}', headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    assert (await response.json())["fields"] == [
        {"field": "", "message": "the body is not UTF-8 text"}
    ]


@pytest.mark.parametrize("path", list(POST_ENDPOINTS))
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_oversize_body(
    clock: FrozenDateTimeFactory,
    hass: HomeAssistant,
    hub: IotHub,
    client: ApiClient,
    hass_storage: dict[str, Any],
    peergrid_events: list[Event],
    path: ApiPath,
    chunked: bool,
) -> None:
    """A body over 64 KiB is refused with 413, whether its length is announced or not."""
    await register(client)
    await hass.async_block_till_done()
    peergrid_events.clear()
    before = hub_snapshot(hub, hass_storage)
    text = json.dumps({**POST_ENDPOINTS[path], "padding": "x" * MAX_BODY_BYTES}).encode()

    async def chunks() -> AsyncGenerator[bytes]:
        for start in range(0, len(text), 4096):
            yield text[start : start + 4096]

    response = await client.post(
        path.value,
        data=chunks() if chunked else text,
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 413
    assert (await response.json())["error"] == "payload_too_large"
    await hass.async_block_till_done()
    assert hub_snapshot(hub, hass_storage) == before
    assert peergrid_events == []


@pytest.mark.parametrize("path", list(POST_ENDPOINTS))
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_wrong_content_type(
    hass: HomeAssistant,
    hub: IotHub,
    client: ApiClient,
    hass_storage: dict[str, Any],
    peergrid_events: list[Event],
    path: ApiPath,
    content_type: str | None,
) -> None:
    """A well-formed body with another content type is refused with 415."""
    before = hub_snapshot(hub, hass_storage)
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = await client.post(
        path.value, data=json.dumps(POST_ENDPOINTS[path]).encode(), headers=headers
    )
    assert response.status == 415
    assert (await response.json())["error"] == "unsupported_media_type"
    await hass.async_block_till_done()
    assert hub_snapshot(hub, hass_storage) == before
    assert peergrid_events == []


async def test_json_with_charset_is_accepted(client: ApiClient) -> None:
    """``application/json; charset=utf-8`` is JSON."""
    response = await client.post(
        ApiPath.IOT_PING.value,
        data=json.dumps(HEARTBEAT_PING),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status == 200


# ---------------------------------------------------------------- GET iot/events


async def test_event_stream(
    hass: HomeAssistant, fast_keepalive: None, hub: IotHub, client: ApiClient
) -> None:
    """A client filtered to one gateway gets keep-alives and that gateway's events only."""
    response = await client.get(ApiPath.IOT_EVENTS.value, params={"device_id": DEVICE})
    assert response.status == 200
    assert response.content_type == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    await wait_for(hass, lambda: hub.subscriber_count == 1)

    assert await next_message(response) == ": keep-alive\n\n"

    await post(client, ApiPath.IOT_PING, {**HEARTBEAT_PING, "device_id": OTHER_DEVICE})
    await post(client, ApiPath.IOT_PING, HEARTBEAT_PING)
    await post(client, ApiPath.IOT_PING, NODE_DATA_PING)
    assert await next_event(response) == HeartbeatEvent(data=HeartbeatPing(**HEARTBEAT_PING))
    assert await next_event(response) == NodeDataEvent(
        data=NodeDataPing.model_validate(NODE_DATA_PING)
    )

    response.close()
    # The server notices at its next write (a keep-alive) and lets go of the subscription.
    await wait_for(hass, lambda: hub.subscriber_count == 0)


async def test_event_stream_unfiltered_and_published(
    hass: HomeAssistant,
    fast_keepalive: None,
    hub: IotHub,
    client: ApiClient,
    peergrid_events: list[Event],
) -> None:
    """Without a filter every gateway's events arrive, including ones the grid publishes."""
    response = await client.get(ApiPath.IOT_EVENTS.value)
    await wait_for(hass, lambda: hub.subscriber_count == 1)
    await post(client, ApiPath.IOT_PING, {**HEARTBEAT_PING, "device_id": OTHER_DEVICE})
    schedule = ScheduleEvent(
        data=ScheduleData(
            device_id=DEVICE,
            commands=(ScheduleCommand(uid="NODE_A", action=SchedulerAction.DISCHARGE),),
            grid_summary=GridSummary(node_count=2, avg_soc=50.0, soc_spread=44.3),
        )
    )
    hub.publish(schedule)
    first = await next_event(response)
    assert isinstance(first, HeartbeatEvent)
    assert first.data.device_id == OTHER_DEVICE
    assert await next_event(response) == schedule
    assert peergrid_events[-1].event_type == EVENT_IOT_SCHEDULE
    assert peergrid_events[-1].data == schedule.data.model_dump(mode="json")
    response.close()
    await wait_for(hass, lambda: hub.subscriber_count == 0)


async def test_event_stream_ends_on_shutdown(
    hass: HomeAssistant, hub: IotHub, client: ApiClient
) -> None:
    """When Home Assistant stops, open streams end after the events already queued."""
    response = await client.get(ApiPath.IOT_EVENTS.value)
    await wait_for(hass, lambda: hub.subscriber_count == 1)
    await post(client, ApiPath.IOT_PING, HEARTBEAT_PING)
    hub.async_shutdown()
    async with asyncio.timeout(5):
        rest = (await response.content.read()).decode()
    assert parse_sse(rest) == HeartbeatEvent(data=HeartbeatPing(**HEARTBEAT_PING))
    await wait_for(hass, lambda: hub.subscriber_count == 0)


async def test_event_stream_write_to_gone_client(
    hass: HomeAssistant, fast_keepalive: None, hub: IotHub, client: ApiClient
) -> None:
    """A write that finds the client gone ends the stream quietly (no handler cancellation)."""
    with patch("aiohttp.web.StreamResponse.write", side_effect=ConnectionResetError):
        response = await client.get(ApiPath.IOT_EVENTS.value)
        assert response.status == 200
        await wait_for(hass, lambda: hub.subscriber_count == 0)
    response.close()


@pytest.mark.parametrize("device_id", ["", "rpi 4b", "x" * 65])
async def test_event_stream_bad_filter(hub: IotHub, client: ApiClient, device_id: str) -> None:
    """A malformed device filter is refused before any stream opens."""
    response = await client.get(ApiPath.IOT_EVENTS.value, params={"device_id": device_id})
    assert response.status == 400
    answer = await response.json()
    assert answer["error"] == "invalid_payload"
    assert [problem["field"] for problem in answer["fields"]] == ["device_id"]
    assert hub.subscriber_count == 0


async def test_slow_subscriber_is_cut_off(hass: HomeAssistant) -> None:
    """A client that lags too far behind gets the queued events, then the end."""
    hub = IotHub(hass, max_queued_events=2)
    subscription = hub.subscribe(DEVICE)
    events = [HeartbeatEvent(data=HeartbeatPing(**HEARTBEAT_PING)) for _ in range(4)]
    for event in events:
        hub.publish(event)
    assert subscription.closed
    assert [await subscription.next_event() for _ in range(3)] == [*events[:2], None]
    hub.unsubscribe(subscription)
    assert hub.subscriber_count == 0


# ---------------------------------------------------------------- POST iot/energy/report


async def test_energy_report_exactly_once(
    clock: FrozenDateTimeFactory,
    hass: HomeAssistant,
    hub: IotHub,
    client: ApiClient,
    hass_storage: dict[str, Any],
) -> None:
    """The same report twice: stored once, announced once, the repeat acknowledged."""
    announced: list[Event] = []
    hass.bus.async_listen(EVENT_ENERGY_REPORT, announced.append)

    first = await post(client, ApiPath.IOT_ENERGY_REPORT, ENERGY_REPORT)
    assert first.status == 200, await first.text()
    assert await first.json() == {"accepted": True, "duplicate": False, "report_id": REPORT_ID}
    # Upper-case hex is the same id: the repeat is recognised.
    again = await post(
        client, ApiPath.IOT_ENERGY_REPORT, {**ENERGY_REPORT, "report_id": REPORT_ID.upper()}
    )
    assert again.status == 200
    assert await again.json() == {"accepted": False, "duplicate": True, "report_id": REPORT_ID}
    await hass.async_block_till_done()

    assert len(hub.reports) == 1
    stored = hub.reports.get(REPORT_ID)
    assert stored is not None
    assert stored.received_at == NOW
    assert stored.report == GatewayEnergyReport.model_validate(ENERGY_REPORT)
    assert stored.report.kwh_transferred == Decimal("0.5")
    assert len(announced) == 1
    assert announced[0].data == {
        **ENERGY_REPORT,
        "kwh_transferred": 0.5,
        "received_at": NOW.isoformat(),
    }
    # Written before the answer, and readable by the next start of Home Assistant.
    assert len(hass_storage[REPORTS_STORAGE_KEY]["data"]["reports"]) == 1
    restarted = IotHub(hass)
    await restarted.async_load()
    assert REPORT_ID in restarted.reports
    assert restarted.reports.reports == hub.reports.reports


async def test_energy_report_concurrent_duplicates(
    hass: HomeAssistant, hub: IotHub, client: ApiClient
) -> None:
    """Two copies of one report in flight at once are still accepted once."""
    announced: list[Event] = []
    hass.bus.async_listen(EVENT_ENERGY_REPORT, announced.append)
    answers = await asyncio.gather(
        *(post(client, ApiPath.IOT_ENERGY_REPORT, ENERGY_REPORT) for _ in range(3))
    )
    bodies = [await answer.json() for answer in answers]
    assert sorted(body["accepted"] for body in bodies) == [False, False, True]
    await hass.async_block_till_done()
    assert len(hub.reports) == 1
    assert len(announced) == 1


async def test_energy_report_failed_save_changes_nothing(hass: HomeAssistant, hub: IotHub) -> None:
    """If the report cannot be written it is not kept, so the gateway's retry is accepted."""
    report = GatewayEnergyReport.model_validate(ENERGY_REPORT)
    with (
        patch("homeassistant.helpers.storage.Store.async_save", side_effect=OSError("disk full")),
        pytest.raises(OSError, match="disk full"),
    ):
        await hub.async_add_report(report)
    assert REPORT_ID not in hub.reports
    assert await hub.async_add_report(report) is not None


async def test_energy_reports_distinct_ids(hub: IotHub, client: ApiClient) -> None:
    """Two transfers with identical numbers but distinct ids are two reports."""
    other_id = "0b6a7c1d-2e3f-4a5b-8c9d-0e1f2a3b4c5d"
    await post(client, ApiPath.IOT_ENERGY_REPORT, ENERGY_REPORT)
    response = await post(
        client, ApiPath.IOT_ENERGY_REPORT, {**ENERGY_REPORT, "report_id": other_id}
    )
    assert (await response.json())["accepted"] is True
    assert [entry.report.report_id for entry in hub.reports.reports] == [REPORT_ID, other_id]


# ---------------------------------------------------------------- DePIN


async def test_depin_register(
    clock: FrozenDateTimeFactory,
    hass: HomeAssistant,
    hub: IotHub,
    client: ApiClient,
    hass_storage: dict[str, Any],
) -> None:
    """Registration earns 100 LT at once, visible in the node list and the stats."""
    response = await post(client, ApiPath.DEPIN_REGISTER, REGISTRATION)
    assert response.status == 201
    listing = await response.json()
    expected = {
        **REGISTRATION,
        "registered_at": "2026-02-23T10:00:00Z",
        "last_heartbeat_at": None,
        "online": False,
        "reliability_pct": 0.0,
        "rewards_earned": 100.0,
        "routed_kwh": 0.0,
    }
    assert listing == expected

    nodes = await client.get(ApiPath.DEPIN_NODES.value)
    assert nodes.status == 200
    assert await nodes.json() == {"nodes": [expected]}
    stats = await client.get(ApiPath.DEPIN_STATS.value)
    assert await stats.json() == {
        "registered_count": 1,
        "online_count": 0,
        "total_rewards": 100.0,
        "reliability_pct": {DEVICE: 0.0},
    }
    assert DEVICE in hub.depin
    assert hass_storage[DEPIN_STORAGE_KEY]["data"]["nodes"][0]["registration"] == REGISTRATION


async def test_depin_register_again_updates(
    clock: FrozenDateTimeFactory, hub: IotHub, client: ApiClient
) -> None:
    """Registering a known gateway updates its details; it keeps its date and earns nothing."""
    await register(client)
    clock.tick(timedelta(minutes=1))
    await post(client, ApiPath.DEPIN_HEARTBEAT, DEPIN_HEARTBEAT)
    clock.tick(timedelta(minutes=1))
    update = {**REGISTRATION, "firmware_version": "0.4.0", "location": None}
    response = await post(client, ApiPath.DEPIN_REGISTER, update)
    assert response.status == 200
    listing = await response.json()
    assert listing["firmware_version"] == "0.4.0"
    assert listing["location"] is None
    assert listing["registered_at"] == "2026-02-23T10:00:00Z"
    assert listing["last_heartbeat_at"] == "2026-02-23T10:01:00Z"
    assert listing["rewards_earned"] == 100.0
    assert len(hub.depin) == 1


async def test_depin_heartbeats_uptime_and_reliability(
    clock: FrozenDateTimeFactory, hub: IotHub, client: ApiClient
) -> None:
    """Heartbeats count uptime on the server's clock; silence lowers reliability."""
    await register(client)
    clock.tick(timedelta(seconds=60))
    response = await post(client, ApiPath.DEPIN_HEARTBEAT, DEPIN_HEARTBEAT)
    assert response.status == 200
    listing = await response.json()
    assert listing["online"] is True
    assert listing["reliability_pct"] == 100.0
    assert listing["last_heartbeat_at"] == "2026-02-23T10:01:00Z"

    # Silent for 9 minutes: the last beat vouches for two intervals (2 min) only.
    clock.tick(timedelta(minutes=9))
    node = (await (await client.get(ApiPath.DEPIN_NODES.value)).json())["nodes"][0]
    assert node["online"] is False
    assert node["reliability_pct"] == pytest.approx(180 / 600 * 100)
    stats = await (await client.get(ApiPath.DEPIN_STATS.value)).json()
    assert stats["online_count"] == 0
    assert stats["reliability_pct"] == {DEVICE: pytest.approx(30.0)}

    response = await post(
        client,
        ApiPath.DEPIN_HEARTBEAT,
        {**DEPIN_HEARTBEAT, "timestamp": "2026-02-23T10:10:00+00:00"},
    )
    listing = await response.json()
    assert listing["online"] is True
    assert listing["last_heartbeat_at"] == "2026-02-23T10:10:00Z"


@pytest.mark.slow
async def test_depin_daily_and_routing_rewards(
    clock: FrozenDateTimeFactory,
    hass: HomeAssistant,
    hub: IotHub,
    client: ApiClient,
    hass_client: ClientSessionGenerator,
    hass_admin_user: MockUser,
) -> None:
    """A day of beats earns 10 LT; routed energy 1 LT/kWh, a counter reset counted as new."""
    await register(client)
    for routed in (2.5, 4.0, 1.0):  # cumulative; 1.0 after 4.0 is a reset
        clock.tick(timedelta(seconds=30))
        await post(client, ApiPath.DEPIN_HEARTBEAT, {**DEPIN_HEARTBEAT, "routed_kwh": routed})
    # The rest of the day, beating every 30 s (the registry itself, to keep it quick).
    beat = DepinHeartbeat.model_validate(DEPIN_HEARTBEAT)
    beats = 0
    while hub.now() < NOW + timedelta(days=1):
        clock.tick(timedelta(seconds=30))
        await hub.depin.async_heartbeat(beat)
        beats += 1
    # A day later the first access token has expired.
    refresh_token = await hass.auth.async_create_refresh_token(hass_admin_user, CLIENT_ID)
    client = await hass_client(hass.auth.async_create_access_token(refresh_token))
    node = (await (await client.get(ApiPath.DEPIN_NODES.value)).json())["nodes"][0]
    assert node["routed_kwh"] == 5.0
    assert node["reliability_pct"] == 100.0
    assert node["online"] is True
    assert node["rewards_earned"] == 100 + 10 + 5
    stats = await (await client.get(ApiPath.DEPIN_STATS.value)).json()
    assert stats["total_rewards"] == 115.0
    # The record keeps about one beat per allowed gap, however many arrive.
    record = hub.depin.record(DEVICE)
    assert record is not None
    assert len(record.heartbeats) <= timedelta(days=1) / record.max_gap + 1 < beats / 3

    # Delayed save: written once its delay has passed, and read back identically.
    clock.tick(timedelta(minutes=1))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    restarted = IotHub(hass)
    await restarted.async_load()
    assert restarted.depin.nodes() == hub.depin.nodes()


async def test_depin_heartbeat_unregistered(
    clock: FrozenDateTimeFactory,
    hass: HomeAssistant,
    hub: IotHub,
    client: ApiClient,
    hass_storage: dict[str, Any],
) -> None:
    """A heartbeat of an unknown gateway is refused at device_id and registers nothing."""
    before = hub_snapshot(hub, hass_storage)
    response = await post(client, ApiPath.DEPIN_HEARTBEAT, DEPIN_HEARTBEAT)
    assert response.status == 400
    answer = await response.json()
    assert answer["fields"] == [
        {"field": "device_id", "message": f"gateway {DEVICE} is not registered"}
    ]
    assert hub_snapshot(hub, hass_storage) == before


async def test_depin_empty_registry(client: ApiClient) -> None:
    """An empty registry lists nothing and sums to zero."""
    assert await (await client.get(ApiPath.DEPIN_NODES.value)).json() == {"nodes": []}
    assert await (await client.get(ApiPath.DEPIN_STATS.value)).json() == {
        "registered_count": 0,
        "online_count": 0,
        "total_rewards": 0.0,
        "reliability_pct": {},
    }


async def test_depin_registry_model(
    clock: FrozenDateTimeFactory, hass: HomeAssistant, hub: IotHub
) -> None:
    """The registry's own accessors agree with what the API lists."""
    listing, created = await hub.depin.async_register(DepinRegistration(**REGISTRATION))
    assert created
    assert hub.depin.node(DEVICE) == listing
    assert hub.depin.node(OTHER_DEVICE) is None
    assert hub.depin.record(OTHER_DEVICE) is None


# ---------------------------------------------------------------- heartbeat compaction


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    gaps=st.lists(st.integers(min_value=0, max_value=400), min_size=1, max_size=40),
    tail=st.integers(min_value=0, max_value=86_400 * 40),
)
def test_compaction_preserves_rewards(gaps: list[int], tail: int) -> None:
    """Dropping redundant beats never changes uptime, reliability or rewards."""
    full = depin_rules.DepinNode(node_id=DEVICE, registered_at=NOW)
    compact = full
    at = NOW
    for gap in gaps:
        at += timedelta(seconds=gap)
        full = full.with_heartbeat(at)
        compact = _with_compacted_heartbeat(compact, at)
    now = at + timedelta(seconds=tail)
    assert depin_rules.uptime_spans(compact, now=now) == depin_rules.uptime_spans(full, now=now)
    assert depin_rules.reliability_pct(compact, now=now) == depin_rules.reliability_pct(
        full, now=now
    )
    assert depin_rules.depin_rewards(compact, now=now) == depin_rules.depin_rewards(full, now=now)
    assert compact.heartbeats[-1] == full.heartbeats[-1]


def test_compaction_never_steps_back() -> None:
    """A clock set back does not reorder the record."""
    record = _with_compacted_heartbeat(
        depin_rules.DepinNode(node_id=DEVICE, registered_at=NOW), NOW - timedelta(minutes=1)
    )
    assert record.heartbeats == (NOW,)
    later = _with_compacted_heartbeat(record, NOW + timedelta(minutes=10))
    earlier = _with_compacted_heartbeat(later, NOW + timedelta(minutes=5))
    assert earlier.heartbeats[-1] == NOW + timedelta(minutes=10)
