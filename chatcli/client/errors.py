"""Errors of the client that several modules share (kept free of heavy imports)."""

from __future__ import annotations

from chatcli.errors import RelayError
from chatcli.protocol import codes


class RelayRequestError(RelayError):
    """The relay answered a request with a typed error (``code``)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def transient(self) -> bool:
        """Whether retrying the same request later may succeed."""
        return self.code in codes.TRANSIENT


class InviteRefusedError(RelayError):
    """The inviter's relay refused an invite's handshake for good: the invite
    was used or revoked (exit code 3, like every relay error)."""
