"""Field types shared by the JSON payloads and events of the grid.

The payload models (:mod:`.payloads`, :mod:`.events`) are built from these
annotated types, so every rule about what a well-formed identifier, timestamp,
address or amount looks like lives in one place.

Wire rules common to all of them:

* **Numbers are JSON numbers.** A numeric field refuses strings (``"3.9"``) and
  booleans; pydantic's lax coercion would otherwise hide a gateway bug.
* **Exact amounts are Decimal inside, JSON numbers outside.** A float from the
  wire is read through its shortest round-trip text (``0.1`` becomes
  ``Decimal("0.1")``). On output a Decimal is written as a JSON number; every
  exact type is capped at 15 significant digits, the most an IEEE double
  carries without loss, so the number a consumer reads is the Decimal we hold.
* **Timestamps are RFC 3339 text with an explicit offset** (``Z`` or
  ``+hh:mm``), normalised to UTC, and must fall in a plausible window.
* **Identifiers are bounded by a pattern**, which also bounds their length.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from ipaddress import IPv4Address, IPv6Address, ip_address
import re
from typing import Annotated, Any, Final
import uuid

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    Strict,
    ValidationError,
    ValidationInfo,
)
from pydantic_core import InitErrorDetails, PydanticCustomError, PydanticKnownError

from .units import AbsAmps, Amps, Percent, Seconds, TokenAmount, Volts

# ---------------------------------------------------------------- models


class PayloadModel(BaseModel):
    """Base of every payload model: unknown keys rejected, instances immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def receiver_differs(receiver_uid: str, info: ValidationInfo) -> str:
    """Field validator for ``receiver_uid``: a node never sends energy to itself."""
    if receiver_uid == info.data.get("sender_uid"):
        raise PydanticCustomError(
            "same_node",
            "receiver_uid must differ from sender_uid ({uid})",
            {"uid": receiver_uid},
        )
    return receiver_uid


def field_error(
    loc: tuple[str | int, ...], kind: str, template: str, value: Any, **context: Any
) -> InitErrorDetails:
    """One line of a cross-field error; ``template`` may name ``context`` keys."""
    return InitErrorDetails(type=PydanticCustomError(kind, template, context), loc=loc, input=value)


def raise_field_errors(model: type[BaseModel], errors: list[InitErrorDetails]) -> None:
    """Raise the collected cross-field errors, if any, at the fields they concern.

    A ``ValueError`` from a model validator is reported at the model itself
    (an empty ``loc``). A ValidationError built here keeps each field's
    location, and an enclosing model prefixes it with its own path.
    """
    if errors:
        raise ValidationError.from_exception_data(model.__name__, errors)


# ---------------------------------------------------------------- identifiers

IDENTIFIER_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Device ids, node uids and source names: 1-64 characters, ASCII letters,
digits, ``_``, ``.`` and ``-``, starting with a letter or digit.

