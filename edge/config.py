"""The gateway's configuration: a YAML file, then environment overrides, then validation.

A minimal file::

    home_assistant:
      url: http://homeassistant.local:8123
      token: <long-lived access token>
    device_id: rpi-4b-prod-01
    nodes:
      - {uid: NODE_A, host: 192.168.1.101, key: <pre-shared key>}
      - {uid: NODE_B, host: 192.168.1.102, key: <pre-shared key>}

Environment variables override single values (so a token can come from a
systemd credential or an ``EnvironmentFile`` instead of the file):
``PEERGRID_HA_URL``, ``PEERGRID_HA_TOKEN``, ``PEERGRID_DEVICE_ID``,
``PEERGRID_CYCLE_S``, ``PEERGRID_LEASE_S``, ``PEERGRID_OUTBOX_PATH`` and
``PEERGRID_ZEROCONF``.

A file that holds a secret (the token or a node key) must not be readable by
group or others: :func:`load_config` refuses it, since anyone who can read the
token can command Home Assistant, and anyone with a node key can switch relays.
"""

from __future__ import annotations

from collections.abc import Mapping
import os
from pathlib import Path
import stat
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
import yaml

from peergrid_core.errors import PeerGridValidationError
from peergrid_core.payload_fields import DeviceId, HardwareModel, NodeUid, StellarAddress
from peergrid_core.payloads import GeoLocation
from peergrid_core.protocol import DEFAULT_PORT, key_from_text
from peergrid_core.protocol.lease import MIN_LEASE_S

__all__ = [
    "DEFAULT_OUTBOX_PATH",
    "ENV_OVERRIDES",
    "ConfigError",
    "DepinSettings",
    "GatewayConfig",
    "HomeAssistantSettings",
    "NodeSettings",
    "load_config",
    "parse_config",
]

DEFAULT_OUTBOX_PATH: Final = Path("/var/lib/peergrid-gateway/outbox.sqlite3")
"""Where the outbox lives unless configured (systemd's ``StateDirectory``)."""

ENV_OVERRIDES: Final[Mapping[str, tuple[str, ...]]] = {
    "PEERGRID_HA_URL": ("home_assistant", "url"),
    "PEERGRID_HA_TOKEN": ("home_assistant", "token"),
    "PEERGRID_DEVICE_ID": ("device_id",),
    "PEERGRID_CYCLE_S": ("cycle_s",),
    "PEERGRID_LEASE_S": ("lease_s",),
    "PEERGRID_OUTBOX_PATH": ("outbox_path",),
    "PEERGRID_ZEROCONF": ("zeroconf",),
}
"""Environment variable -> the configuration key it replaces."""

_MAX_CONFIG_BYTES: Final = 1 << 20


class ConfigError(PeerGridValidationError):
    """The configuration cannot be used; ``field`` names the key at fault (dotted)."""


class _Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HomeAssistantSettings(_Settings):
    """Where Home Assistant is and how the gateway authenticates to it."""

    url: Annotated[str, Field(min_length=1, max_length=2048)]
    """Base URL, e.g. ``http://homeassistant.local:8123`` (no ``/api`` suffix)."""

    token: Annotated[str, Field(min_length=1, max_length=4096, repr=False)]
    """A long-lived access token of a Home Assistant user."""

    verify_ssl: bool = True
    request_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    """Deadline of one POST."""

    stream_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 45.0
    """The event stream counts as dead after this long without a byte (three keep-alives)."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return url.rstrip("/")

    @field_validator("token")
    @classmethod
    def _single_line(cls, token: str) -> str:
        token = token.strip()
        if not token or any(c.isspace() for c in token):
            raise ValueError("must be one word without blanks (paste the token exactly)")
        return token


class NodeSettings(_Settings):
    """One battery node the gateway controls."""

    uid: NodeUid
    """The node's identity as its hello announces it."""

    host: Annotated[str, Field(min_length=1, max_length=253)]
    port: Annotated[int, Field(ge=1, le=65535)] = DEFAULT_PORT
    key: Annotated[str | None, Field(repr=False)] = None
    """The pre-shared key (16-64 bytes of text); ``None`` only for a bench-mode node."""

    @field_validator("key")
    @classmethod
    def _valid_key(cls, key: str | None) -> str | None:
        if key is not None:
            try:
                key_from_text(key)
            except PeerGridValidationError as err:
                raise ValueError(err.message) from err
        return key

    @property
    def key_bytes(self) -> bytes | None:
        """The key as the protocol client takes it."""
        return None if self.key is None else key_from_text(self.key)


