"""Stable error codes of the relay protocol, carried in :class:`frames.Error`
and in :class:`frames.DepositResult`. Codes never change meaning; new ones are
only added. ``docs/protocol.md`` documents each."""

from __future__ import annotations

from typing import Final

BAD_FRAME: Final = "bad_frame"                  # undecodable or invalid frame
UNSUPPORTED_VERSION: Final = "unsupported_version"
FRAME_TOO_LARGE: Final = "frame_too_large"
UNEXPECTED_FRAME: Final = "unexpected_frame"    # valid frame, wrong moment
NOT_AUTHENTICATED: Final = "not_authenticated"
ANONYMOUS_ONLY: Final = "anonymous_only"        # deposit/presence on a logged-in connection
AUTH_FAILED: Final = "auth_failed"
REGISTRATION_CLOSED: Final = "registration_closed"
BAD_TOKEN: Final = "bad_token"  # noqa: S105 - an error code, not a secret
UNKNOWN_MAILBOX: Final = "unknown_mailbox"
BAD_CAPABILITY: Final = "bad_capability"
CAPABILITY_USED: Final = "capability_used"      # a one-shot capability already deposited once
QUOTA_EXCEEDED: Final = "quota_exceeded"
RATE_LIMITED: Final = "rate_limited"
BLOB_NOT_FOUND: Final = "blob_not_found"
BLOB_TOO_LARGE: Final = "blob_too_large"
BAD_REQUEST: Final = "bad_request"              # e.g. blob chunk at the wrong offset
TOO_MANY_CONNECTIONS: Final = "too_many_connections"
HANDSHAKE_TIMEOUT: Final = "handshake_timeout"
MESSAGE_TIMEOUT: Final = "message_timeout"      # a message was not finished in time
IDLE_TIMEOUT: Final = "idle_timeout"            # no message nor ping within the window
SLOW_CONSUMER: Final = "slow_consumer"
TRY_AGAIN: Final = "try_again"                  # transient (storage down); retry later
SHUTTING_DOWN: Final = "shutting_down"
INSTALLATION_REPLACED: Final = "installation_replaced"  # Auth: another installation took over
INTERNAL_ERROR: Final = "internal_error"
RELAY_FULL: Final = "relay_full"                # the relay's storage budget is used up

ALL_CODES: Final = frozenset({
    BAD_FRAME, UNSUPPORTED_VERSION, FRAME_TOO_LARGE, UNEXPECTED_FRAME,
    NOT_AUTHENTICATED, ANONYMOUS_ONLY, AUTH_FAILED, REGISTRATION_CLOSED, BAD_TOKEN,
    UNKNOWN_MAILBOX, BAD_CAPABILITY, CAPABILITY_USED, QUOTA_EXCEEDED, RATE_LIMITED,
    BLOB_NOT_FOUND, BLOB_TOO_LARGE, BAD_REQUEST, TOO_MANY_CONNECTIONS,
    HANDSHAKE_TIMEOUT, MESSAGE_TIMEOUT, IDLE_TIMEOUT, SLOW_CONSUMER, TRY_AGAIN,
    SHUTTING_DOWN, INTERNAL_ERROR, INSTALLATION_REPLACED, RELAY_FULL,
})

# Codes after which retrying the same request later may succeed.
TRANSIENT: Final = frozenset({RATE_LIMITED, TRY_AGAIN, SHUTTING_DOWN, TOO_MANY_CONNECTIONS})
