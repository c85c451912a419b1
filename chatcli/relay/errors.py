"""Errors of the relay. A :class:`Refused` request is answered with its
``code`` (one of :mod:`chatcli.protocol.codes`) and the connection goes on."""

from __future__ import annotations

from chatcli.errors import RelayError
from chatcli.protocol import codes

__all__ = ["Refused"]


class Refused(RelayError):
    """The relay refuses one request; ``code`` is the wire error code."""

    def __init__(self, code: str, message: str) -> None:
        if code not in codes.ALL_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
