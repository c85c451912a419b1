"""A backup restored on another machine replaces this installation: the relay
is told at the new one's first login, and the old one then fails with
ReplacedError (exit code 6) instead of sending into dead sessions."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatcli.client.home import Home
from chatcli.client.service import ChatClient, create_account
from chatcli.errors import ReplacedError
from tests.client.conftest import PASS, drain
from tests.relay.helpers import make_config, running_relay


async def test_the_replaced_installation_stops_with_exit_6(tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path)) as harness:
        url = harness.relay.address
        old, _ = await create_account(Home(tmp_path / "old"), PASS, name="alice", relay_url=url)
        bob, _ = await create_account(Home(tmp_path / "bob"), PASS, name="bob", relay_url=url)
        new: ChatClient | None = None
        try:
            async with old.online():
                link = await old.create_invite("bob")
            async with bob.online():
                await bob.accept_invite(link, "alice")
            await drain(old)
            new = ChatClient.import_backup(Home(tmp_path / "new"), old.export_backup(), PASS)
            async with old.online():  # both still work until the new one logs in
                await old.own_relay()
            await new.take_over_mailbox()
            old.enqueue_text("bob", "from the old machine")
            async with old.online():
                with pytest.raises(ReplacedError, match="replaced") as info:
                    await old.deliver_outbox()
                assert info.value.exit_code == 6
            async with old.online():
                with pytest.raises(ReplacedError):
                    await old.own_relay()
            async with new.online():  # the new one goes on, without superseding again
                await new.own_relay()
            assert new._installation()[1] is False
        finally:
            old.close()
            bob.close()
            if new is not None:
                new.close()
