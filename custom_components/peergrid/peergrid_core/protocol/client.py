"""Async client for one PeerGrid node (protocol version 1).

:class:`NodeClient` opens the TCP connection, authenticates both ways,
sends signed commands and requests, and delivers the node's pushed ``status``
and ``event`` frames to listeners. :meth:`NodeClient.run` supervises the
connection and reconnects with capped exponential backoff and jitter.

A minimal use::

    client = NodeClient("192.168.1.101", DEFAULT_PORT, b"sixteen-byte-key")
    hello = await client.connect()
    unsubscribe = client.listen(print)
    await client.command(Mode.SUPPLY, lease_s=30)
    await client.idle()
    await client.close()

The client never imports Home Assistant; the integration builds on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
import contextlib
from dataclasses import dataclass
from enum import StrEnum
import logging
import random
import time
from typing import Self

from pydantic import ValidationError

from ..errors import (
    PeerGridAuthenticationError,
    PeerGridConnectionError,
    PeerGridError,
    PeerGridProtocolError,
    PeerGridTimeoutError,
    PeerGridValidationError,
)
from .auth import Role, SessionSecrets, SignedSession, new_nonce, proofs_match, validate_key
from .codes import AuthScheme, ErrorCode, Mode
from .errors import CommandRefusedError, FrameError
from .frames import MAX_LINE_BYTES, JsonObject, decode_body, is_blank, plain_line, strip_line
from .messages import (
    PROTOCOL_VERSION,
    Ack,
    Auth,
    AuthOk,
    Command,
    ErrorFrame,
    Event,
    GetConfig,
    GetStatus,
    Hello,
    Message,
    NodeConfig,
    NodeMessage,
    NodePush,
    Ping,
    Pong,
    SetConfig,
    Status,
    parse_hello,
    parse_node_message,
)

_LOGGER = logging.getLogger(__name__)

type PushCallback = Callable[[NodePush], None]
type StateCallback = Callable[[ConnectionState], None]
type Sleep = Callable[[float], Awaitable[None]]
type Clock = Callable[[], float]

_MAX_REQUEST_ID = 2**31 - 1


class ConnectionState(StrEnum):
    """Connection state reported to :meth:`NodeClient.listen_connection` callbacks."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Reconnect delays: exponential, capped, with jitter.

    The n-th retry (from 0) waits a delay drawn uniformly from
    ``[cap / 2, cap]`` with ``cap = min(maximum, initial * factor ** n)``, so
    that many clients restarted together do not reconnect in lock-step, yet
    never retry immediately. A connection that stayed up ``reset_after``
    seconds starts the sequence over.
    """

    initial: float = 1.0
    factor: float = 2.0
    maximum: float = 60.0
    reset_after: float = 60.0

    def __post_init__(self) -> None:
        """Refuse parameters that would make the loop spin or never retry."""
        if self.initial <= 0:
            raise PeerGridValidationError("initial", "must be positive")
        if self.factor < 1:
            raise PeerGridValidationError("factor", "must be at least 1")
        if self.maximum < self.initial:
            raise PeerGridValidationError("maximum", "must be at least the initial delay")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The delay before retry number ``attempt`` (0-based)."""
        # Cap the exponent first: a long outage must not overflow the float.
        cap = min(self.maximum, self.initial * self.factor ** min(attempt, 64))
        return cap / 2 + rng.random() * cap / 2


