"""The relay terminating TLS itself (wss://)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
import trio
from trio_websocket import connect_websocket

from chatcli.protocol import frames
from chatcli.protocol.address import parse_relay_url
from chatcli.protocol.connection import ClientProtocol
from tests.relay.helpers import Client, make_config, running_relay


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_wss(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    config = make_config(tmp_path, tls_cert=str(cert), tls_key=str(key))
    async with running_relay(config) as h:
        address = parse_relay_url(h.relay.address)
        assert address.scheme == "wss" and address.fingerprint == h.relay.fingerprint
        context = ssl.create_default_context(cafile=str(cert))
        async with trio.open_nursery() as nursery:
            ws = await connect_websocket(nursery, "127.0.0.1", address.port, "/",
                                         use_ssl=context)
            client = Client(ws, ClientProtocol(fingerprint=address.fingerprint))
            await ws.send_message(client.proto.start())
            client.proto.receive_data(await client.raw_recv())
            assert isinstance(await client.request(frames.Ping(req=client.req())), frames.Pong)
            await client.close()
            nursery.cancel_scope.cancel()
