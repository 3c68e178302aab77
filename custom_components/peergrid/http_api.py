"""The IoT HTTP API that edge gateways call, served by Home Assistant.

Every view lives under ``/api/peergrid/`` and requires a Home Assistant access
token (Home Assistant itself answers 401 without one). The paths, limits and
answer models come from the core (:mod:`.peergrid_core.api`), the request
models from :mod:`.peergrid_core.payloads`; ``docs/api.md`` describes the API
for people and ``docs/openapi.json`` for machines.

A request is read in a fixed order, and the first failure answers it:

1. content type ``application/json`` (else 415);
2. at most 64 KiB of body (else 413), read incrementally so a chunked body
   cannot grow past the limit either;
3. strict JSON (no NaN, no Infinity, no repeated keys) and the endpoint's
   model (else 400 ``invalid_payload`` listing every offending field).

Nothing is recorded, stored or published before all three pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from http import HTTPStatus
from typing import Final

from aiohttp import web
from homeassistant.const import EVENT_HOMEASSISTANT_STOP
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.helpers.http import HomeAssistantView
from pydantic import BaseModel, TypeAdapter, ValidationError

from .const import LOGGER
from .iot_hub import DATA_IOT_HUB, IotHub
from .ledger import DATA_LEDGER
from .peergrid_core.api import (
    JSON_CONTENT_TYPE,
    MAX_BODY_BYTES,
    SSE_CONTENT_TYPE,
    SSE_KEEPALIVE_COMMENT,
    SSE_KEEPALIVE_SECONDS,
    ApiError,
    ApiPath,
    ErrorCode,
    FieldProblem,
    GatewayEnergyReport,
    PingAccepted,
    ReportAccepted,
    decode_json_body,
    field_problems,
)
from .peergrid_core.errors import PeerGridValidationError
from .peergrid_core.events import EventType
from .peergrid_core.ledger import IdempotencyConflictError, LedgerStorageError
from .peergrid_core.payload_fields import DeviceId, clock_context
from .peergrid_core.payloads import DepinHeartbeat, DepinRegistration, HeartbeatPing, parse_ping

__all__ = ["async_setup_http_api"]

_DEVICE_ID: Final[TypeAdapter[str]] = TypeAdapter(DeviceId)
_READ_CHUNK_BYTES: Final = 16 * 1024


class _RejectedError(Exception):
    """A request refused with an :class:`ApiError` answer."""

    def __init__(self, status: HTTPStatus, error: ApiError) -> None:
        super().__init__(error.message)
        self.status = status
        self.error = error

    def response(self) -> web.Response:
        return _json_response(self.error, self.status)


def _json_response(model: BaseModel, status: HTTPStatus = HTTPStatus.OK) -> web.Response:
    """Answer with a model, serialised exactly as the OpenAPI document says."""
    return web.Response(body=model.model_dump_json(), status=status, content_type=JSON_CONTENT_TYPE)


def _invalid(problems: tuple[FieldProblem, ...]) -> _RejectedError:
    fields = ", ".join(problem.field or "(body)" for problem in problems)
    return _RejectedError(
        HTTPStatus.BAD_REQUEST,
        ApiError(
            error=ErrorCode.INVALID_PAYLOAD,
            message=f"invalid payload: {fields}",
            fields=problems,
        ),
    )


def _validated[T](validate: Callable[[], T]) -> T:
    """Run a validation; turn its failure into a 400 answer naming the fields."""
    try:
        return validate()
    except ValidationError as err:
        raise _invalid(field_problems(err)) from err
    except PeerGridValidationError as err:
        raise _invalid((FieldProblem(field=err.field, message=err.message),)) from err


async def _read_json(request: web.Request) -> object:
    """Return the decoded JSON body, or raise the 415/413/400 answer."""
    if request.content_type != JSON_CONTENT_TYPE:
        raise _RejectedError(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            ApiError(
                error=ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                message=f"the body must be {JSON_CONTENT_TYPE}, not {request.content_type}",
            ),
        )
    too_large = _RejectedError(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        ApiError(
            error=ErrorCode.PAYLOAD_TOO_LARGE,
            message=f"the body must be at most {MAX_BODY_BYTES} bytes",
        ),
    )
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise too_large
    body = bytearray()
    while chunk := await request.content.read(_READ_CHUNK_BYTES):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise too_large
    return _validated(lambda: decode_json_body(bytes(body)))


class _IotView(HomeAssistantView):
    """A view of the IoT API: authenticated, bound to the hub."""

    requires_auth = True

    def __init__(self, hub: IotHub) -> None:
        """Serve ``hub``."""
        self._hub = hub


class IotPingView(_IotView):
    """``POST /api/peergrid/iot/ping``: a heartbeat or node-data ping."""

    url = ApiPath.IOT_PING.value
    name = "api:peergrid:iot:ping"

    async def post(self, request: web.Request) -> web.Response:
        """Record the ping and publish its event."""
        try:
            body = await _read_json(request)
            ping = _validated(lambda: parse_ping(body, now=self._hub.now()))
        except _RejectedError as rejected:
            return rejected.response()
        self._hub.async_record_ping(ping)
        if isinstance(ping, HeartbeatPing):
            return _json_response(PingAccepted(accepted=EventType.HEARTBEAT))
        return _json_response(PingAccepted(accepted=EventType.NODE_DATA))


class IotEventsView(_IotView):
    """``GET /api/peergrid/iot/events``: grid events as server-sent events."""

    url = ApiPath.IOT_EVENTS.value
    name = "api:peergrid:iot:events"

    def __init__(self, hub: IotHub, *, keepalive_s: float | None = None) -> None:
        """Serve ``hub``'s events, with a keep-alive comment after ``keepalive_s`` of silence."""
        super().__init__(hub)
        self._keepalive_s = SSE_KEEPALIVE_SECONDS if keepalive_s is None else keepalive_s

    async def get(self, request: web.Request) -> web.StreamResponse:
        """Stream events until the client leaves or Home Assistant stops."""
        device_id: str | None = None
        if (raw := request.query.get("device_id")) is not None:
            try:
                device_id = _validated(lambda: _DEVICE_ID.validate_python(raw))
            except _RejectedError as rejected:
                error = rejected.error.model_copy(
                    update={
                        "fields": tuple(
                            problem.model_copy(update={"field": "device_id"})
                            for problem in rejected.error.fields
                        )
                    }
                )
                return _json_response(error, rejected.status)

        response = web.StreamResponse(
            # Proxies must neither cache nor buffer a live stream.
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        response.content_type = SSE_CONTENT_TYPE
        subscription = self._hub.subscribe(device_id)
        try:
            await response.prepare(request)
            while True:
                try:
                    async with asyncio.timeout(self._keepalive_s):
                        event = await subscription.next_event()
                except TimeoutError:
                    await response.write(SSE_KEEPALIVE_COMMENT.encode())
                    continue
                if event is None:
                    break
                await response.write(event.to_sse().encode())
        except ConnectionResetError:
            # The client went away; aiohttp reports it at the next write.
            LOGGER.debug("Event stream client disconnected")
        finally:
            self._hub.unsubscribe(subscription)
        return response


class EnergyReportView(_IotView):
    """``POST /api/peergrid/iot/energy/report``: a completed transfer, exactly once."""

    url = ApiPath.IOT_ENERGY_REPORT.value
    name = "api:peergrid:iot:energy_report"

    async def post(self, request: web.Request) -> web.Response:
        """Store a new report; acknowledge a repeated one without storing it."""
        try:
            body = await _read_json(request)
            report = _validated(lambda: GatewayEnergyReport.model_validate(body))
        except _RejectedError as rejected:
            return rejected.response()
        ledger = self._hub.hass.data[DATA_LEDGER]
        try:
            outcome = await ledger.async_process_report(report)
        except PeerGridValidationError as err:
            # Refused by the ledger's rules (no such transfer, energy that does
            # not match what the grid measured, ...): nothing was written.
            return _invalid((FieldProblem(field=err.field, message=err.message),)).response()
        except IdempotencyConflictError as err:
            return _invalid((FieldProblem(field="report_id", message=str(err)),)).response()
        except LedgerStorageError as err:
            LOGGER.error("Energy report %s not recorded: %s", report.report_id, err)
            return _json_response(
                ApiError(error=ErrorCode.LEDGER_UNAVAILABLE, message=str(err)),
                HTTPStatus.SERVICE_UNAVAILABLE,
            )
        if not outcome.duplicate:
            await self._hub.async_add_report(report)
        return _json_response(
            ReportAccepted(
                accepted=not outcome.duplicate,
                duplicate=outcome.duplicate,
                report_id=report.report_id,
            )
        )


class DepinRegisterView(_IotView):
    """``POST /api/peergrid/depin/register``: join (or update) the DePIN registry."""

    url = ApiPath.DEPIN_REGISTER.value
    name = "api:peergrid:depin:register"

    async def post(self, request: web.Request) -> web.Response:
        """Register the gateway; 201 when new, 200 when updated."""
        try:
            body = await _read_json(request)
            registration = _validated(lambda: DepinRegistration.model_validate(body))
        except _RejectedError as rejected:
            return rejected.response()
        node, created = await self._hub.depin.async_register(registration)
        return _json_response(node, HTTPStatus.CREATED if created else HTTPStatus.OK)


class DepinHeartbeatView(_IotView):
    """``POST /api/peergrid/depin/heartbeat``: a registered gateway is alive."""

    url = ApiPath.DEPIN_HEARTBEAT.value
    name = "api:peergrid:depin:heartbeat"

    async def post(self, request: web.Request) -> web.Response:
        """Record the heartbeat; an unregistered gateway is refused at ``device_id``."""
        try:
            body = await _read_json(request)
            heartbeat = _validated(
                lambda: DepinHeartbeat.model_validate(body, context=clock_context(self._hub.now()))
            )
            node = await self._heartbeat(heartbeat)
        except _RejectedError as rejected:
            return rejected.response()
        return _json_response(node)

    async def _heartbeat(self, heartbeat: DepinHeartbeat) -> BaseModel:
        try:
            return await self._hub.depin.async_heartbeat(heartbeat)
        except PeerGridValidationError as err:
            raise _invalid((FieldProblem(field=err.field, message=err.message),)) from err


class DepinNodesView(_IotView):
    """``GET /api/peergrid/depin/nodes``: every registered gateway."""

    url = ApiPath.DEPIN_NODES.value
    name = "api:peergrid:depin:nodes"

    @callback
    def get(self, request: web.Request) -> web.Response:
        """List the registry."""
        return _json_response(self._hub.depin.nodes())


class DepinStatsView(_IotView):
    """``GET /api/peergrid/depin/stats``: registry totals."""

    url = ApiPath.DEPIN_STATS.value
    name = "api:peergrid:depin:stats"

    @callback
    def get(self, request: web.Request) -> web.Response:
        """Summarise the registry."""
        return _json_response(self._hub.depin.stats())


async def async_setup_http_api(hass: HomeAssistant) -> IotHub:
    """Create the IoT hub, load its stores and register the API's views.

    Called once from the integration's ``async_setup``; a second call returns
    the hub already set up. Event streams are ended when Home Assistant stops.
    """
    if (hub := hass.data.get(DATA_IOT_HUB)) is not None:
        return hub
    hub = IotHub(hass)
    await hub.async_load()
    hass.data[DATA_IOT_HUB] = hub
    for view in (
        IotPingView(hub),
        IotEventsView(hub),
        EnergyReportView(hub),
        DepinRegisterView(hub),
        DepinHeartbeatView(hub),
        DepinNodesView(hub),
        DepinStatsView(hub),
    ):
        hass.http.register_view(view)

    @callback
    def _async_end_streams(event: Event) -> None:
        hub.async_shutdown()

    hass.bus.async_listen_once(EVENT_HOMEASSISTANT_STOP, _async_end_streams)
    return hub
