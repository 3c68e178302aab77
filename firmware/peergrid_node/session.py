"""One TCP connection to the node: handshake, framing, dispatch, pushes.

Each session runs two tasks: the reader (the ``start_server`` callback) and a
writer that drains an outbound queue. Every outgoing frame is signed and
numbered when it is queued, so frames leave in ``seq`` order whichever task
produced them (a command's ack, a trip event from the sensor loop, a periodic
status). Reads go into a bounded buffer: a peer that never sends an LF cannot
grow the heap past one line.
"""

import asyncio

from . import wire
from .crypto import consteq, hmac_hex, to_hex

AUTH_DEADLINE_MS = 10000
CLOSE_GRACE_MS = 3000
MAX_QUEUE = 16
READ_CHUNK = 256

PLAIN_COMMANDS = (b"SUPPLY", b"RECEIVE", b"IDLE")


class Session:
    """Protocol state of one connection; created by ``Node`` on accept."""

    def __init__(self, node, reader, writer):
        self.node = node
        self._reader = reader
        self._writer = writer
        self.signed = node.key is not None
        self.bench = node.bench_mode
        self.authed = not self.signed
        self._k_c2n = None
        self._k_n2c = None
        self._hello = b""
        self._nonce = ""
        self.rx_seq = 0
        self.tx_seq = 0
        self._buf = b""
        self._out = []
        self._wake = asyncio.Event()
        self.closing = False
        self.closing_ms = None
        self.opened_ms = node.hw.ticks_ms()
        self.last_rx_ms = self.opened_ms
        self.task = None
        self._writer_task = None

    # ------------------------------------------------------------ output

    def _queue(self, line):
        if self.closing:
            return
        if len(self._out) >= MAX_QUEUE:
            # The peer does not read: drop it rather than buffer without end.
            self.abort()
            return
        self._out.append(line)
        self._wake.set()

    def send(self, body):
        """Queue ``body`` (a dict starting with ``t``), signed when the session is."""
        if self.closing:
            return
        if self.authed and self.signed:
            if self.tx_seq >= wire.MAX_SEQ:
                # Never wrap: a new connection re-keys instead.
                self.abort()
                return
            self.tx_seq += 1
            out = {"t": body["t"], "seq": self.tx_seq}
            for k in body:
                if k != "t":
                    out[k] = body[k]
            self._queue(wire.signed_line(self._k_n2c, wire.dumps(out)))
        else:
            self._queue(wire.dumps(body) + b"\n")

    def push(self, body):
        """Queue an unsolicited frame, only to sessions past authentication."""
        if self.authed:
            self.send(body)

    def error(self, code, msg, rid=None, field=None, close=False):
        """Queue an ``err``; with ``close`` the session ends once it is sent."""
        body = {"t": "err"}
        if rid is not None:
            body["id"] = rid
        body["code"] = code
        if field is not None:
            body["field"] = field
        body["msg"] = msg[:80]
        if close:
            body["close"] = True
        self.send(body)
        if close:
            self.closing = True
            self.closing_ms = self.node.hw.ticks_ms()
            self._wake.set()

    def expire(self):
        """Idle or handshake timeout (called by the node's supervisor)."""
        self.error("idle_timeout", "nothing received in time", close=True)
        if self.task is not None:
            self.task.cancel()

    def abort(self):
        """End the session now, without a goodbye (node stop, slow peer)."""
        if not self.closing:
            self.closing = True
            self.closing_ms = self.node.hw.ticks_ms()
        self._out = []
        self._wake.set()
        if self.task is not None:
            self.task.cancel()
        if self._writer_task is not None:
            self._writer_task.cancel()

    async def _write_loop(self):
        try:
            while True:
                while self._out:
                    self._writer.write(self._out.pop(0))
                    await self._writer.drain()
                if self.closing:
                    return
                await self._wake.wait()
                self._wake.clear()
        except Exception:
            self.closing = True

    # ------------------------------------------------------------ input

    async def _readline(self):
        """The next line with its LF, ``None`` at EOF; bounded to MAX_LINE."""
        while True:
            i = self._buf.find(b"\n")
            if i >= 0:
                if i + 1 > wire.MAX_LINE:
                    raise wire.ProtocolError("line_too_long", "line over 512 bytes", True)
                line = self._buf[: i + 1]
                self._buf = self._buf[i + 1 :]
                return line
            if len(self._buf) >= wire.MAX_LINE:
                raise wire.ProtocolError("line_too_long", "line over 512 bytes", True)
            data = await self._reader.read(READ_CHUNK)
            if not data:
                return None
            self._buf += data

    async def serve(self):
        """Run the connection until it closes; always leaves the socket closed."""
        self.task = asyncio.current_task()
        self._writer_task = asyncio.create_task(self._write_loop())
        try:
            self._send_hello()
            while not self.closing:
                line = await self._readline()
                if line is None:
                    break
                await self._on_line(line[:-1])
        except wire.ProtocolError as err:
            self.error(err.code, err.msg, err.rid, err.field, close=True)
        except asyncio.CancelledError:
            pass
        except Exception:
            # Connection reset, broken pipe: the session just ends.
            self.closing = True
        finally:
            self.closing = True
            self.node.session_closed(self)
            self._wake.set()
            await self._finish()

    async def _finish(self):
        try:
            await self._writer_task
        except BaseException:
            pass
        try:
            self._writer.close()
            await self._writer.wait_closed()
        except Exception:
            pass

    def _send_hello(self):
        node = self.node
        self._nonce = to_hex(node.hw.urandom(16))
        hello = {"t": "hello"}
        hello["proto"] = wire.PROTO
        hello["uid"] = node.uid
        hello["fw"] = node.fw
        hello["caps"] = ["supply", "receive", "config"]
        hello["auth"] = "hmac-sha256" if self.signed else "none"
        hello["nonce"] = self._nonce
        hello["reset"] = node.reset_cause
        hello["push_s"] = node.config["push_s"]
        hello["idle_s"] = node.config["idle_s"]
        self._hello = wire.dumps(hello)
        self._queue(self._hello + b"\n")

    async def _on_line(self, line):
        if not line or line == b"\r":
            return  # keepalive; not authenticated, so it does not reset the idle timer
        if not self.authed:
            self._on_auth(line)
        elif self.signed:
            await self._on_signed(line)
        else:
            await self._on_unsigned(line)

    def _on_auth(self, line):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.startswith(b"{"):
            raise wire.ProtocolError("auth_required", "authenticate first", True)
        msg = wire.parse_object(line)
        if msg.get("t") != "auth":
            raise wire.ProtocolError("auth_required", "authenticate first", True)
        proto = msg.get("proto")
        if type(proto) is not int:
            raise wire.ProtocolError("bad_request", "proto must be an integer", True, "proto")
        if proto != wire.PROTO:
            raise wire.ProtocolError("unsupported_proto", "protocol 1 only", True)
        cnonce = msg.get("cnonce")
        if not wire.is_lower_hex(cnonce, 32):
            raise wire.ProtocolError("bad_request", "cnonce must be 32 hex", True, "cnonce")
        mac = msg.get("mac")
        if not wire.is_lower_hex(mac, 64):
            raise wire.ProtocolError("bad_request", "mac must be 64 hex", True, "mac")
        client, node_proof, k_c2n, k_n2c = wire.session_secrets(self.node.key, self._hello, cnonce)
        if not consteq(mac.encode(), client.encode()):
            raise wire.ProtocolError("auth_failed", "wrong proof", True)
        self.send({"t": "auth_ok", "mac": node_proof})
        self._k_c2n = k_c2n
        self._k_n2c = k_n2c
        self.authed = True
        self.last_rx_ms = self.node.hw.ticks_ms()
        self.send(self.node.status_body())

    async def _on_signed(self, line):
        mac, body = wire.split_signed(line)
        if not consteq(hmac_hex(self._k_c2n, body).encode(), mac):
            raise wire.ProtocolError("bad_mac", "mac mismatch", True)
        try:
            msg = wire.parse_object(body)
        except wire.ProtocolError as err:
            # The sequence number is unreadable, so the stream cannot go on.
            err.fatal = True
            raise
        seq = msg.get("seq")
        expected = self.rx_seq + 1
        if type(seq) is not int or seq != expected:
            shown = str(seq) if type(seq) is int else "missing or not an integer"
            raise wire.ProtocolError(
                "bad_seq", "sequence %s, expected %d" % (shown, expected), True
            )
        self.rx_seq = seq
        self.last_rx_ms = self.node.hw.ticks_ms()
        await self._dispatch(msg)

    async def _on_unsigned(self, line):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.startswith(b"{"):
            if self.bench and line in PLAIN_COMMANDS:
                self.last_rx_ms = self.node.hw.ticks_ms()
                await self._plain_command(line.decode())
            else:
                self.error("unknown_type", "unknown command")
            return
        try:
            msg = wire.parse_object(line)
        except wire.ProtocolError as err:
            self.error(err.code, err.msg)
            return
        self.last_rx_ms = self.node.hw.ticks_ms()
        if msg.get("t") == "auth":
            raise wire.ProtocolError("auth_failed", "this node has no key", True)
        await self._dispatch(msg)

    async def _plain_command(self, mode):
        lim = self.node.config["limits"]
        reply = await self.node.command(
            self, mode, None, lim["lease_max_s"], wire.DEFAULT_LIMIT_MWH, wire.DEFAULT_MIN_MV
        )
        self.send(reply)
        if reply["t"] == "ack":
            self.node.push_status()

    async def _dispatch(self, msg):
        t = msg.get("t")
        rid = None
        try:
            rid = wire.read_id(msg)
            if not isinstance(t, str):
                raise wire.ProtocolError("bad_request", "t must be a string", False, "t", rid)
            if t == "cmd":
                mode, lease_s, limit_mwh, min_mv = wire.read_cmd(msg, rid)
                reply = await self.node.command(self, mode, rid, lease_s, limit_mwh, min_mv)
                self.send(reply)
                if reply["t"] == "ack":
                    self.node.push_status()
            elif t == "ping":
                body = {"t": "pong"}
                if rid is not None:
                    body["id"] = rid
                body["lease_left_s"] = self.node.lease_left_s()
                self.send(body)
            elif t == "get_status":
                self.send(self.node.status_body(rid))
            elif t == "get_config":
                self.send(self.node.config_body(rid))
            elif t == "set_config":
                update = wire.read_config_update(msg, rid)
                self.send(self.node.update_config(update, rid))
            else:
                self.error("unknown_type", "unknown type", rid)
        except wire.ProtocolError as err:
            self.error(err.code, err.msg, err.rid if err.rid is not None else rid, err.field)