Colons, slashes and spaces are refused because the ids are embedded in
composite keys (``<report_id>:energy``), URLs and Home Assistant unique ids.
Identity is exact: ``NODE_A`` and ``node_a`` are two different nodes, because
the firmware reports its uid verbatim and nothing may merge two nodes' energy.
"""

type DeviceId = Annotated[str, Strict(), Field(pattern=IDENTIFIER_PATTERN)]
"""Identity of an edge gateway (a Raspberry Pi), e.g. ``rpi-4b-prod-01``."""

type NodeUid = Annotated[str, Strict(), Field(pattern=IDENTIFIER_PATTERN)]
"""Identity of a battery node behind a gateway, e.g. ``NODE_A``."""

type SourceName = Annotated[str, Strict(), Field(pattern=IDENTIFIER_PATTERN)]
"""Name of the software that produced a payload, e.g. ``rpi_energy_grid``."""

type HardwareModel = Annotated[
    str, Strict(), Field(min_length=1, max_length=64, pattern=r"^\S(?:[^\x00-\x1f\x7f]*\S)?$")
]
"""Free-text hardware model (``Raspberry Pi 4B``): printable, no control
characters, no leading or trailing blanks, at most 64 characters."""

type FirmwareVersion = Annotated[
    str,
    Strict(),
    Field(max_length=48, pattern=r"^\d{1,4}\.\d{1,4}\.\d{1,4}(?:[-+][0-9A-Za-z.-]{1,32})?$"),
]
"""A semantic version, ``MAJOR.MINOR.PATCH`` with an optional ``-pre`` or
``+build`` suffix (``0.3.0``, ``1.2.0-rc.1``)."""


# ---------------------------------------------------------------- report ids

_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _report_id(value: object) -> str:
    """Return the canonical (lower-case) form of a report id or raise ValueError."""
    if not isinstance(value, str):
        raise PydanticKnownError("string_type")
    if len(value) > 64:
        raise ValueError("a report id is at most 64 characters")
    text = value.lower()
    if _CANONICAL_UUID.fullmatch(text):
        if uuid.UUID(text).int == 0:
            raise ValueError("the nil UUID is not a report id")
        return text
    if _HEX_DIGEST.fullmatch(text):
        if int(text, 16) == 0:
            raise ValueError("an all-zero digest is not a report id")
        return text
    raise ValueError("a report id must be a UUID (8-4-4-4-12 hex) or a 64-digit hex SHA-256 digest")


type ReportId = Annotated[
    str,
    PlainValidator(_report_id, json_schema_input_type=str),
    Field(
        json_schema_extra={
            "pattern": r"^(?:[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}|[0-9a-fA-F]{64})$"
        }
    ),
]
"""The exactly-once key of an energy report, chosen by the gateway.

Two shapes are accepted, both with enough entropy that two gateways, or one
gateway before and after a reboot, never pick the same id by accident:

* a UUID in its canonical 36-character text (a random v4, or a time-ordered v7
  which indexes well), or
* a 64-digit hex SHA-256 digest of the gateway's own canonical record of the
  transfer (which must include when it happened, since two transfers between
  the same nodes can carry identical numbers).

Upper-case hex is accepted and normalised to lower case, so one report has
exactly one key; the nil UUID and the all-zero digest are refused. Counters
such as ``report-1`` are refused on purpose: a counter that restarts after a
reboot would make the ledger drop a real transfer as a duplicate.
"""


def new_report_id() -> str:
    """Return a fresh random report id (a UUID4 in canonical text)."""
    return str(uuid.uuid4())


# ---------------------------------------------------------------- Stellar addresses

_STRKEY_ACCOUNT_VERSION: Final = 6 << 3  # "G..." ed25519 public key
_STRKEY_CONTRACT_VERSION: Final = 2 << 3  # "C..." contract
_STRKEY_SHAPE = re.compile(r"[GC][A-Z2-7]{55}")


def _crc16_xmodem(data: bytes) -> int:
    """CRC-16/XMODEM (polynomial 0x1021, initial value 0), the StrKey checksum."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _stellar_address(value: object) -> str:
    """Return ``value`` if it is a well-formed ``G...`` or ``C...`` StrKey."""
    if not isinstance(value, str):
        raise PydanticKnownError("string_type")
    if not _STRKEY_SHAPE.fullmatch(value):
        raise ValueError(
            "a Stellar address is 56 characters: G or C followed by 55 base32 characters (A-Z, 2-7)"
        )
    # 56 characters of the base32 alphabet always decode (to 35 bytes).
    raw = base64.b32decode(value)
    version, payload, checksum = raw[0], raw[:-2], raw[-2:]
    if version not in (_STRKEY_ACCOUNT_VERSION, _STRKEY_CONTRACT_VERSION):
        raise ValueError("not a Stellar account or contract address")
    if _crc16_xmodem(payload) != int.from_bytes(checksum, "little"):
        raise ValueError("the Stellar address checksum does not match (mistyped?)")
    return value


type StellarAddress = Annotated[
    str,
    PlainValidator(_stellar_address, json_schema_input_type=str),
    Field(json_schema_extra={"pattern": r"^[GC][A-Z2-7]{55}$"}),
]
"""A Stellar account (``G...``) or contract (``C...``) address in StrKey form.

The grid settles energy and DePIN rewards on Stellar, so a node's wallet is the
address its tokens are minted to. Beyond the shape, the version byte and the
CRC-16 checksum are verified: a mistyped address would send rewards nowhere,
and the checksum catches every single-character typo.
"""


