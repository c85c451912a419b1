"""The relay's configuration: one frozen dataclass, durations, the TOML file.

Precedence: command-line flags over the ``--config`` file over defaults. The
file is TOML with the same names as :class:`RelayConfig`'s fields (dashes or
underscores), durations as strings (``"21d"``, ``"90s"``) or seconds.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

from chatcli.errors import UsageError
from chatcli.protocol import frames

__all__ = ["RelayConfig", "load_config_file", "parse_duration", "parse_size"]

_DURATION_RE = re.compile(r"(?i)\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400,
                   None: 1}
_SIZE_RE = re.compile(r"(?i)\s*(\d+)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?\s*")
_SIZE_UNITS = {"b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2,
               "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3, None: 1}


def parse_duration(text: str | float) -> float:
    """Seconds from ``"90s"``, ``"15m"``, ``"12h"``, ``"21d"``, ``"2w"`` or a number."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text < 0:
            raise UsageError(f"A duration cannot be negative: {text}.")
        return float(text)
    match = _DURATION_RE.fullmatch(str(text))
    if not match:
        raise UsageError(f"{text!r} is not a duration; write e.g. 90s, 15m, 12h, 21d or 2w.")
    unit = match.group(2).lower() if match.group(2) else None
    return float(match.group(1)) * _DURATION_UNITS[unit]


