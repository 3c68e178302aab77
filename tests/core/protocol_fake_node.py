"""A small node-side implementation of protocol version 1 for the client tests.

It speaks the real protocol over real loopback TCP, built on the core's codec
in the node role, with just enough node behaviour (modes, lease bookkeeping,
stricter-of limits, one controller at a time, config) to exercise every path
of :class:`peergrid_core.protocol.NodeClient`. There is no physics here: the
simulator and the firmware own that. Tests drive pushes and trips by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from peergrid_core.protocol import (
    MAX_LINE_BYTES,
    PROTOCOL_VERSION,
    Ack,
    Auth,
    AuthScheme,
    Command,
    ErrorCode,
    Event,
    FrameError,
    GetConfig,
    GetStatus,
    Hello,
    Limits,
    Mode,
    NodeConfig,
    NodeState,
    Ping,
    Pong,
    Role,
    SessionSecrets,
    SetConfig,
    SignedSession,
    Status,
    TripReason,
    new_nonce,
    parse_controller_message,
)
from peergrid_core.protocol.auth import proofs_match
from peergrid_core.protocol.frames import decode_body, is_blank, plain_line, strip_line

_STATE_OF = {Mode.IDLE: NodeState.IDLE, Mode.SUPPLY: NodeState.SUPPLYING}
_STATE_OF[Mode.RECEIVE] = NodeState.RECEIVING


@dataclass(eq=False)
class FakeSession:
    """One connected controller."""

    writer: asyncio.StreamWriter
    signed: SignedSession | None = None
    authenticated: bool = False

    def send(self, body: dict[str, Any]) -> None:
        line = self.signed.seal(body) if self.signed else plain_line(body)
        self.writer.write(line)


@dataclass
class FakeNode:
    """A protocol-1 node without hardware."""

    key: bytes | None
    bench_mode: bool = False
    uid: str = "pg-fake01"
    proto: int = PROTOCOL_VERSION
    nonce_factory: Any = new_nonce
    limit_mwh: int = 10_000
    min_mv: int = 3_300
    max_ma: int = 2_500
    max_lease_s: int = 120
    push_s: int = 5
    mv: int = 3_900
    corrupt_node_proof: bool = False
    answer_requests: bool = True
    mode: Mode = Mode.IDLE
    state: NodeState = NodeState.IDLE
    trip: TripReason | None = None
    lease_s: int = 0
    controller: FakeSession | None = None
    sessions: list[FakeSession] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", port, limit=MAX_LINE_BYTES * 2
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        await self.drop_all()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def drop_all(self) -> None:
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    # ------------------------------------------------------------------ telemetry

    def status_body(self, request_id: int | None = None) -> dict[str, Any]:
        status = Status.model_validate(
            {
                "id": request_id,
                "uid": self.uid,
                "mode": self.mode,
                "state": self.state,
                "mv": self.mv,
                "ma": 0 if self.mode is Mode.IDLE else 1500,
                "mw": 0,
                "soc": 700,
                "e_out_mwh": 0,
                "e_in_mwh": 0,
                "e_session_mwh": 0,
                "lease_left_s": self.lease_s,
                "trip": self.trip,
                "rssi": None,
                "uptime_s": 1,
                "fw": "fake",
                "lim": Limits(
                    limit_mwh=self.limit_mwh,
                    min_mv=self.min_mv,
                    max_ma=self.max_ma,
                    max_lease_s=self.max_lease_s,
                ),
            }
        )
        body = status.to_body()
        if request_id is None:
            body.pop("id")
        return body

    async def push_status(self) -> None:
        for session in self._live():
            session.send(self.status_body())
            await session.writer.drain()

    async def trip_now(self, reason: TripReason) -> None:
        stopped = self.mode
        self.mode, self.state, self.trip, self.lease_s = Mode.IDLE, NodeState.TRIPPED, reason, 0
        self.controller = None
        event = Event(reason=reason, mode=stopped, mv=self.mv, e_session_mwh=0)
        for session in self._live():
            session.send(event.to_body())
        await self.push_status()

    async def send_raw(self, line: bytes) -> None:
        for session in self._live():
            session.writer.write(line)
            await session.writer.drain()

    def _live(self) -> list[FakeSession]:
        return [s for s in self.sessions if s.authenticated]

    # ------------------------------------------------------------------ connection

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        session = FakeSession(writer)
        self.sessions.append(session)
        try:
            await self._serve(session, reader)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.sessions.remove(session)
            if self.controller is session:
                self.controller = None
                self.mode, self.state, self.trip = Mode.IDLE, NodeState.TRIPPED, None
                self.trip = TripReason.CONTROLLER_LOST
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._handlers.discard(task)

    async def _serve(self, session: FakeSession, reader: asyncio.StreamReader) -> None:
        bench = self.key is None and self.bench_mode
        hello = Hello(
            proto=self.proto,
            uid=self.uid,
            fw="fake",
            caps=("supply", "receive", "config"),
            auth=AuthScheme.NONE if bench else AuthScheme.HMAC_SHA256,
            nonce=self.nonce_factory(),
            reset="power_on",
            push_s=self.push_s,
            idle_s=30,
        )
        hello_line = plain_line(hello.to_body())
        session.writer.write(hello_line)
        if bench:
            session.authenticated = True
        while True:
            line = await reader.readuntil(b"\n")
            if is_blank(line):
                continue
            try:
                if session.authenticated:
                    await self._on_frame(session, line)
                else:
                    self._on_auth(session, hello_line, line)
            except FrameError as err:
                fatal = err.fatal or not session.authenticated
                body: dict[str, Any] = {"t": "err"}
                if err.request_id is not None:
                    body["id"] = err.request_id
                body |= {"code": err.code, "msg": err.message[:80]}
                if err.field:
                    body["field"] = err.field
                if fatal:
                    body["close"] = True
                session.send(body)
                await session.writer.drain()
                if fatal:
                    return
            await session.writer.drain()

    def _on_auth(self, session: FakeSession, hello_line: bytes, line: bytes) -> None:
        if self.key is None:
            raise FrameError(ErrorCode.AUTH_FAILED, "bench mode node")
        if not line.lstrip().startswith(b"{"):
            raise FrameError(ErrorCode.AUTH_REQUIRED, "authenticate first")
        body = decode_body(strip_line(line))
        if body.get("t") != "auth":
            raise FrameError(ErrorCode.AUTH_REQUIRED, "authenticate first")
        if body.get("proto") != PROTOCOL_VERSION:
            raise FrameError(ErrorCode.UNSUPPORTED_PROTO, "protocol 1 only")
        auth = parse_controller_message(body)
        assert isinstance(auth, Auth)
        secrets = SessionSecrets.derive(self.key, hello_line, auth.cnonce)
        if not proofs_match(secrets.client_proof, auth.mac):
            raise FrameError(ErrorCode.AUTH_FAILED, "wrong proof")
        proof = secrets.node_proof
        if self.corrupt_node_proof:
            proof = ("1" if proof[0] == "0" else "0") + proof[1:]
        session.writer.write(plain_line({"t": "auth_ok", "mac": proof}))
        session.signed = SignedSession(secrets=secrets, role=Role.NODE)
        session.authenticated = True
        session.send(self.status_body())

    async def _on_frame(self, session: FakeSession, line: bytes) -> None:
        if session.signed is not None:
            body = session.signed.open(line)
        elif not line.lstrip().startswith(b"{"):
            word = strip_line(line).rstrip(b"\r").decode("ascii", "replace")
            if word not in {"SUPPLY", "RECEIVE", "IDLE"}:
                raise FrameError(ErrorCode.UNKNOWN_TYPE, "unknown command")
            body = {"t": "cmd", "mode": word}
            if word != "IDLE":
                body["lease_s"] = self.max_lease_s
        else:
            body = decode_body(strip_line(line))
            if body.get("t") == "auth":
                raise FrameError(ErrorCode.AUTH_FAILED, "bench mode node")
        self.received.append(body)
        message = parse_controller_message(body)
        if not self.answer_requests:
            return
        match message:
            case Command():
                reply: dict[str, Any] = self._command(session, message).to_body()
            case GetStatus():
                reply = self.status_body(message.request_id)
            case Ping():
                reply = Pong(request_id=message.request_id, lease_left_s=self.lease_s).to_body()
            case GetConfig() | SetConfig():
                if isinstance(message, SetConfig):
                    for name, value in message.model_dump(exclude_none=True).items():
                        if name not in {"t", "seq", "request_id"}:
                            setattr(self, name, value)
                reply = NodeConfig(
                    request_id=message.request_id,
                    limit_mwh=self.limit_mwh,
                    min_mv=self.min_mv,
                    max_ma=self.max_ma,
                    max_lease_s=self.max_lease_s,
                    push_s=self.push_s,
                ).to_body()
            case _:
                raise FrameError(ErrorCode.UNKNOWN_TYPE, "not for a node")
        session.send(reply)
        if isinstance(message, Command):
            session.send(self.status_body())

    def _command(self, session: FakeSession, cmd: Command) -> Ack:
        if cmd.mode is Mode.IDLE:
            self.mode, self.state, self.lease_s, self.controller = (
                Mode.IDLE,
                NodeState.IDLE,
                0,
                None,
            )
            return Ack(request_id=cmd.request_id, mode=Mode.IDLE)
        if self.controller is not None and self.controller is not session:
            raise FrameError(
                ErrorCode.BUSY, "another session controls the node", request_id=cmd.request_id
            )
        if cmd.mode is Mode.SUPPLY and self.mv < max(cmd.min_mv or 0, self.min_mv):
            raise FrameError(ErrorCode.LOW_VOLTAGE, "cell too low", request_id=cmd.request_id)
        assert cmd.lease_s is not None
        renewed = self.controller is session and self.mode is cmd.mode
        self.mode, self.state, self.controller = cmd.mode, _STATE_OF[cmd.mode], session
        self.lease_s = min(cmd.lease_s, self.max_lease_s)
        return Ack(
            request_id=cmd.request_id,
            mode=cmd.mode,
            lease_s=self.lease_s,
            limit_mwh=min(cmd.limit_mwh or self.limit_mwh, self.limit_mwh),
            min_mv=max(cmd.min_mv or self.min_mv, self.min_mv),
            renewed=renewed,
        )
