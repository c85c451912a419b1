"""The sans-I/O JSON-RPC 2.0 codec: every case of the specification, no sockets."""

from __future__ import annotations

import json

import pytest

from chatcli.daemon import jsonrpc
from chatcli.daemon.jsonrpc import Invalid, LineSplitter, Notification, Oversized, Request


def one(line: bytes) -> jsonrpc.Message:
    parsed = jsonrpc.parse_line(line)
    assert not parsed.batch and len(parsed.messages) == 1
    return parsed.messages[0]


def test_request_and_notification() -> None:
    assert one(b'{"jsonrpc":"2.0","id":7,"method":"send","params":{"to":"bob"}}') == Request(
        7, "send", {"to": "bob"}
    )
    assert one(b'{"jsonrpc":"2.0","id":"a","method":"status"}') == Request("a", "status", {})
    assert one(b'{"jsonrpc":"2.0","method":"typing","params":[1]}') == Notification("typing", [1])


@pytest.mark.parametrize(
    ("line", "code", "reply_id"),
    [
        (b"{nope", jsonrpc.PARSE_ERROR, None),
        (b"\xff\xfe", jsonrpc.PARSE_ERROR, None),
        (b"[]", jsonrpc.INVALID_REQUEST, None),
        (b"42", jsonrpc.INVALID_REQUEST, None),
        (b'{"id":1,"method":"status"}', jsonrpc.INVALID_REQUEST, 1),
        (b'{"jsonrpc":"1.0","id":1,"method":"status"}', jsonrpc.INVALID_REQUEST, 1),
        (b'{"jsonrpc":"2.0","id":2,"method":5}', jsonrpc.INVALID_REQUEST, 2),
        (b'{"jsonrpc":"2.0","id":3,"method":"x","params":"s"}', jsonrpc.INVALID_REQUEST, 3),
        (b'{"jsonrpc":"2.0","id":true,"method":"x"}', jsonrpc.INVALID_REQUEST, None),
        (b'{"jsonrpc":"2.0","id":1.5,"method":"x"}', jsonrpc.INVALID_REQUEST, None),
        (b'{"jsonrpc":"2.0","id":null,"method":"x"}', jsonrpc.INVALID_REQUEST, None),
    ],
)
def test_invalid_lines_get_the_specified_error(line: bytes, code: int, reply_id: object) -> None:
    message = one(line)
    assert isinstance(message, Invalid)
    assert (message.error.code, message.id) == (code, reply_id)
    answer = json.loads(jsonrpc.encode(jsonrpc.error_object(message.id, message.error)))
    assert answer["error"]["data"]["error"] == jsonrpc.standard_error(code, "").kind


def test_batch_keeps_order_and_answers_each_bad_item() -> None:
    parsed = jsonrpc.parse_line(
        b'[{"jsonrpc":"2.0","id":1,"method":"a"},1,{"jsonrpc":"2.0","method":"b"}]'
    )
    assert parsed.batch
    first, second, third = parsed.messages
    assert first == Request(1, "a", {})
    assert isinstance(second, Invalid) and second.error.code == jsonrpc.INVALID_REQUEST
    assert third == Notification("b", {})


def test_oversized_line_is_an_application_error() -> None:
    message = one(b" " * (jsonrpc.MAX_LINE + 1))
    assert isinstance(message, Invalid)
    body = message.error.to_json()
    assert body["code"] == 1002 and body["data"] == {"error": "request_too_large", "exit": 2}


def test_encode_is_one_ascii_line() -> None:
    line = jsonrpc.encode(jsonrpc.result_object(1, {"text": "a\u2028b é"}))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line)["result"]["text"] == "a\u2028b é"


def test_splitter_bounds_memory_and_skips_oversized_line() -> None:
    splitter = LineSplitter(max_line=4)
    assert splitter.feed(b"ab") == []
    assert splitter.feed(b"c\nd") == [b"abc"]
    out = splitter.feed(b"efgh")
    assert len(out) == 1 and isinstance(out[0], Oversized)
    assert splitter.pending == 0
    assert splitter.feed(b"zzzz\nok\n") == [b"ok"]
    assert splitter.feed(b"\n") == [b""]


def test_client_parses_results_errors_and_events() -> None:
    error = jsonrpc.application_error("unknown_contact", "No contact named bob.", 2)
    answer = jsonrpc.parse_incoming(jsonrpc.encode(jsonrpc.error_object(4, error)))
    assert answer == jsonrpc.Response(4, error=error)
    result = jsonrpc.parse_incoming(jsonrpc.encode(jsonrpc.result_object("x", [1])))
    assert result == jsonrpc.Response("x", result=[1])
    event = jsonrpc.notification_object("event", {"subscription": 1, "event": {"type": "typing"}})
    assert jsonrpc.parse_incoming(jsonrpc.encode(event)) == Notification("event", event["params"])
    request = jsonrpc.request_object(9, "status", {})
    assert one(jsonrpc.encode(request).rstrip(b"\n")) == Request(9, "status", {})
    for bad in (b"[]", b'{"jsonrpc":"2.0","id":1}', b'{"jsonrpc":"2.0","id":1,"error":"x"}'):
        with pytest.raises(ValueError):
            jsonrpc.parse_incoming(bad)
