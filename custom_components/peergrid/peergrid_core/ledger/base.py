"""Shared vocabulary of every ledger backend: tokens, receipts, errors, the protocol.

Amounts are integers of *base units* with :data:`DECIMALS` = 7 decimals, one
Stellar stroop: energy tokens x 10^7, carbon credits in kg CO2 x 10^7 and
reward tokens x 10^7. An integer is exact, compares exactly, and is what a
Soroban token contract stores as ``i128``; a :class:`~decimal.Decimal` is only
used at the edges (:func:`to_base_units`, :func:`from_base_units`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
import sqlite3
from typing import Final, Protocol

from ..errors import PeerGridError

DECIMALS: Final = 7
"""Decimals of every ledger amount (one Stellar stroop)."""

BASE_UNIT: Final = Decimal(1).scaleb(-DECIMALS)
"""The smallest amount, 0.0000001, as a Decimal."""

I128_MAX: Final = 2**127 - 1
"""Largest amount a Soroban ``i128`` holds, in base units."""


class Token(StrEnum):
    """The three assets the ledger keeps."""

    ENERGY = "energy"
    """Energy tokens, minted to a seller for delivered kWh."""
    CARBON = "carbon"
    """Carbon credits, kg CO2 avoided."""
    REWARD = "reward"
    """DePIN reward tokens (LT) for registration, uptime and routing."""


class MintStatus(StrEnum):
    """Where a mint stands on its backend."""

    PENDING = "pending"
    """Recorded, not yet final (a chain transaction not yet confirmed)."""
    CONFIRMED = "confirmed"
    """Final: the amount is on the backend."""
    FAILED = "failed"
    """Final: the backend refused the mint for good; ``error`` says why."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Receipt:
    """What a backend tells about one mint, retire or reward, found by its key."""

    key: str
    """Idempotency key, for example ``report:<report_id>:energy``."""
    token: Token
    account: str
    """Local: node uid or gateway device id; Soroban: a ``G...`` or ``C...`` strkey."""
    amount: int
    """Base units (see :data:`DECIMALS`)."""
    status: MintStatus
    backend: str
    """``"local"`` or ``"soroban"``."""
    ref: str
    """Local entry hash, or the Stellar transaction hash (empty while nothing is signed)."""
    ledger: int | None
    """Local entry sequence number, or the Stellar ledger sequence that included it."""
    error: str | None = None
    """Why a FAILED mint failed."""


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifyResult:
    """Outcome of a full integrity check of a ledger."""

    ok: bool
    entries: int
    """How many entries were checked."""
    problems: tuple[str, ...]
    """One human-readable line per problem found; empty when ``ok``."""


class LedgerError(PeerGridError):
    """Root of every ledger failure."""


class IdempotencyConflictError(LedgerError):
    """An idempotency key was reused with different arguments."""


class LedgerStorageError(LedgerError):
    """The ledger file could not be written or read (disk full, read-only, corrupt).

    Raised only after the transaction was rolled back: nothing was written.
    """


class LedgerConfigError(LedgerError):
    """A backend is misconfigured: bad secret, contract id, URL, or missing account."""


class MintRejectedError(LedgerError):
    """A backend refused a mint for good (a simulation error, a trapped contract)."""


class LedgerBackend(Protocol):
    """A place where minted amounts are recorded: the local ledger or a chain."""

    name: str
    """``"local"`` or ``"soroban"``; copied into every :attr:`Receipt.backend`."""

    def mint_in(
        self,
        conn: sqlite3.Connection,
        token: Token,
        account: str,
        amount: int,
        *,
        key: str,
        detail: Mapping[str, str],
    ) -> Receipt:
        """Record a mint of ``amount`` base units of ``token`` to ``account``.

        Synchronous: called inside an open write transaction of
        :class:`~.db.LedgerDatabase` and writes only through ``conn``, so it
        commits or rolls back with everything else of that transaction. The
        same ``key`` with the same arguments returns the existing receipt; the
        same ``key`` with other arguments raises
        :class:`IdempotencyConflictError`.
        """
        ...

    async def balance(self, token: Token, account: str) -> int:
        """Return the balance of ``account`` in ``token``, base units."""
        ...

    async def receipt(self, key: str) -> Receipt | None:
        """Return the receipt stored under ``key``, or None."""
        ...

    async def reconcile(self) -> list[Receipt]:
        """Drive mints left PENDING to a final state; return those that changed."""
        ...

    async def verify(self) -> VerifyResult:
        """Check the backend's records for integrity."""
        ...

    def create_schema(self, conn: sqlite3.Connection) -> None:
        """Create the backend's tables if missing (idempotent)."""
        ...


def to_base_units(amount: Decimal) -> int:
    """Return ``amount`` as an integer of base units (x 10^7), exactly.

    Raises :class:`ValueError` for NaN or infinity, a negative amount, more
    than :data:`DECIMALS` decimals, or an amount beyond ``i128``. The
    conversion works on the digits, not through a Decimal context, so no
    precision limit can round it.
    """
    if not isinstance(amount, Decimal):
        raise TypeError(f"amount must be a Decimal, not {type(amount).__name__}")
    if not amount.is_finite():
        raise ValueError(f"amount {amount} is not finite")
    sign, digits, exponent = amount.as_tuple()
    exponent = int(exponent)  # an int for every finite Decimal
    coefficient = int("".join(map(str, digits)))
    if sign and coefficient:
        raise ValueError(f"amount {amount} is negative")
    shift = exponent + DECIMALS
    if shift >= 0:
        units: int = coefficient * 10**shift
    else:
        units, remainder = divmod(coefficient, 10**-shift)
        if remainder:
            raise ValueError(f"amount {amount} has more than {DECIMALS} decimals")
    if units > I128_MAX:
        raise ValueError(f"amount {amount} exceeds the i128 range")
    return units


def from_base_units(units: int) -> Decimal:
    """Return ``units`` base units as an exact Decimal with :data:`DECIMALS` decimals."""
    if isinstance(units, bool) or not isinstance(units, int):
        raise TypeError(f"units must be an int, not {type(units).__name__}")
    digits = tuple(int(digit) for digit in str(abs(units)))
    return Decimal((1 if units < 0 else 0, digits, -DECIMALS))