class DepinSettings(_Settings):
    """DePIN registry membership: where rewards go and what hardware this is."""

    wallet_address: StellarAddress
    hardware_model: HardwareModel | None = None
    """``None`` reads the board's model (``/proc/device-tree/model`` on a Pi)."""

    location: GeoLocation | None = None
    """Made public by registration: give it coarsened (two decimals is about a kilometre)."""


class GatewayConfig(_Settings):
    """Everything the gateway needs, validated."""

    home_assistant: HomeAssistantSettings
    device_id: DeviceId
    nodes: Annotated[tuple[NodeSettings, ...], Field(min_length=1, max_length=64)]
    cycle_s: Annotated[float, Field(ge=0.05, le=3600)] = 10.0
    """Node-data ping and DePIN heartbeat period, seconds."""

    lease_s: Annotated[int, Field(ge=MIN_LEASE_S, le=3600)] = 30
    """Lease asked of the nodes; also how long Home Assistant may stay silent while a command stands."""

    outbox_path: Path = DEFAULT_OUTBOX_PATH
    zeroconf: bool = True
    """Advertise ``_peergrid._tcp.local.`` on the local network."""

    depin: DepinSettings | None = None
    """Join the DePIN registry (``None``: do not register)."""

    @field_validator("nodes")
    @classmethod
    def _unique_nodes(cls, nodes: tuple[NodeSettings, ...]) -> tuple[NodeSettings, ...]:
        seen: set[str] = set()
        for node in nodes:
            if node.uid in seen:
                raise ValueError(f"node uid {node.uid} appears more than once")
            seen.add(node.uid)
        return nodes


def _error_from(err: ValidationError) -> ConfigError:
    first = err.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "config"
    return ConfigError(field, first["msg"])


def parse_config(data: Mapping[str, Any], env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Validate decoded configuration ``data`` after applying ``env`` overrides.

    Raises :class:`ConfigError` naming the first offending key (dotted, such
    as ``nodes.1.port``).
    """
    merged: dict[str, Any] = dict(data)
    for variable, path in ENV_OVERRIDES.items():
        value = (env or {}).get(variable)
        if value is None or value == "":
            continue
        target = merged
        for part in path[:-1]:
            inner = target.get(part)
            target[part] = dict(inner) if isinstance(inner, Mapping) else {}
            target = target[part]
        target[path[-1]] = value
    try:
        return GatewayConfig.model_validate(merged)
    except ValidationError as err:
        raise _error_from(err) from err


def _holds_secret(data: Mapping[str, Any]) -> str | None:
    """The dotted key of the first secret in ``data``, if any."""
    home_assistant = data.get("home_assistant")
    if isinstance(home_assistant, Mapping) and home_assistant.get("token"):
        return "home_assistant.token"
    nodes = data.get("nodes")
    if isinstance(nodes, list):
        for index, node in enumerate(nodes):
            if isinstance(node, Mapping) and node.get("key"):
                return f"nodes.{index}.key"
    return None


def load_config(path: Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read, check and validate the YAML file at ``path``.

    ``env`` defaults to the process environment. Raises :class:`ConfigError`
    for a missing or unreadable file, a file that is not a YAML mapping, a
    file holding a secret that group or others can read, and any invalid
    value.
    """
    try:
        info = path.stat()
        with path.open("rb") as file:
            raw = file.read(_MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ConfigError("config", f"cannot read {path}: {err.strerror or err}") from err
    if len(raw) > _MAX_CONFIG_BYTES:
        raise ConfigError("config", f"{path} is larger than {_MAX_CONFIG_BYTES} bytes")
    try:
        data = yaml.safe_load(raw) if raw.strip() else {}
    except yaml.YAMLError as err:
        raise ConfigError("config", f"{path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError("config", f"{path} must hold a mapping of keys to values")
    secret = _holds_secret(data)
    mode = stat.S_IMODE(info.st_mode)
    if secret is not None and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            secret,
            f"{path} holds a secret but group or others may read it (mode {mode:04o}); "
            f"run 'chmod 600 {path}' or move the secret to the environment",
        )
    return parse_config(data, os.environ if env is None else env)
