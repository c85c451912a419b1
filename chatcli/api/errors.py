"""Stable API error codes and their JSON-RPC error objects.

Every :class:`chatcli.errors.ChatcliError` maps to one snake_case code
(``data.error``) and keeps its message (the line the CLI prints) and exit
code (``data.exit``); the JSON-RPC ``code`` of an application error is
1000 + the exit code. The standard JSON-RPC codes cover the request itself.
Imports nothing heavy: the CLI uses it on its start-up path."""

from __future__ import annotations

from typing import Any

from chatcli.errors import ChatcliError

# The standard JSON-RPC 2.0 codes: name -> code.
STANDARD: dict[str, int] = {
    "parse_error": -32700,
    "invalid_request": -32600,
    "method_not_found": -32601,
    "invalid_params": -32602,
    "internal_error": -32603,
}

# Application errors: stable code -> (exit code, what it means). docs/api.md lists them.
APPLICATION: dict[str, tuple[int, str]] = {
    "error": (1, "A chatcli error without a more specific code."),
    "crypto_error": (1, "A key, a backup or a message could not be opened (wrong passphrase, "
                        "tampered file)."),
    "storage_error": (1, "The local database could not be read or written (or another "
                         "chatcli process holds it)."),
    "usage_error": (2, "The request was wrong: a bad argument, an unknown group..."),
    "unknown_contact": (2, "No contact has this name."),
    "relay_unreachable": (3, "A relay could not be reached or ended the connection."),
    "relay_refused": (3, "A relay refused the request (`data.relay_code` names its reason)."),
    "invite_refused": (3, "The invite was already used or revoked."),
    "key_changed": (4, "A contact's identity key changed and was not accepted yet."),
    "too_large": (5, "Larger than the relay that would store it accepts."),
    "installation_replaced": (6, "This installation was replaced by a backup restored "
                                 "elsewhere."),
    "locked": (1, "The daemon is locked: only `unlock`, `daemon.*` and `web.*` work until "
                  "then."),
    "no_identity": (2, "The daemon's home has no identity yet: `account.create` first."),
}


class ApiError(Exception):
    """An error answer: a stable code, a message for users, the CLI exit code."""

    def __init__(self, error: str, message: str, *, exit_code: int | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.message = message
        if exit_code is None:
            exit_code = APPLICATION[error][0] if error in APPLICATION else 1
        self.exit_code = exit_code
        self.extra = dict(extra or {})

    @property
    def code(self) -> int:
        """The JSON-RPC error code."""
        return STANDARD.get(self.error, 1000 + self.exit_code)

    def to_json(self) -> dict[str, Any]:
        """The JSON-RPC error object."""
        data = {"error": self.error, "exit": self.exit_code, **self.extra}
        return {"code": self.code, "message": self.message, "data": data}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ApiError:
        """The error of a JSON-RPC error object (what a remote front end raises)."""
        data = dict(obj.get("data") or {})
        error = str(data.pop("error", "error"))
        exit_code = int(data.pop("exit", 1))
        return cls(error, str(obj.get("message", "")), exit_code=exit_code, extra=data)


def error_code(exc: ChatcliError) -> str:
    """The stable code of a chatcli error (the most specific class wins)."""
    # Imported here: these modules are small, but the CLI's start-up path
    # should not pay for them unless an error happens.
    from chatcli import errors
    from chatcli.client.errors import InviteRefusedError, RelayRequestError

    table: list[tuple[type[ChatcliError], str]] = [
        (errors.UnknownContactError, "unknown_contact"),
        (InviteRefusedError, "invite_refused"),
        (RelayRequestError, "relay_refused"),
        (errors.RelayError, "relay_unreachable"),
        (errors.KeyChangedError, "key_changed"),
        (errors.TooLargeError, "too_large"),
        (errors.ReplacedError, "installation_replaced"),
        (errors.UsageError, "usage_error"),
        (errors.CryptoError, "crypto_error"),
        (errors.StorageError, "storage_error"),
    ]
    for cls, code in table:
        if isinstance(exc, cls):
            return code
    return "error"


def from_chatcli_error(exc: ChatcliError) -> ApiError:
    """The API error for a chatcli error: same message, same exit code."""
    extra: dict[str, Any] = {}
    code = getattr(exc, "code", None)
    if isinstance(code, str):
        extra["relay_code"] = code
    return ApiError(error_code(exc), str(exc), exit_code=exc.exit_code, extra=extra)


class ApiChatcliError(ChatcliError):
    """An API error raised again in a front end: the CLI prints its message and
    exits with its exit code, exactly as for the original error."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.message)
        self.api_error = error
        self.exit_code = error.exit_code
