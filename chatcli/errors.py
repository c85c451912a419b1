"""The one error hierarchy of chatcli.

Every error raised on purpose derives from :class:`ChatcliError`. Its ``str()``
is a sentence written for the person at the terminal, and ``exit_code`` is the
documented process exit code the CLI uses for it (see ``docs/cli.md``).
Subpackages define their specific errors beneath these bases.
"""

from __future__ import annotations


class ChatcliError(Exception):
    """Base of all chatcli errors; the message is meant for users."""

    exit_code: int = 1


class UsageError(ChatcliError):
    """The command was called wrongly (bad argument, unknown contact...)."""

    exit_code = 2


class UnknownContactError(UsageError):
    """No contact has the name given."""


class RelayError(ChatcliError):
    """A relay could not be reached, or refused the request."""

    exit_code = 3


class KeyChangedError(ChatcliError):
    """A contact's identity key changed and the user has not accepted it."""

    exit_code = 4


class TooLargeError(ChatcliError):
    """Something is larger than the relay that would store it accepts."""

    exit_code = 5


class ReplacedError(ChatcliError):
    """This installation was replaced by a backup restored on another machine."""

    exit_code = 6


class CryptoError(ChatcliError):
    """Base of the errors of :mod:`chatcli.crypto`."""


class ProtocolError(ChatcliError):
    """Base of the errors of :mod:`chatcli.protocol`."""


class StorageError(ChatcliError):
    """A local or relay database could not be read or written."""
