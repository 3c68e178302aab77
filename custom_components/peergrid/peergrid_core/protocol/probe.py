"""Look at a node before committing to it: read its hello, or test a key.

Discovery knows an address but not the key, so it cannot authenticate. What it
can do is read the unsigned ``hello`` every node sends first (docs/protocol.md
section 5.1): that names the node (its ``uid``, the identity a controller
files it under) and says whether the device speaks PeerGrid at all, and which
version. :func:`probe_node` does exactly that and closes again.

:func:`validate_node` is the full check a setup dialogue needs before it
stores anything: probe, then connect with :class:`~.client.NodeClient` and
authenticate both ways with the key, then close.

Neither function keeps a connection open or leaves a task behind.
"""

from __future__ import annotations

import asyncio
import contextlib

from ..errors import PeerGridConnectionError, PeerGridTimeoutError, PeerGridValidationError
from .auth import key_from_text
from .client import NodeClient
from .errors import NotPeerGridNodeError
from .frames import MAX_LINE_BYTES, is_blank
from .messages import Hello, parse_hello

DEFAULT_PROBE_TIMEOUT = 5.0
"""Seconds allowed for the TCP connect and, separately, for the hello (section 7)."""

_MAX_PORT = 65_535


def _check_port(port: int) -> None:
    # asyncio raises OverflowError (not OSError) for a port outside 0..65535.
    if not 1 <= port <= _MAX_PORT:
        raise PeerGridValidationError("port", f"{port} is outside 1..{_MAX_PORT}")


async def _read_first_line(reader: asyncio.StreamReader) -> bytes:
    """The first non-blank line, with its LF."""
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as err:
            # A node's hello fits in one line; a device sending more is not a node.
            raise NotPeerGridNodeError(f"first line is longer than {MAX_LINE_BYTES} bytes") from err
        except asyncio.IncompleteReadError as err:
            # A node at its session limit closes right after accepting: that is
            # a node that cannot talk now, not proof that it is no node.
            if err.partial.strip():
                raise NotPeerGridNodeError("connection closed inside the first line") from err
            raise PeerGridConnectionError("closed the connection before its hello") from err
        except OSError as err:
            raise PeerGridConnectionError(f"connection lost: {err}") from err
        if not is_blank(line):
            return line


async def probe_node(
    host: str,
    port: int,
    *,
    # The connect and the hello are bounded each on their own (section 7),
    # which one asyncio.timeout around the call could not express.
    timeout: float = DEFAULT_PROBE_TIMEOUT,  # noqa: ASYNC109
) -> Hello:
    """Connect to ``host:port``, read the node's hello, close; return the hello.

    Nothing is sent, so no key is needed and the node is left as it was.
    ``timeout`` applies to the TCP connect and to the wait for the hello,
    each on its own.

    Raises :class:`PeerGridConnectionError` when nothing accepts the
    connection or it closes before a hello, :class:`PeerGridTimeoutError`
    when the connect or the hello takes longer than ``timeout``,
    :class:`UnsupportedProtocolError` for a node of another protocol version,
    :class:`NotPeerGridNodeError` for a device that is no PeerGrid node, and
    :class:`PeerGridValidationError` (``port``) for a port outside 1..65535.
    """
    _check_port(port)
    try:
        async with asyncio.timeout(timeout):
            # The stream limit bounds what a chatty non-node can make us buffer.
            reader, writer = await asyncio.open_connection(host, port, limit=MAX_LINE_BYTES - 1)
    except TimeoutError as err:
        raise PeerGridTimeoutError(f"timed out connecting to {host}:{port}") from err
    except OSError as err:
        raise PeerGridConnectionError(f"cannot connect to {host}:{port}: {err}") from err
    try:
        async with asyncio.timeout(timeout):
            line = await _read_first_line(reader)
    except TimeoutError as err:
        raise PeerGridTimeoutError(f"{host}:{port} sent no hello within {timeout} s") from err
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return parse_hello(line)


async def validate_node(
    host: str,
    port: int,
    key: str,
    *,
    timeout: float = DEFAULT_PROBE_TIMEOUT,  # noqa: ASYNC109 - per step, as for probe_node
) -> Hello:
    """Check that ``host:port`` is a node that accepts ``key``; return its hello.

    ``key`` is the pre-shared key as text (its UTF-8 bytes, 16 to 64, are the
    key). The node is first probed, which tells a device that is not a node and
    a node of another protocol version apart from other failures; then a
    :class:`NodeClient` connects and both sides prove they hold the key. The
    connection is closed before returning, whatever happened. The hello
    returned is the one the authentication was bound to.

    Raises :class:`PeerGridValidationError` naming ``key`` for a key of the
    wrong length (before any connection) or ``port`` for a port outside
    1..65535, :class:`PeerGridAuthenticationError` when the node refuses the
    key, cannot prove it holds it, or runs without a key (bench mode), and
    the errors of :func:`probe_node`.
    """
    key_bytes = key_from_text(key)
    await probe_node(host, port, timeout=timeout)
    client = NodeClient(
        host,
        port,
        key_bytes,
        connect_timeout=timeout,
        request_timeout=timeout,
        keepalive_interval=0,  # the connection lives for one handshake only
    )
    try:
        return await client.connect()
    finally:
        await client.close()
