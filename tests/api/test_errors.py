"""API errors: unknown methods, bad parameters and chatcli errors keep a stable
code, the CLI's message and its exit code."""

from __future__ import annotations

import pytest

from chatcli.api.errors import ApiError, from_chatcli_error
from chatcli.api.local import LocalApi
from chatcli.client.service import ChatClient
from chatcli.errors import KeyChangedError, RelayError, TooLargeError, UsageError


async def test_unknown_method(clients: tuple[ChatClient, ChatClient]) -> None:
    api = LocalApi(clients[0], resident=False)
    with pytest.raises(ApiError) as raised:
        await api.call("contacts.frobnicate", {})
    assert raised.value.to_json() == {
        "code": -32601, "message": "There is no method 'contacts.frobnicate'.",
        "data": {"error": "method_not_found", "exit": 2}}


@pytest.mark.parametrize("params", [
    {"to": "bob"},                                    # text may be empty, but see below
    {"text": "no recipient"},
    {"to": "bob", "text": "hi", "colour": "red"},     # unknown parameter
    {"to": "bob", "text": 5},
    {"to": "", "text": "hi"},
    {"to": "bob", "text": "hi", "retry_for": -1},
])
async def test_bad_params(clients: tuple[ChatClient, ChatClient], params: dict[str, object]
                          ) -> None:
    api = LocalApi(clients[0], resident=False)
    with pytest.raises(ApiError) as raised:
        await api.call("send", params)
    if params == {"to": "bob"}:  # valid shape, empty message: a usage error
        assert raised.value.error == "usage_error"
        assert raised.value.message == "The message is empty."
    else:
        assert raised.value.error == "invalid_params"
        assert raised.value.code == -32602 and raised.value.exit_code == 2


async def test_unknown_contact(clients: tuple[ChatClient, ChatClient]) -> None:
    api = LocalApi(clients[0], resident=False)
    with pytest.raises(ApiError) as raised:
        api.call_local("history", {"contact": "nobody"})
    error = raised.value.to_json()
    assert error == {"code": 1002,
                     "message": "No contact is called 'nobody'; see `chatcli contacts`.",
                     "data": {"error": "unknown_contact", "exit": 2}}
    with pytest.raises(ApiError) as raised:
        await api.call("send", {"to": "nobody", "text": "hi"})
    assert raised.value.error == "unknown_contact"


def test_mapping_keeps_message_and_exit_code() -> None:
    from chatcli.client.errors import InviteRefusedError, RelayRequestError

    cases = [(UsageError("bad"), "usage_error", 2), (RelayError("down"), "relay_unreachable", 3),
             (InviteRefusedError("used"), "invite_refused", 3),
             (KeyChangedError("changed"), "key_changed", 4),
             (TooLargeError("big"), "too_large", 5)]
    for exc, code, exit_code in cases:
        error = from_chatcli_error(exc)
        assert (error.error, error.exit_code, error.code, error.message) == (
            code, exit_code, 1000 + exit_code, str(exc))
    refused = from_chatcli_error(RelayRequestError("no room", "quota_exceeded")).to_json()
    assert refused["data"] == {"error": "relay_refused", "exit": 3,
                               "relay_code": "quota_exceeded"}
    again = ApiError.from_json(refused)
    assert (again.error, again.exit_code, again.extra) == (
        "relay_refused", 3, {"relay_code": "quota_exceeded"})
