"""An attachment larger than the relay's announced blob limit is refused before
anything is uploaded, with its own error (exit code 5), not as "relay unreachable"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chatcli.client.attachments import upload_attachment
from chatcli.client.home import Home
from chatcli.client.service import create_account
from chatcli.errors import TooLargeError
from tests.client.conftest import PASS
from tests.relay.helpers import make_config, running_relay

LIMIT = 64 * 1024


async def test_too_large_attachment_is_refused_before_uploading(tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path, max_blob_size=LIMIT)) as harness:
        client, _ = await create_account(Home(tmp_path / "alice"), PASS, name="alice",
                                          relay_url=harness.relay.address)
        big = tmp_path / "big.bin"
        big.write_bytes(b"x" * (LIMIT + 1))
        try:
            async with client.online():
                conn = await client.own_relay()
                assert conn.proto.max_blob == LIMIT
                sent: list[object] = []
                request = conn.request

                async def spy(make: Any, **kwargs: Any) -> Any:
                    sent.append(make)
                    return await request(make, **kwargs)

                conn.request = spy  # type: ignore[method-assign]
                with pytest.raises(TooLargeError, match="at most 64 KiB") as info:
                    await upload_attachment(client, big)
                assert info.value.exit_code == 5
                assert "big.bin" in str(info.value) and "\n" not in str(info.value)
                assert sent == []  # nothing was uploaded
                small = tmp_path / "small.bin"
                small.write_bytes(b"y" * 1000)
                ref = await upload_attachment(client, small)
                assert ref.size == 1000
        finally:
            client.close()


async def test_an_encrypted_file_just_over_the_limit_is_refused(tmp_path: Path) -> None:
    """The plaintext fits but the encrypted blob (a little larger) does not."""
    async with running_relay(make_config(tmp_path, max_blob_size=LIMIT)) as harness:
        client, _ = await create_account(Home(tmp_path / "alice"), PASS, name="alice",
                                          relay_url=harness.relay.address)
        edge = tmp_path / "edge.bin"
        edge.write_bytes(b"z" * LIMIT)
        try:
            async with client.online():
                with pytest.raises(TooLargeError):
                    await upload_attachment(client, edge)
        finally:
            client.close()