class _Connection:
    """One open TCP connection and its session state (internal)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        hello: Hello,
        session: SignedSession | None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.hello = hello
        self.session = session
        self.pending: dict[int, asyncio.Future[NodeMessage]] = {}
        self.closed = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def send(self, body: JsonObject) -> None:
        # seal() and write() run without an await in between, so frames go out
        # in the order their sequence numbers were assigned.
        line = self.session.seal(body) if self.session else plain_line(body)
        self.writer.write(line)


class NodeClient:
    """Talks to one node: connect, authenticate, command, listen, reconnect.

    ``key`` is the pre-shared key (16 to 64 bytes); ``None`` speaks to a node
    in bench mode, and is refused by a node that has a key (and a node
    without a key is refused by a client that has one, so an impostor cannot
    downgrade the session). The keyword arguments are tunables with the
    defaults of ``docs/protocol.md`` section 7, plus injection points for
    tests: ``sleep`` (reconnect waits), ``clock`` (monotonic seconds), ``rng``
    (jitter) and ``nonce_factory``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        key: bytes | None,
        *,
        connect_timeout: float = 5.0,
        request_timeout: float = 5.0,
        keepalive_interval: float = 10.0,
        idle_timeout: float = 30.0,
        backoff: Backoff | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        nonce_factory: Callable[[], str] = new_nonce,
    ) -> None:
        """Store the settings; nothing connects until :meth:`connect` or :meth:`run`."""
        self.host = host
        self.port = port
        self._key = validate_key(key) if key is not None else None
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._keepalive_interval = keepalive_interval
        self._idle_timeout = idle_timeout
        self._backoff = backoff or Backoff()
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._nonce_factory = nonce_factory
        self._conn: _Connection | None = None
        self._connect_lock = asyncio.Lock()
        self._push_listeners: list[PushCallback] = []
        self._state_listeners: list[StateCallback] = []
        self._state = ConnectionState.DISCONNECTED
        self._next_id = 0
        self._close_requested = asyncio.Event()
        self._last_status: Status | None = None
        self._last_seen: float | None = None

    # ------------------------------------------------------------------ properties

    @property
    def connected(self) -> bool:
        """Whether an authenticated connection is open."""
        return self._conn is not None and not self._conn.closed.is_set()

    @property
    def state(self) -> ConnectionState:
        """The current connection state."""
        return self._state

    @property
    def node(self) -> Hello | None:
        """The hello of the current (or last) connection: uid, firmware, capabilities."""
        return self._conn.hello if self._conn else None

    @property
    def status(self) -> Status | None:
        """The most recent ``status`` received, pushed or requested."""
        return self._last_status

    @property
    def last_seen(self) -> float | None:
        """``clock()`` time of the last valid frame from the node."""
        return self._last_seen

    # ------------------------------------------------------------------ subscriptions

    def listen(self, callback: PushCallback) -> Callable[[], None]:
        """Call ``callback`` with every pushed ``Status`` and ``Event``.

        Returns a function that removes the callback. Callbacks run in the
        event loop and must not block; an exception in one is logged and does
        not affect the others or the connection.
        """
        self._push_listeners.append(callback)
        return lambda: self._remove(self._push_listeners, callback)

    def listen_connection(self, callback: StateCallback) -> Callable[[], None]:
        """Call ``callback`` on every :class:`ConnectionState` change; returns an unsubscribe."""
        self._state_listeners.append(callback)
        return lambda: self._remove(self._state_listeners, callback)

    @staticmethod
    def _remove[T](listeners: list[T], callback: T) -> None:
        with contextlib.suppress(ValueError):
            listeners.remove(callback)

    def _set_state(self, state: ConnectionState) -> None:
        if state is self._state:
            return
        self._state = state
        for callback in list(self._state_listeners):
            try:
                callback(state)
            except Exception:
                _LOGGER.exception("Connection state listener failed")

    def _notify(self, push: NodePush) -> None:
        for callback in list(self._push_listeners):
            try:
                callback(push)
            except Exception:
                _LOGGER.exception("Push listener failed")

    # ------------------------------------------------------------------ connect

    async def connect(self) -> Hello:
        """Open the connection and authenticate both ways; return the node's hello.

        Returns at once if already connected. Raises
        :class:`PeerGridConnectionError` (or its :class:`PeerGridTimeoutError`)
        when the node cannot be reached, :class:`PeerGridAuthenticationError`
        when either side's proof fails or the key expectations differ, and
        :class:`PeerGridProtocolError` for a node that breaks the protocol.
        """
        async with self._connect_lock:
            if self._close_requested.is_set():
                raise PeerGridConnectionError("client is closed")
            if self._conn is not None and not self._conn.closed.is_set():
                return self._conn.hello
            self._set_state(ConnectionState.CONNECTING)
            try:
                conn = await self._open()
            except BaseException:
                self._set_state(ConnectionState.DISCONNECTED)
                raise
            if self._close_requested.is_set():
                # close() ran while the handshake was in flight.
                conn.writer.close()
                self._set_state(ConnectionState.DISCONNECTED)
                raise PeerGridConnectionError("client closed while connecting")
            self._conn = conn
            conn.tasks.append(asyncio.create_task(self._read_loop(conn), name="peergrid-read"))
            if self._keepalive_interval > 0:
                conn.tasks.append(
                    asyncio.create_task(self._keepalive_loop(conn), name="peergrid-keepalive")
                )
            self._set_state(ConnectionState.CONNECTED)
            return conn.hello

    async def _open(self) -> _Connection:
        try:
            async with asyncio.timeout(self._connect_timeout):
                # The stream limit bounds what one line can buffer; the
                # LimitOverrunError it raises becomes ``line_too_long``.
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, limit=MAX_LINE_BYTES - 1
                )
        except TimeoutError as err:
            raise PeerGridTimeoutError(f"timed out connecting to {self.host}:{self.port}") from err
        except OSError as err:
            raise PeerGridConnectionError(
                f"cannot connect to {self.host}:{self.port}: {err}"
            ) from err
        try:
            return await self._handshake(reader, writer)
        except BaseException:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            raise

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> _Connection:
        hello_line = await self._read_handshake_line(reader, "hello")
        # The version is checked before the rest of the hello, whose fields
        # another version may spell differently.
        hello = parse_hello(hello_line)
        if hello.auth is AuthScheme.NONE:
            if self._key is not None:
                raise PeerGridAuthenticationError(
                    f"node {hello.uid} is unauthenticated (bench mode) but a key is configured"
                )
            return _Connection(reader, writer, hello, None)
        if self._key is None:
            raise PeerGridAuthenticationError(f"node {hello.uid} requires a key")
        cnonce = self._nonce_factory()
        secrets = SessionSecrets.derive(self._key, hello_line, cnonce)
        auth = Auth(proto=PROTOCOL_VERSION, cnonce=cnonce, mac=secrets.client_proof)
        writer.write(plain_line(auth.to_body()))
        reply = parse_node_message(
            decode_body(strip_line(await self._read_handshake_line(reader, "auth_ok")))
        )
        if isinstance(reply, ErrorFrame):
            if reply.error_code in (ErrorCode.AUTH_FAILED, ErrorCode.AUTH_REQUIRED):
                raise PeerGridAuthenticationError(f"node {hello.uid} refused the key")
            raise PeerGridProtocolError(f"node refused authentication: {reply.code} {reply.msg}")
        ok = self._expect(reply, AuthOk)
        if not proofs_match(secrets.node_proof, ok.mac):
            raise PeerGridAuthenticationError(f"node {hello.uid} could not prove it holds the key")
        return _Connection(
            reader, writer, hello, SignedSession(secrets=secrets, role=Role.CONTROLLER)
        )

    async def _read_handshake_line(self, reader: asyncio.StreamReader, what: str) -> bytes:
        try:
            async with asyncio.timeout(self._connect_timeout):
                while True:
                    line = await self._read_line(reader)
                    if not is_blank(line):
                        return line
        except TimeoutError as err:
            raise PeerGridTimeoutError(f"timed out waiting for {what}") from err

    @staticmethod
    async def _read_line(reader: asyncio.StreamReader) -> bytes:
        """Read one line; EOF and oversize lines raise typed errors."""
        try:
            return await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as err:
            raise FrameError(ErrorCode.LINE_TOO_LONG, "line from node too long") from err
        except asyncio.IncompleteReadError as err:
            raise PeerGridConnectionError("node closed the connection") from err
        except OSError as err:
            raise PeerGridConnectionError(f"connection lost: {err}") from err

    @staticmethod
    def _expect[M: Message](message: Message, kind: type[M]) -> M:
        if not isinstance(message, kind):
            raise PeerGridProtocolError(f"expected {kind.type_name}, node sent {message.type_name}")
        return message

    # ------------------------------------------------------------------ reading

    async def _read_loop(self, conn: _Connection) -> None:
        error: PeerGridError = PeerGridConnectionError("connection closed")
        try:
            while True:
                async with asyncio.timeout(self._idle_timeout):
                    line = await self._read_line(conn.reader)
                if is_blank(line):
                    continue
                self._receive(conn, line)
        except TimeoutError:
            error = PeerGridTimeoutError(f"no frame from the node for {self._idle_timeout} s")
        except FrameError as err:
            error = err
            self._send_fatal_error(conn, err)
        except PeerGridError as err:
            error = err
        except asyncio.CancelledError:
            error = PeerGridConnectionError("connection closed")
            raise
        finally:
            if not isinstance(error, PeerGridConnectionError) or self._close_requested.is_set():
                _LOGGER.debug("Connection to %s ended: %s", self.host, error)
            else:
                _LOGGER.info("Connection to %s lost: %s", self.host, error)
            self._teardown(conn, error)

    def _receive(self, conn: _Connection, line: bytes) -> None:
        if conn.session is not None:
            body = conn.session.open(line)  # fatal FrameError ends the loop
        else:
            body = decode_body(strip_line(line))
        self._last_seen = self._clock()
        try:
            message = parse_node_message(body)
        except FrameError as err:
            # An authentic frame this client cannot use (a newer node, or a
            # bug): fail the request it answers, or drop a push.
            if err.request_id is not None and (future := conn.pending.pop(err.request_id, None)):
                if not future.done():
                    future.set_exception(PeerGridProtocolError(f"unusable reply: {err}"))
            else:
                _LOGGER.warning("Ignoring frame from %s: %s", self.host, err)
            return
        self._dispatch(conn, message)

    @staticmethod
    def _send_fatal_error(conn: _Connection, err: FrameError) -> None:
        """Tell the node why the session ends (best effort: the link may be gone)."""
        body: JsonObject = {"t": "err", "code": err.code.value, "msg": err.message[:80]}
        body["close"] = True
        with contextlib.suppress(PeerGridError, OSError, RuntimeError):
            conn.send(body)

    def _dispatch(self, conn: _Connection, message: NodeMessage) -> None:
        if isinstance(message, Status):
            self._last_status = message
        request_id = getattr(message, "request_id", None)
        if isinstance(message, ErrorFrame):
            self._dispatch_error(conn, message)
            return
        if request_id is not None:
            future = conn.pending.pop(request_id, None)
            if future is not None and not future.done():
                future.set_result(message)
            return
        if isinstance(message, Status | Event):
            self._notify(message)
        else:
            _LOGGER.debug("Ignoring unsolicited %s from %s", message.type_name, self.host)

    def _dispatch_error(self, conn: _Connection, frame: ErrorFrame) -> None:
        if frame.request_id is not None and not frame.close:
            future = conn.pending.pop(frame.request_id, None)
            if future is not None and not future.done():
                code = frame.error_code or frame.code
                future.set_exception(CommandRefusedError(code, frame.msg, field=frame.field))
            return
        if frame.close:
            raise PeerGridProtocolError(f"node closed the session: {frame.code} {frame.msg}")
        _LOGGER.warning("Node %s reported %s: %s", self.host, frame.code, frame.msg)

    def _teardown(self, conn: _Connection, error: PeerGridError) -> None:
        if conn.closed.is_set():
            return
        conn.closed.set()
        for future in conn.pending.values():
            if not future.done():
                future.set_exception(error)
        conn.pending.clear()
        for task in conn.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        conn.writer.close()
        if self._conn is conn:
            self._set_state(ConnectionState.DISCONNECTED)

    async def _keepalive_loop(self, conn: _Connection) -> None:
        while not conn.closed.is_set():
            await asyncio.sleep(self._keepalive_interval)
            try:
                await self._request(Ping(), Pong)
            except CommandRefusedError:
                continue
            except PeerGridError:
                # The read loop owns the teardown; a lost pong means the link is gone.
                self._teardown(conn, PeerGridTimeoutError("keepalive not answered"))
                return

    # ------------------------------------------------------------------ requests

    def _allocate_id(self) -> int:
        self._next_id = self._next_id % _MAX_REQUEST_ID + 1
        return self._next_id

    async def _request[M: Message](self, message: Message, reply: type[M]) -> M:
        conn = self._conn
        if conn is None or conn.closed.is_set():
            raise PeerGridConnectionError(f"not connected to {self.host}:{self.port}")
        request_id = self._allocate_id()
        body = message.to_body()
        body = {"t": body["t"], "id": request_id} | {k: v for k, v in body.items() if k != "t"}
        future: asyncio.Future[NodeMessage] = asyncio.get_running_loop().create_future()
        conn.pending[request_id] = future
        try:
            conn.send(body)
            async with asyncio.timeout(self._request_timeout):
                await conn.writer.drain()
                answer = await future
        except TimeoutError as err:
            raise PeerGridTimeoutError(
                f"node did not answer {message.type_name} within {self._request_timeout} s"
            ) from err
        except (ConnectionError, OSError) as err:
            raise PeerGridConnectionError(f"connection lost: {err}") from err
        finally:
            conn.pending.pop(request_id, None)
        return self._expect(answer, reply)

    async def command(
        self,
        mode: Mode,
        *,
        lease_s: int | None = None,
        limit_mwh: int | None = None,
        min_mv: int | None = None,
    ) -> Ack:
        """Switch the node to ``mode`` and return its acknowledgement.

        SUPPLY and RECEIVE need ``lease_s`` (1-3600 s); ``limit_mwh``
        (default 10 Wh) and ``min_mv`` (default 3300 mV) are left to the node's
        defaults when ``None``. The node applies the stricter of these and its
        own limits, and the returned :class:`Ack` carries what it applies.
        Sending the active mode again renews the lease (``Ack.renewed``).

        Raises :class:`PeerGridValidationError` naming the field for a value
        out of range (nothing is sent), :class:`CommandRefusedError` when the
        node refuses (``busy``, ``low_voltage``, ``fault`` ...), and the
        connection errors of :meth:`connect`.
        """
        fields: dict[str, object] = {"mode": mode}
        if mode is not Mode.IDLE:
            fields |= {"lease_s": lease_s, "limit_mwh": limit_mwh, "min_mv": min_mv}
        fields = {k: v for k, v in fields.items() if v is not None}
        try:
            cmd = Command.model_validate(fields)
        except ValidationError as err:
            first = err.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else "lease_s"
            raise PeerGridValidationError(field, first["msg"]) from err
        return await self._request(cmd, Ack)

    async def idle(self) -> Ack:
        """Open both relays (accepted from any authenticated session)."""
        return await self.command(Mode.IDLE)

    async def get_status(self) -> Status:
        """Ask the node for a fresh ``status``."""
        return await self._request(GetStatus(), Status)

    async def ping(self) -> Pong:
        """Send an authenticated keepalive and wait for the ``pong``."""
        return await self._request(Ping(), Pong)

    async def get_config(self) -> NodeConfig:
        """Read the node's configured limits and push period."""
        return await self._request(GetConfig(), NodeConfig)

    async def set_config(
        self,
        *,
        limit_mwh: int | None = None,
        min_mv: int | None = None,
        max_ma: int | None = None,
        max_lease_s: int | None = None,
        push_s: int | None = None,
    ) -> NodeConfig:
        """Change some of the node's limits; returns the full configuration after.

        Only the given values are sent, and the node applies all or none.
        Raises :class:`PeerGridValidationError` for a value out of range or
        when nothing is given.
        """
        fields = {
            k: v
            for k, v in {
                "limit_mwh": limit_mwh,
                "min_mv": min_mv,
                "max_ma": max_ma,
                "max_lease_s": max_lease_s,
                "push_s": push_s,
            }.items()
            if v is not None
        }
        if not fields:
            raise PeerGridValidationError("set_config", "give at least one value to change")
        try:
            request = SetConfig.model_validate(fields)
        except ValidationError as err:
            first = err.errors()[0]
            raise PeerGridValidationError(str(first["loc"][0]), first["msg"]) from err
        return await self._request(request, NodeConfig)

    # ------------------------------------------------------------------ supervision

    async def run(self) -> None:
        """Keep a connection open until :meth:`close`, reconnecting with backoff.

        Connection state changes reach :meth:`listen_connection` callbacks.
        Returns when the client is closed. An authentication failure is not
        retried (a wrong key does not heal by waiting): it is raised.
        """
        attempt = 0
        while not self._close_requested.is_set():
            try:
                await self.connect()
            except PeerGridAuthenticationError:
                raise
            except PeerGridError as err:
                if self._close_requested.is_set():
                    return
                _LOGGER.debug("Connecting to %s failed: %s", self.host, err)
            else:
                conn = self._conn
                started = self._clock()
                if conn is not None:
                    await self._wait_closed_or_close(conn.closed.wait())
                if self._clock() - started >= self._backoff.reset_after:
                    attempt = 0
            if self._close_requested.is_set():
                return
            delay = self._backoff.delay(attempt, self._rng)
            attempt += 1
            _LOGGER.debug("Reconnecting to %s in %.1f s", self.host, delay)
            await self._wait_closed_or_close(self._sleep(delay))

    async def _wait_closed_or_close(self, awaitable: Awaitable[object]) -> None:
        """Wait for ``awaitable`` or for :meth:`close`, whichever comes first."""
        waiter = asyncio.ensure_future(awaitable)
        closer = asyncio.ensure_future(self._close_requested.wait())
        try:
            await asyncio.wait({waiter, closer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, closer):
                if not task.done():
                    task.cancel()
            await asyncio.gather(waiter, closer, return_exceptions=True)

    async def close(self) -> None:
        """Close the connection and stop :meth:`run`; the client cannot reconnect after."""
        self._close_requested.set()
        conn = self._conn
        if conn is None:
            return
        self._teardown(conn, PeerGridConnectionError("client closed"))
        await asyncio.gather(*conn.tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await conn.writer.wait_closed()

    async def __aenter__(self) -> Self:
        """Connect on entering ``async with``."""
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close on leaving ``async with``."""
        await self.close()
