"""The relay remembers each mailbox's current client installation; after a
restore elsewhere supersedes it, the old installation's Auth is refused with
``installation_replaced``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chatcli.crypto.keys import MailboxKeyPair
from chatcli.protocol import codes, frames, transcripts
from chatcli.relay.errors import Refused
from chatcli.relay.mailbox import Mailboxes
from chatcli.relay.store.base import Store
from tests.relay.helpers import make_config, running_relay
from tests.relay.test_mailbox import service

RELAY_KEY = os.urandom(32)
CHALLENGE = os.urandom(32)


def _login(mailboxes: Mailboxes, mailbox: bytes, key: MailboxKeyPair,
           installation: bytes | None, supersede: bool = False) -> None:
    transcript = transcripts.auth(RELAY_KEY, CHALLENGE, mailbox, installation, supersede)
    mailboxes.authenticate(mailbox, key.sign(transcript), transcript, installation, supersede)


def test_a_superseded_installation_is_refused(store: Store) -> None:
    mailboxes = service(store)
    key = MailboxKeyPair.generate()
    transcript = transcripts.register(RELAY_KEY, CHALLENGE, key.auth_public)
    mailbox = mailboxes.register(key.auth_public, key.sign(transcript), transcript, None, 0)
    old, new = os.urandom(16), os.urandom(16)
    _login(mailboxes, mailbox, key, None)          # a client that predates installations
    _login(mailboxes, mailbox, key, old)           # the first to name itself owns it
    _login(mailboxes, mailbox, key, old)
    with pytest.raises(Refused) as refused:
        _login(mailboxes, mailbox, key, new)       # another one must supersede
    assert refused.value.code == codes.INSTALLATION_REPLACED
    _login(mailboxes, mailbox, key, new, supersede=True)
    _login(mailboxes, mailbox, key, new)
    for stale in (old, None):
        with pytest.raises(Refused) as refused:
            _login(mailboxes, mailbox, key, stale)
        assert refused.value.code == codes.INSTALLATION_REPLACED
    assert store.mailbox_installation(mailbox) == new


def test_the_installation_fields_are_signed(store: Store) -> None:
    mailboxes = service(store)
    key = MailboxKeyPair.generate()
    transcript = transcripts.register(RELAY_KEY, CHALLENGE, key.auth_public)
    mailbox = mailboxes.register(key.auth_public, key.sign(transcript), transcript, None, 0)
    _login(mailboxes, mailbox, key, os.urandom(16))
    signed = transcripts.auth(RELAY_KEY, CHALLENGE, mailbox, os.urandom(16), False)
    forged = transcripts.auth(RELAY_KEY, CHALLENGE, mailbox, os.urandom(16), True)
    with pytest.raises(Refused) as refused:
        mailboxes.authenticate(mailbox, key.sign(signed), forged, os.urandom(16), True)
    assert refused.value.code == codes.AUTH_FAILED


async def test_superseding_closes_the_old_installations_connections(tmp_path: Path) -> None:
    """A running `chat` of the replaced installation must stop fetching (and
    acknowledging) the messages that are now the new installation's."""
    async with running_relay(make_config(tmp_path)) as h:
        registering = await h.connect()
        mailbox = await registering.register()
        key = registering.key
        assert key is not None
        old_id, new_id = os.urandom(16), os.urandom(16)
        old = await h.connect()
        assert isinstance(await old.auth(mailbox, key, installation=old_id), frames.Ok)
        new = await h.connect()
        answer = await new.auth(mailbox, key, installation=new_id, supersede=True)
        assert isinstance(answer, frames.Ok)
        error = await old.next_push(frames.Error)
        assert isinstance(error, frames.Error) and error.code == codes.INSTALLATION_REPLACED
        again = await h.connect()
        refused = await again.auth(mailbox, key, installation=old_id)
        assert isinstance(refused, frames.Error)
        assert refused.code == codes.INSTALLATION_REPLACED
        assert isinstance(await (await h.connect()).auth(mailbox, key, installation=new_id),
                          frames.Ok)
