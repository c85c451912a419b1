from __future__ import annotations

from pathlib import Path

import trio

from tests.relay.helpers import make_config, running_relay


async def http_get(port: int, path: str) -> tuple[str, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), body


async def test_healthz_and_metrics(tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path, metrics_port=0)) as h:
        port = h.relay.metrics_port
        assert port is not None
        status, body = await http_get(port, "/healthz")
        assert status == "HTTP/1.1 200 OK" and body == b"ok\n"
        owner, mailbox, cap = await h.owner()
        sender = await h.connect()
        await sender.deposit(mailbox, cap, b"x", b"y")
        await owner.delivered(2)
        status, body = await http_get(port, "/metrics")
        assert status == "HTTP/1.1 200 OK"
        text = body.decode()
        assert "chatcli_relay_deposits_total 2.0" in text
        assert "chatcli_relay_connections 2.0" in text
        assert 'chatcli_relay_frames_received_total{type="Deposit"} 1.0' in text
        assert mailbox.hex() not in text and cap.hex() not in text
        assert (await http_get(port, "/nope"))[0] == "HTTP/1.1 404 Not Found"
        h.relay.stopping = True
        assert (await http_get(port, "/healthz"))[0] == "HTTP/1.1 503 Service Unavailable"
        h.relay.stopping = False