# ---------------------------------------------------------------- timestamps

EARLIEST_TIMESTAMP: Final = datetime(2024, 1, 1, tzinfo=UTC)
"""No PeerGrid payload predates this. A Raspberry Pi has no battery-backed
clock: until NTP syncs it may stamp 1970, which this bound rejects."""

LATEST_TIMESTAMP: Final = datetime(2100, 1, 1, tzinfo=UTC)
"""Upper sanity bound used when the receiver's clock is not supplied."""

MAX_CLOCK_AHEAD: Final = timedelta(minutes=5)
"""How far ahead of the receiver's clock a timestamp may be (NTP drift)."""

NOW_CONTEXT_KEY: Final = "now"
"""Validation-context key holding the receiver's current time (aware)."""

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})")


def clock_context(now: datetime) -> dict[str, object]:
    """Return a pydantic validation context that checks timestamps against ``now``.

    Pass it as ``Model.model_validate(obj, context=clock_context(now))``: a
    timestamp more than :data:`MAX_CLOCK_AHEAD` after ``now`` is then rejected.
    Without it only the fixed window is enforced, which keeps validation
    deterministic for stored payloads.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return {NOW_CONTEXT_KEY: now}


def _timestamp_text(value: object) -> object:
    """Let datetimes through; require RFC 3339 text of everything else."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        # Bare numbers are refused: seconds or milliseconds would be a guess.
        raise PydanticCustomError(
            "timestamp_type", "a timestamp must be RFC 3339 text such as 2026-02-23T09:56:48Z"
        )
    if not _RFC3339.fullmatch(value):
        raise ValueError(
            "a timestamp must be RFC 3339 with an offset, such as 2026-02-23T09:56:48Z"
        )
    return value


def _checked_timestamp(value: datetime, info: ValidationInfo) -> datetime:
    """Normalise to UTC and enforce the plausibility window."""
    # Aware comparisons never overflow, and inside the window neither does the
    # conversion or the skew arithmetic below (whatever ``now`` is).
    if not EARLIEST_TIMESTAMP <= value < LATEST_TIMESTAMP:
        raise ValueError(
            f"timestamp must lie between {EARLIEST_TIMESTAMP:%Y-%m-%d} and "
            f"{LATEST_TIMESTAMP:%Y-%m-%d} (is the gateway clock set?)"
        )
    utc = value.astimezone(UTC)
    context = info.context
    if isinstance(context, Mapping):
        now = context.get(NOW_CONTEXT_KEY)
        if isinstance(now, datetime) and now.tzinfo is not None and utc - MAX_CLOCK_AHEAD > now:
            raise ValueError(f"timestamp is more than {MAX_CLOCK_AHEAD} ahead of the receiver")
    return utc


type UtcTimestamp = Annotated[
    AwareDatetime, BeforeValidator(_timestamp_text), AfterValidator(_checked_timestamp)
]
"""An instant, timezone-aware on input and held in UTC (written with ``Z``)."""


# ---------------------------------------------------------------- IP addresses


def _node_ip(value: object) -> IPv4Address | IPv6Address:
    """Return ``value`` as an IP address usable by a node on the local network."""
    if isinstance(value, IPv4Address | IPv6Address):
        address = value
    elif isinstance(value, str):
        if len(value) > 45:  # the longest textual IPv6 address
            raise ValueError("an IP address is at most 45 characters")
        try:
            address = ip_address(value)
        except ValueError as err:
            raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from err
    else:
        # ip_address() would turn an integer into an address; the wire has text only.
        raise PydanticCustomError("ip_type", "an IP address must be text such as 192.168.1.101")
    if address.is_unspecified or address.is_multicast:
        raise ValueError(f"{address} is not a host address")
    return address


type NodeIp = Annotated[
    IPv4Address | IPv6Address,
    PlainValidator(_node_ip, json_schema_input_type=str),
    PlainSerializer(str, return_type=str, when_used="json"),
]
"""A node's unicast IP address. Loopback is allowed (simulated nodes)."""


# ---------------------------------------------------------------- numbers