def parse_size(text: str | int) -> int:
    """Bytes from ``"64MiB"``, ``"512k"`` or a number."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise UsageError(f"A size cannot be negative: {text}.")
        return text
    match = _SIZE_RE.fullmatch(str(text))
    if not match:
        raise UsageError(f"{text!r} is not a size; write e.g. 512KiB or 64MiB.")
    unit = match.group(2).lower() if match.group(2) else None
    return int(match.group(1)) * _SIZE_UNITS[unit]


@dataclasses.dataclass(frozen=True, slots=True)
class RelayConfig:
    """Everything a relay needs to run. Durations in seconds, sizes in bytes."""

    db: str = "relay.db"
    host: str = "127.0.0.1"
    port: int = 8765
    retention: float = 21 * 86400.0
    invite_only: bool = False
    max_connections: int = 10_000
    tls_cert: str | None = None
    tls_key: str | None = None
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    log_json: bool = False
    log_level: str = "INFO"
    # Frames and handshake.
    max_frame: int = frames.MAX_FRAME_SIZE
    max_payload: int = frames.MAX_PAYLOAD_SIZE
    handshake_timeout: float = 10.0
    # Input bounds (inbound.py): WebSocket frames per message, seconds to
    # finish a message once begun, bytes of unfinished input over all
    # connections, and idle windows (no message nor ping) before and after
    # authentication.
    max_fragments: int = 64
    message_timeout: float = 30.0
    input_budget: int = 64 * 1024 * 1024
    idle_timeout: float = 60.0
    keepalive_timeout: float = 300.0
    # Mailbox quotas.
    mailbox_max_messages: int = 10_000
    mailbox_max_bytes: int = 100 * 1024 * 1024
    # Blobs.
    max_blob_size: int = 64 * 1024 * 1024
    blob_quota: int = 256 * 1024 * 1024
    max_blob_ttl: float = 366 * 86400.0
    # Rates: a token bucket per connection (frames) and per capability (deposits).
    connection_rate: float = 200.0
    connection_burst: float = 400.0
    capability_rate: float = 50.0
    capability_burst: float = 200.0
    # Per source address: deposits refused in the commit for an unknown or
    # invalid capability (a random-capability flood); over it, the source's
    # deposit frames are refused whole as rate_limited.
    bad_capability_rate: float = 100.0
    bad_capability_burst: float = 1000.0
    # Per source address (an IPv4 address, an IPv6 /64), in each relay process:
    # registrations (a token bucket) and open connections.
    registration_rate: float = 1.0
    registration_burst: float = 60.0
    max_connections_per_address: int = 256
    # Everything clients can make the relay store (queued message bytes plus
    # blob bytes), across all mailboxes; 0 for no budget.
    storage_budget: int = 10 * 1024**3
    # Presence subscriptions per connection.
    max_subscriptions: int = 1024
    # Outgoing: frames queued per connection before it is cut off as a slow
    # consumer, and how long one send may stall.
    send_queue: int = 256
    send_timeout: float = 30.0
    # Group commit: the most deposit/ack items in one transaction.
    commit_batch: int = 4096
    # ... and the most payload bytes (with 512 per item), to keep each commit
    # short: every connection with work queued waits for the one running.
    commit_bytes: int = 1024 * 1024
    # Database work in a child process (True) or a thread of the relay (False).
    storage_process: bool = True
    # Delivery: messages per Deliver frame.
    deliver_batch: int = frames.MAX_BATCH
    # Expiry sweep period.
    sweep_interval: float = 60.0
    # Seconds to finish work at shutdown before connections are closed anyway.
    shutdown_grace: float = 5.0

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise UsageError("--tls-cert and --tls-key go together.")
        if not 0 <= self.port <= 65535:
            raise UsageError(f"Port {self.port} is out of range.")
        if self.max_frame > frames.MAX_FRAME_SIZE or self.max_frame < 1024:
            raise UsageError(f"max_frame must be between 1024 and {frames.MAX_FRAME_SIZE}.")
        if not 1 <= self.max_payload <= frames.MAX_PAYLOAD_SIZE:
            raise UsageError(f"max_payload must be between 1 and {frames.MAX_PAYLOAD_SIZE}.")
        if self.max_connections < 1:
            raise UsageError("max_connections must be at least 1.")
        if self.max_connections_per_address < 1:
            raise UsageError("max_connections_per_address must be at least 1.")
        if self.registration_rate <= 0 or self.registration_burst < 1:
            raise UsageError("registration_rate must be positive and registration_burst "
                             "at least 1.")
        if self.bad_capability_rate <= 0 or self.bad_capability_burst < 1:
            raise UsageError("bad_capability_rate must be positive and bad_capability_burst "
                             "at least 1.")
        if self.storage_budget < 0:
            raise UsageError("storage_budget cannot be negative (0: no budget).")
        if self.retention <= 0:
            raise UsageError("The retention must be positive.")
        if self.max_fragments < 1:
            raise UsageError("max_fragments must be at least 1.")
        if self.input_budget < self.max_frame:
            raise UsageError("input_budget must be at least max_frame.")
        if min(self.message_timeout, self.idle_timeout, self.keepalive_timeout) <= 0:
            raise UsageError("message_timeout, idle_timeout and keepalive_timeout "
                             "must be positive.")
        if not 1 <= self.deliver_batch <= frames.MAX_BATCH:
            raise UsageError(f"deliver_batch must be between 1 and {frames.MAX_BATCH}.")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def replace(self, **changes: Any) -> RelayConfig:
        return dataclasses.replace(self, **changes)


_DURATION_FIELDS = {"retention", "handshake_timeout", "message_timeout", "idle_timeout",
                    "keepalive_timeout", "send_timeout", "sweep_interval",
                    "shutdown_grace", "max_blob_ttl"}
_SIZE_FIELDS = {"max_frame", "max_payload", "input_budget", "commit_bytes",
                "mailbox_max_bytes", "max_blob_size", "blob_quota", "storage_budget"}


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The settings of a TOML file as :class:`RelayConfig` keyword arguments.

    Accepts a top-level table or a ``[relay]`` table; refuses unknown keys.
    """
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise UsageError(f"Cannot read the config file {path}: {exc.strerror}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"The config file {path} is not valid TOML: {exc}.") from None
    if isinstance(data.get("relay"), dict):
        data = data["relay"]
    known = {f.name for f in dataclasses.fields(RelayConfig)}
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = raw_key.replace("-", "_")
        if key not in known:
            raise UsageError(f"Unknown setting {raw_key!r} in {path}.")
        if key in _DURATION_FIELDS:
            value = parse_duration(value)
        elif key in _SIZE_FIELDS:
            value = parse_size(value)
        out[key] = value
    return out
