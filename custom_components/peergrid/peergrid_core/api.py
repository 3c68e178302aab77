"""The grid's IoT HTTP API as data: paths, limits, request rules and answers.

Home Assistant serves this API (the integration's ``http_api`` module) and the
edge gateway calls it; both read the paths, the body limit and the answer
models from here, and :mod:`.openapi` describes the same models as an
OpenAPI document. Nothing here does I/O.

Request bodies are JSON objects of at most :data:`MAX_BODY_BYTES`, decoded by
:func:`decode_json_body`, which is stricter than :func:`json.loads`:

* ``NaN``, ``Infinity`` and ``-Infinity`` are refused. They are not JSON
  (RFC 8259) but Python's decoder accepts them, and a NaN voltage compares
  false with every limit, so it would slip through range checks.
* Numbers too large for a double (``1e999``) are refused instead of becoming
  infinity, for the same reason.
* A key repeated within one object is refused: decoders disagree on which
  copy wins, so the gateway and the server might read different payloads.

Every rejection is a 400 answer carrying :class:`ApiError` with the list of
offending fields (:func:`field_problems`).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
import json
import math
from typing import Annotated, Any, Final, Literal

from pydantic import Field, ValidationError

from .errors import PeerGridValidationError
from .events import EventType
from .payload_fields import PayloadModel, ReportId
from .payloads import EnergyReport

__all__ = [
    "API_PREFIX",
    "BODY_FIELD",
    "JSON_CONTENT_TYPE",
    "MAX_BODY_BYTES",
    "SSE_CONTENT_TYPE",
    "SSE_KEEPALIVE_COMMENT",
    "SSE_KEEPALIVE_SECONDS",
    "ApiError",
    "ApiPath",
    "ErrorCode",
    "FieldProblem",
    "GatewayEnergyReport",
    "PingAccepted",
    "ReportAccepted",
    "decode_json_body",
    "field_problems",
]

API_PREFIX: Final = "/api/peergrid"
"""Every path of the API starts here (Home Assistant's ``/api`` namespace)."""

MAX_BODY_BYTES: Final = 64 * 1024
"""Largest request body accepted; a full node-data ping of 64 nodes is ~12 KiB."""

JSON_CONTENT_TYPE: Final = "application/json"
"""The only request content type the POST endpoints accept."""

SSE_CONTENT_TYPE: Final = "text/event-stream"
"""Content type of the event stream."""

SSE_KEEPALIVE_SECONDS: Final = 15.0
"""Seconds between keep-alive comments on an idle event stream.

Short enough to keep proxies and NAT tables from closing an idle stream, and
to let a gateway notice a dead stream within a lease."""

SSE_KEEPALIVE_COMMENT: Final = ": keep-alive\n\n"
"""The keep-alive message: an SSE comment, ignored by every SSE client."""

BODY_FIELD: Final = ""
"""The ``field`` of a problem with the body as a whole (not JSON, too deep...).

It is what a pydantic error located at the model itself joins to, too."""


class ApiPath(StrEnum):
    """Every endpoint of the API."""

    IOT_PING = f"{API_PREFIX}/iot/ping"
    """``POST``: a gateway's heartbeat or node-data ping."""

    IOT_EVENTS = f"{API_PREFIX}/iot/events"
    """``GET``: grid events as server-sent events."""

    IOT_ENERGY_REPORT = f"{API_PREFIX}/iot/energy/report"
    """``POST``: a completed transfer, accepted exactly once per report id."""

    DEPIN_REGISTER = f"{API_PREFIX}/depin/register"
    """``POST``: a gateway joins the DePIN registry (or updates its entry)."""

    DEPIN_HEARTBEAT = f"{API_PREFIX}/depin/heartbeat"
    """``POST``: a registered gateway is alive."""

    DEPIN_NODES = f"{API_PREFIX}/depin/nodes"
    """``GET``: every registered gateway with its reliability and rewards."""

    DEPIN_STATS = f"{API_PREFIX}/depin/stats"
    """``GET``: registry totals."""


class ErrorCode(StrEnum):
    """The ``error`` of a rejected request."""

    INVALID_PAYLOAD = "invalid_payload"
    """400: the body is not JSON or does not match the endpoint's model."""

    PAYLOAD_TOO_LARGE = "payload_too_large"
    """413: the body exceeds :data:`MAX_BODY_BYTES`."""

    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    """415: the content type is not ``application/json``."""

    LEDGER_UNAVAILABLE = "ledger_unavailable"
    """503: the ledger cannot record the report now (storage full or read-only); retry later."""


class FieldProblem(PayloadModel):
    """One reason a payload was refused, at the field it concerns."""

    field: str
    """Path of the field: the pydantic location joined with ``.``
    (``connected_nodes.1.voltage``); empty for the body as a whole."""

    message: str
    """What is wrong, in English."""


class ApiError(PayloadModel):
    """Body of every 4xx answer the API itself gives (401 comes from Home Assistant)."""

    error: ErrorCode
    message: str
    """A one-line summary."""

    fields: tuple[FieldProblem, ...] = ()
    """For ``invalid_payload``: every problem found, not just the first."""


class PingAccepted(PayloadModel):
    """Answer to an accepted ``POST iot/ping``: which kind of ping it was."""

    accepted: Literal[EventType.HEARTBEAT, EventType.NODE_DATA]


class ReportAccepted(PayloadModel):
    """Answer to a well-formed ``POST iot/energy/report``.

    ``accepted`` is true the first time a report id is seen; a repeat (the
    gateway retrying after a lost answer) gets ``accepted: false,
    duplicate: true`` with status 200, so the gateway deletes it from its
    outbox either way.
    """

    accepted: bool
    duplicate: bool
    report_id: ReportId


class GatewayEnergyReport(EnergyReport):
    """An energy report as the edge gateway sends it: ``report_id`` is required.

    The general :class:`~.payloads.EnergyReport` allows a missing id for older
    gateways; this API promises exactly-once acceptance, which needs the id.
    """

    report_id: Annotated[ReportId, Field()]


def field_problems(err: ValidationError) -> tuple[FieldProblem, ...]:
    """Return every error of ``err`` as a field problem (location joined with ``.``)."""
    return tuple(
        FieldProblem(field=".".join(str(part) for part in error["loc"]), message=error["msg"])
        for error in err.errors(include_url=False)
    )


def _refuse_constant(token: str) -> float:
    raise PeerGridValidationError(BODY_FIELD, f"{token} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise PeerGridValidationError(BODY_FIELD, f"{text} is out of range for a number")
    return value


def _unique_keys(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise PeerGridValidationError(key, f"key {key!r} appears more than once")
        result[key] = value
    return result


def decode_json_body(body: bytes) -> object:
    """Decode a request body as strict JSON (see the module docstring).

    Raises :class:`PeerGridValidationError` naming the field (``""`` for the
    body as a whole, the key for a repeated key) when the body is not UTF-8,
    not JSON, holds a non-finite number or repeats a key.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PeerGridValidationError(BODY_FIELD, "the body is not UTF-8 text") from err
    try:
        return json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            object_pairs_hook=_unique_keys,
        )
    except json.JSONDecodeError as err:
        raise PeerGridValidationError(
            BODY_FIELD, f"the body is not JSON: {err.msg} at line {err.lineno} column {err.colno}"
        ) from err
    except RecursionError as err:
        raise PeerGridValidationError(BODY_FIELD, "the body is nested too deeply") from err
    except ValueError as err:
        # Integers beyond Python's digit limit; PeerGridValidationError is no ValueError.
        raise PeerGridValidationError(BODY_FIELD, f"the body is not usable JSON: {err}") from err