MAX_EXACT_DIGITS: Final = 15
"""Significant digits an IEEE double carries exactly; caps every exact type."""

type WireVolts = Annotated[Volts, Strict()]
"""Volts as a JSON number (strings and booleans refused)."""

type WireAmps = Annotated[Amps, Strict()]
"""Signed amperes as a JSON number."""

type WireAbsAmps = Annotated[AbsAmps, Strict()]
"""Current magnitude in amperes as a JSON number."""

type WirePercent = Annotated[Percent, Strict()]
"""Percent as a JSON number."""

type WireSeconds = Annotated[Seconds, Strict()]
"""A duration in seconds as a JSON number."""

type WireCount = Annotated[int, Strict(), Field(ge=0)]
"""A non-negative JSON integer (``2.0`` and ``true`` are refused)."""


def _exact_decimal(value: object) -> Decimal:
    """Read a JSON number (int or float) or a Decimal exactly."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise PydanticCustomError("number_type", "Input should be a JSON number")
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        raise ValueError("the number must be finite")
    # "-0" is zero; keep it from printing as a negative amount downstream.
    return number.copy_abs() if number.is_zero() else number


def _decimal_to_json_number(value: Decimal) -> float:
    """Write a Decimal as a JSON number (lossless under :data:`MAX_EXACT_DIGITS`)."""
    return float(value)


_AS_JSON_NUMBER: Final = PlainSerializer(
    _decimal_to_json_number, return_type=float, when_used="json"
)

MEASURED_KWH_QUANTUM: Final = Decimal("0.000001")
"""Resolution of measured energy in kWh: one milliwatt-hour, the node protocol's unit."""


def _measured_kwh(value: object) -> Decimal:
    """Read a measured energy and round it to one milliwatt-hour.

    A gateway that sums milliwatt-hours in floating point sends values such as
    ``0.30000000000000004``; the digits beyond a milliwatt-hour are arithmetic
    noise, far below what an INA219 measures, so they are rounded away instead
    of being rejected or minted.
    """
    number = _exact_decimal(value)
    if number.copy_abs() >= 10**MAX_EXACT_DIGITS:
        # Left to the range check, which names the field; below this bound the
        # quantize needs at most 21 digits and cannot fail.
        return number
    return number.quantize(MEASURED_KWH_QUANTUM, rounding=ROUND_HALF_EVEN)


type MeasuredKilowattHours = Annotated[
    Decimal,
    BeforeValidator(_measured_kwh),
    Field(ge=0, max_digits=MAX_EXACT_DIGITS, allow_inf_nan=False),
    _AS_JSON_NUMBER,
]
"""Energy measured by the grid, kWh, held exactly to one milliwatt-hour."""


type LedgerTokens = Annotated[
    TokenAmount,
    BeforeValidator(_exact_decimal),
    Field(decimal_places=7, max_digits=MAX_EXACT_DIGITS, allow_inf_nan=False),
    _AS_JSON_NUMBER,
]
"""An energy or reward token amount, exact, at most seven decimals (one stroop).

More decimals than the ledger can hold are refused rather than rounded: token
amounts are computed by the grid itself, so excess precision is a bug.
"""

type CarbonKilograms = Annotated[
    Decimal,
    BeforeValidator(_exact_decimal),
    Field(ge=0, decimal_places=6, max_digits=MAX_EXACT_DIGITS, allow_inf_nan=False),
    _AS_JSON_NUMBER,
]
"""Avoided CO2 emissions in kilograms, exact to the milligram."""

type QualityFactor = Annotated[
    Decimal,
    BeforeValidator(_exact_decimal),
    Field(ge=0, le=1, decimal_places=4, allow_inf_nan=False),
    _AS_JSON_NUMBER,
]
"""A seller's quality factor, 0 to 1, exact to four decimals."""

type TokenPrice = Annotated[
    Decimal,
    BeforeValidator(_exact_decimal),
    Field(ge=0, decimal_places=7, max_digits=MAX_EXACT_DIGITS, allow_inf_nan=False),
    _AS_JSON_NUMBER,
]
"""A price per energy token in the market's quote asset, exact to seven decimals."""
