"""Relay addresses: ``ws://HOST:PORT/#FINGERPRINT`` (or ``wss://``).

The fragment is the relay key's fingerprint (52 lower-case base32
characters, see :func:`chatcli.crypto.keys.relay_fingerprint`); it never
reaches the server, and a client that has it detects a wrong relay at
connect. It is optional: without it the client trusts the key on first use.
IPv6 hosts go in brackets: ``ws://[::1]:8765/#...``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Final
from urllib.parse import urlsplit

from chatcli.errors import ProtocolError

__all__ = ["FINGERPRINT_LENGTH", "InvalidRelayAddress", "RelayAddress", "parse_relay_url"]

FINGERPRINT_LENGTH: Final = 52
_FINGERPRINT_RE: Final = re.compile(r"[a-z2-7]{52}")
_DEFAULT_PORTS: Final = {"ws": 80, "wss": 443}
_HOST_RE: Final = re.compile(r"[A-Za-z0-9.\-_]+|[0-9A-Fa-f:.]+(%[A-Za-z0-9._\-]+)?")


class InvalidRelayAddress(ProtocolError):
    """A relay address could not be understood; the message says why."""

    exit_code = 2


@dataclasses.dataclass(frozen=True, slots=True)
class RelayAddress:
    """A parsed relay address. ``host`` has no brackets; ``fingerprint`` is
    None when the address carries none (trust on first use)."""

    scheme: str
    host: str
    port: int
    fingerprint: str | None = None

    @property
    def tls(self) -> bool:
        return self.scheme == "wss"

    @property
    def _netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url_without_fragment(self) -> str:
        """What to connect to: ``ws://HOST:PORT/``."""
        return f"{self.scheme}://{self._netloc}/"

    def display(self) -> str:
        """The full address, as users write it (with ``#FINGERPRINT`` if known)."""
        base = self.url_without_fragment
        return f"{base}#{self.fingerprint}" if self.fingerprint else base

    def with_fingerprint(self, fingerprint: str) -> RelayAddress:
        return dataclasses.replace(self, fingerprint=_check_fingerprint(fingerprint))

    def __str__(self) -> str:
        return self.display()


def _check_fingerprint(fingerprint: str) -> str:
    fp = fingerprint.strip().lower()
    if not _FINGERPRINT_RE.fullmatch(fp):
        raise InvalidRelayAddress(
            f"The relay fingerprint {fingerprint[:60]!r} is not valid: it should be "
            f"{FINGERPRINT_LENGTH} letters a-z and digits 2-7, as "
            "`chatcli relay fingerprint` prints it.")
    return fp


def parse_relay_url(url: str) -> RelayAddress:
    """Parse ``ws://HOST:PORT/#FINGERPRINT``; raise :class:`InvalidRelayAddress`."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidRelayAddress("The relay address is empty; it looks like "
                                  "ws://HOST:PORT/#FINGERPRINT.")
    text = url.strip()
    shown = text[:200]
    if any(c.isspace() or ord(c) < 32 for c in text):
        raise InvalidRelayAddress(f"The relay address {shown!r} contains spaces or "
                                  "control characters.")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise InvalidRelayAddress(f"The relay address {shown!r} is not valid: {exc}.") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise InvalidRelayAddress(f"The relay address {shown!r} must start with ws:// or "
                                  "wss://.")
    host = parts.hostname
    if not host:
        raise InvalidRelayAddress(f"The relay address {shown!r} names no host.")
    if not _HOST_RE.fullmatch(host):
        raise InvalidRelayAddress(f"The host in the relay address {shown!r} is not valid.")
    if parts.username is not None or parts.password is not None:
        raise InvalidRelayAddress(f"The relay address {shown!r} must not contain a user name "
                                  "or password.")
    if parts.path not in ("", "/") or parts.query:
        raise InvalidRelayAddress(f"The relay address {shown!r} must have no path or query; "
                                  "it looks like ws://HOST:PORT/#FINGERPRINT.")
    if port is None:
        if parts.netloc.endswith(":"):
            raise InvalidRelayAddress(f"The relay address {shown!r} has an empty port.")
        port = _DEFAULT_PORTS[scheme]
    if not 1 <= port <= 65535:
        raise InvalidRelayAddress(f"The port in the relay address {shown!r} is out of range.")
    fingerprint = _check_fingerprint(parts.fragment) if parts.fragment else None
    return RelayAddress(scheme=scheme, host=host, port=port, fingerprint=fingerprint)
