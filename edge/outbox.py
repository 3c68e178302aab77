"""Store-and-forward: messages for Home Assistant survive outages and restarts.

Every message the gateway must not lose (energy reports, DePIN registration
and heartbeats) is a row in a SQLite file before anything is sent. Rows are
delivered strictly in order (the oldest first, and nothing overtakes a message
that is waiting for its retry), and a row is deleted only after Home Assistant
answered 2xx, or a 4xx that says the message itself is wrong (logged and
dropped: sending it again cannot succeed). Anything else (no connection, a
timeout, 401, 404, 429, 5xx) keeps the row and retries it with exponential
backoff.

Delivery is at-least-once by construction (a reply lost after Home Assistant
stored a report makes the gateway send it again); every energy report carries
a ``report_id`` fixed when it was queued, and Home Assistant drops a
``report_id`` it already has, so the pair is exactly-once.

SQLite runs in WAL mode with ``synchronous=FULL``: a queued report is on the
SD card before :meth:`Outbox.enqueue` returns, even if power fails right after.
The few small writes per cycle run in the event loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
import json
import logging
from pathlib import Path
import sqlite3
import time
from typing import Final, Self

from peergrid_core.errors import PeerGridConnectionError, PeerGridValidationError

__all__ = [
    "DROP_STATUSES",
    "DeliveryOutcome",
    "Outbox",
    "OutboxMessage",
    "RetryPolicy",
    "Sender",
    "classify_status",
]

_LOGGER = logging.getLogger(__name__)

type JsonBody = Mapping[str, object]
type Sender = Callable[[str, JsonBody], Awaitable[int]]
"""Sends ``body`` to ``path`` and returns the HTTP status; raises
:class:`~peergrid_core.errors.PeerGridConnectionError` when there is no answer."""

DROP_STATUSES: Final = frozenset({400, 413, 415, 422})
"""Answers that condemn the message itself: invalid, too large, wrong type."""

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class DeliveryOutcome(StrEnum):
    """What an attempt to deliver one message came to."""

    DELIVERED = "delivered"
    """Home Assistant took it (2xx): the row is deleted."""

    REJECTED = "rejected"
    """Home Assistant refused the message itself: logged and deleted."""

    RETRY = "retry"
    """No answer, or an answer that may change: kept for a later attempt."""


def classify_status(status: int) -> DeliveryOutcome:
    """Map an HTTP status to what the outbox does with the message."""
    if 200 <= status < 300:
        return DeliveryOutcome.DELIVERED
    if status in DROP_STATUSES:
        return DeliveryOutcome.REJECTED
    return DeliveryOutcome.RETRY


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Backoff between attempts of the message at the head of the queue.

    Attempt ``n`` (from 1) that failed waits ``min(maximum_s, initial_s *
    factor ** (n - 1))`` seconds. No jitter: one gateway has no herd to spread.
    """

    initial_s: float = 2.0
    factor: float = 2.0
    maximum_s: float = 300.0

    def __post_init__(self) -> None:
        """Refuse values that would spin or never retry."""
        if not self.initial_s > 0:
            raise PeerGridValidationError("initial_s", "must be positive")
        if not self.factor >= 1:
            raise PeerGridValidationError("factor", "must be at least 1")
        if not self.maximum_s >= self.initial_s:
            raise PeerGridValidationError("maximum_s", "must be at least initial_s")

    def delay(self, attempts: int) -> float:
        """Seconds to wait after ``attempts`` failed attempts."""
        return min(self.maximum_s, self.initial_s * self.factor ** min(max(attempts - 1, 0), 64))


@dataclass(frozen=True, kw_only=True)
class OutboxMessage:
    """One queued message."""

    id: int
    kind: str
    path: str
    body: dict[str, object]
    text: str
    """The body exactly as stored."""

    created_at: float
    attempts: int
    next_attempt_at: float


