"""The connection state machines as data (like h11's ``_state.py``).

Both sides share the states. The relay side admits a client frame according
to its *kind* and the current state; handshake events move between states.
``docs/protocol.md`` draws these tables.
"""

from __future__ import annotations

import enum
from typing import Final

from chatcli.protocol import codes, frames


class State(enum.Enum):
    """Where a connection stands.

    CONNECTING: before the handshake (the client sent or the relay awaits Hello).
    READY: handshake done (Welcome verified); open requests allowed.
    AUTHENTICATING: a Register or Auth is in flight.
    AUTHENTICATED: the connection owns a mailbox; owner requests allowed.
    CLOSED: a fatal error, a Bye, or account deletion; nothing more is accepted.
    """

    CONNECTING = "connecting"
    READY = "ready"
    AUTHENTICATING = "authenticating"
    AUTHENTICATED = "authenticated"
    CLOSED = "closed"


class Kind(enum.Enum):
    """What a client frame needs from the connection."""

    HELLO = "hello"      # the handshake opener
    LOGIN = "login"      # Register / Auth
    OPEN = "open"        # anyone after the handshake: blob reads, ping
    ANONYMOUS = "anonymous"  # only a connection that never logged in: deposits, presence watching
    OWNER = "owner"      # only an authenticated owner


CLIENT_FRAME_KIND: Final[dict[type[frames.Frame], Kind]] = {
    frames.Hello: Kind.HELLO,
    frames.Register: Kind.LOGIN,
    frames.Auth: Kind.LOGIN,
    frames.Deposit: Kind.ANONYMOUS,
    frames.PresenceQuery: Kind.ANONYMOUS,
    frames.PresenceSubscribe: Kind.ANONYMOUS,
    frames.BlobGet: Kind.OPEN,
    frames.Ping: Kind.OPEN,
    frames.CapAdd: Kind.OWNER,
    frames.CapRevoke: Kind.OWNER,
    frames.Ack: Kind.OWNER,
    frames.AccountDelete: Kind.OWNER,
    frames.PresenceSettings: Kind.OWNER,
    frames.BlobPut: Kind.OWNER,
    frames.BlobDelete: Kind.OWNER,
}

# (state, kind) -> None when allowed, else the error code the relay answers.
# A refused frame with a request id gets an Error for that request and the
# connection continues; a refused Hello (it has no id) closes the connection.
# Sealed sender: a frame that names someone else's mailbox with a capability
# (a deposit, a presence query or subscription) is refused with
# ``anonymous_only`` once the connection has logged in (or is logging in), so
# the relay never sees a sender's mailbox and a recipient's on one connection.
ADMISSION: Final[dict[tuple[State, Kind], str | None]] = {
    (State.CONNECTING, Kind.HELLO): None,
    (State.CONNECTING, Kind.LOGIN): codes.UNEXPECTED_FRAME,
    (State.CONNECTING, Kind.OPEN): codes.UNEXPECTED_FRAME,
    (State.CONNECTING, Kind.ANONYMOUS): codes.UNEXPECTED_FRAME,
    (State.CONNECTING, Kind.OWNER): codes.UNEXPECTED_FRAME,
    (State.READY, Kind.HELLO): codes.UNEXPECTED_FRAME,
    (State.READY, Kind.LOGIN): None,
    (State.READY, Kind.OPEN): None,
    (State.READY, Kind.ANONYMOUS): None,
    (State.READY, Kind.OWNER): codes.NOT_AUTHENTICATED,
    (State.AUTHENTICATING, Kind.HELLO): codes.UNEXPECTED_FRAME,
    (State.AUTHENTICATING, Kind.LOGIN): codes.UNEXPECTED_FRAME,
    (State.AUTHENTICATING, Kind.OPEN): None,
    (State.AUTHENTICATING, Kind.ANONYMOUS): codes.ANONYMOUS_ONLY,
    (State.AUTHENTICATING, Kind.OWNER): codes.NOT_AUTHENTICATED,
    (State.AUTHENTICATED, Kind.HELLO): codes.UNEXPECTED_FRAME,
    (State.AUTHENTICATED, Kind.LOGIN): codes.UNEXPECTED_FRAME,
    (State.AUTHENTICATED, Kind.OPEN): None,
    (State.AUTHENTICATED, Kind.ANONYMOUS): codes.ANONYMOUS_ONLY,
    (State.AUTHENTICATED, Kind.OWNER): None,
    (State.CLOSED, Kind.HELLO): codes.UNEXPECTED_FRAME,
    (State.CLOSED, Kind.LOGIN): codes.UNEXPECTED_FRAME,
    (State.CLOSED, Kind.OPEN): codes.UNEXPECTED_FRAME,
    (State.CLOSED, Kind.ANONYMOUS): codes.UNEXPECTED_FRAME,
    (State.CLOSED, Kind.OWNER): codes.UNEXPECTED_FRAME,
}

# Frames before the handshake is done are refused fatally: a client that
# skipped Hello has not agreed on a version, so nothing it says can be trusted.
FATAL_STATES: Final = frozenset({State.CONNECTING, State.CLOSED})


class Event(enum.Enum):
    """Handshake events that move a connection between states."""

    HANDSHAKE_DONE = "handshake_done"      # relay sent / client verified Welcome
    LOGIN_SENT = "login_sent"              # Register or Auth in flight
    LOGIN_OK = "login_ok"                  # Registered / Ok for it
    LOGIN_FAILED = "login_failed"          # Error for it
    CLOSE = "close"                        # fatal error, Bye, account deleted


TRANSITIONS: Final[dict[tuple[State, Event], State]] = {
    (State.CONNECTING, Event.HANDSHAKE_DONE): State.READY,
    (State.READY, Event.LOGIN_SENT): State.AUTHENTICATING,
    (State.AUTHENTICATING, Event.LOGIN_OK): State.AUTHENTICATED,
    (State.AUTHENTICATING, Event.LOGIN_FAILED): State.READY,
    **{(state, Event.CLOSE): State.CLOSED for state in State},
}

# What answers each request, besides an Error with its id.
RESPONSE: Final[dict[type[frames.Frame], type[frames.Frame]]] = {
    frames.Register: frames.Registered,
    frames.Auth: frames.Ok,
    frames.CapAdd: frames.Ok,
    frames.CapRevoke: frames.Ok,
    frames.Deposit: frames.DepositResult,
    frames.Ack: frames.Ok,
    frames.AccountDelete: frames.Ok,
    frames.PresenceQuery: frames.PresenceResult,
    frames.PresenceSubscribe: frames.PresenceResult,
    frames.PresenceSettings: frames.Ok,
    frames.BlobPut: frames.Ok,
    frames.BlobGet: frames.BlobData,
    frames.BlobDelete: frames.Ok,
    frames.Ping: frames.Pong,
}

# Relay frames pushed without a request, and the states in which the relay may
# send them.
PUSH_STATES: Final[dict[type[frames.Frame], frozenset[State]]] = {
    frames.Welcome: frozenset({State.CONNECTING}),
    frames.Deliver: frozenset({State.AUTHENTICATED}),
    frames.Synced: frozenset({State.AUTHENTICATED}),
    frames.PresenceUpdate: frozenset({State.READY, State.AUTHENTICATING,
                                      State.AUTHENTICATED}),
    frames.Bye: frozenset(State) - {State.CLOSED},
}
