"""The relay remembers each mailbox's current client installation; after a
restore elsewhere supersedes it, the old installation's Auth is refused with
``installation_replaced``."""

from __future__ import annotations

import os

import pytest

from chatcli.crypto.keys import MailboxKeyPair
from chatcli.protocol import codes, transcripts
from chatcli.relay.errors import Refused
from chatcli.relay.mailbox import Mailboxes
from chatcli.relay.store.base import Store
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