class Outbox:
    """The SQLite queue. ``clock`` is wall-clock seconds (rows outlive the process)."""

    def __init__(
        self,
        path: Path,
        *,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Open (or create) the file; the parent directory must exist."""
        self.path = path
        self._retry = retry or RetryPolicy()
        self._clock = clock
        try:
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as err:
            raise PeerGridValidationError(
                "outbox_path", f"cannot open the outbox {path}: {err}"
            ) from err

    # ------------------------------------------------------------ writing

    def enqueue(
        self,
        kind: str,
        path: str,
        body: JsonBody,
        *,
        coalesce: bool = False,
        meta: Mapping[str, str] | None = None,
    ) -> int:
        """Queue ``body`` for ``POST path`` and return the row id.

        With ``coalesce``, a queued message of the same ``kind`` has its body
        replaced instead (keeping its place and retry state): right for
        messages where only the latest matters, such as a heartbeat carrying
        cumulative values. ``meta`` entries are written in the same
        transaction, so a counter and the message that carries it cannot
        disagree after a crash.
        """
        text = json.dumps(body, separators=(",", ":"), sort_keys=True)
        now = self._clock()
        with self._transaction():
            row_id: int | None = None
            if coalesce:
                found = self._db.execute(
                    "SELECT id FROM outbox WHERE kind = ? ORDER BY id DESC LIMIT 1", (kind,)
                ).fetchone()
                if found is not None:
                    row_id = int(found[0])
                    self._db.execute(
                        "UPDATE outbox SET body = ?, path = ? WHERE id = ?", (text, path, row_id)
                    )
            if row_id is None:
                cursor = self._db.execute(
                    "INSERT INTO outbox (kind, path, body, created_at, next_attempt_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (kind, path, text, now, now),
                )
                row_id = int(cursor.lastrowid or 0)
            for key, value in (meta or {}).items():
                self._db.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )
        return row_id

    def get_meta(self, key: str) -> str | None:
        """A value stored with :meth:`enqueue`'s ``meta``, or ``None``."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def retry_now(self) -> None:
        """Make every waiting message due now (Home Assistant is back: no point waiting)."""
        with self._transaction():
            self._db.execute("UPDATE outbox SET next_attempt_at = ?", (self._clock(),))

    # ------------------------------------------------------------ reading

    def __len__(self) -> int:
        """Number of queued messages."""
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def pending(self) -> list[OutboxMessage]:
        """Every queued message, oldest first."""
        rows = self._db.execute(
            "SELECT id, kind, path, body, created_at, attempts, next_attempt_at "
            "FROM outbox ORDER BY id"
        ).fetchall()
        return [self._message(row) for row in rows]

    def head(self) -> OutboxMessage | None:
        """The oldest queued message: the only one that may be sent next."""
        row = self._db.execute(
            "SELECT id, kind, path, body, created_at, attempts, next_attempt_at "
            "FROM outbox ORDER BY id LIMIT 1"
        ).fetchone()
        return None if row is None else self._message(row)

    def due_in(self) -> float | None:
        """Seconds until the head is due (0 if it is), ``None`` when the queue is empty."""
        head = self.head()
        if head is None:
            return None
        return max(0.0, head.next_attempt_at - self._clock())

    @staticmethod
    def _message(row: tuple[object, ...]) -> OutboxMessage:
        ident, kind, path, body, created_at, attempts, next_attempt_at = row
        decoded = json.loads(str(body))
        return OutboxMessage(
            id=int(str(ident)),
            kind=str(kind),
            path=str(path),
            body=decoded if isinstance(decoded, dict) else {},
            text=str(body),
            created_at=float(str(created_at)),
            attempts=int(str(attempts)),
            next_attempt_at=float(str(next_attempt_at)),
        )

    # ------------------------------------------------------------ delivering

    async def deliver_due(self, send: Sender) -> list[tuple[OutboxMessage, DeliveryOutcome]]:
        """Send due messages in order until the queue is empty or one must wait.

        Returns what happened to each message tried. Stops at the first
        message that is not due yet or that failed (it is rescheduled), so
        that nothing overtakes it.
        """
        results: list[tuple[OutboxMessage, DeliveryOutcome]] = []
        while (head := self.head()) is not None and head.next_attempt_at <= self._clock():
            try:
                status = await send(head.path, head.body)
            except PeerGridConnectionError as err:
                _LOGGER.debug("Outbox: %s to %s not delivered: %s", head.kind, head.path, err)
                outcome = DeliveryOutcome.RETRY
            else:
                outcome = classify_status(status)
                if outcome is DeliveryOutcome.REJECTED:
                    _LOGGER.error(
                        "Home Assistant refused %s %s (HTTP %s); dropped: %s",
                        head.kind,
                        head.path,
                        status,
                        json.dumps(head.body, sort_keys=True),
                    )
                elif outcome is DeliveryOutcome.RETRY:
                    _LOGGER.warning(
                        "Home Assistant answered HTTP %s to %s; will retry", status, head.path
                    )
            results.append((head, outcome))
            if outcome is DeliveryOutcome.RETRY:
                attempts = head.attempts + 1
                with self._transaction():
                    self._db.execute(
                        "UPDATE outbox SET attempts = ?, next_attempt_at = ? WHERE id = ?",
                        (attempts, self._clock() + self._retry.delay(attempts), head.id),
                    )
                break
            with self._transaction():
                # A coalescing enqueue may have replaced the body while it was
                # in flight; then the row stays and the newer body goes out next.
                self._db.execute(
                    "DELETE FROM outbox WHERE id = ? AND body = ?", (head.id, head.text)
                )
        return results

    # ------------------------------------------------------------ lifecycle

    def _transaction(self) -> sqlite3.Connection:
        # In autocommit mode (isolation_level=None) the connection's context
        # manager does not open a transaction; BEGIN does, and the ``with``
        # commits or rolls back.
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def close(self) -> None:
        """Checkpoint the WAL and close the file."""
        self._db.close()

    def __enter__(self) -> Self:
        """Use as a context manager that closes the file."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the file."""
        self.close()
