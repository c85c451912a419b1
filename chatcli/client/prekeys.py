"""The signed prekey ("restore prekey") of this identity, rotated on a schedule.

X3DH (Signal specification, section 2.2 and 4.6) wants a signed prekey that is
replaced periodically, the private key of the replaced one kept for a while
for messages still in flight, then deleted: after that, a later compromise of
the identity key cannot open the handshakes that used it, and so cannot
recover the sessions they started (forward secrecy).

* The current signed prekey is the one in ``Account`` (``restore_prekey_*``
  columns), as before; it is what member records, contact information and
  handshakes name.
* :class:`OwnPrekey` keeps one row per signed prekey of this identity: its
  public key, its private key (sealed, the current one and retired ones still
  in their grace period), when it was made and when it was retired.
* :func:`rotate` (``now`` in milliseconds, passed in) makes a new signed prekey
  once the current one is :data:`ROTATE_AFTER_MS` old, and deletes the private
  keys retired more than :data:`GRACE_MS` ago. A database made before rotation
  existed gains the table on first use; its prekey's schedule starts then.
* :func:`private_for` finds the private key of a prekey a handshake named.

The grace period is longer than the relay's default retention (21 days), so a
handshake made just before a rotation can still be opened when it is fetched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary, WeakSet

import peewee

from chatcli.client import models as db
from chatcli.client import sessions
from chatcli.client.models import BaseModel
from chatcli.client.store import Store, bind_models
from chatcli.crypto.keys import DHKeyPair

if TYPE_CHECKING:
    from chatcli.client.core import ClientCore

DAY_MS = 86_400_000
ROTATE_AFTER_MS = 7 * DAY_MS   # a new signed prekey every week
GRACE_MS = 28 * DAY_MS         # a retired one's private key is kept 4 weeks, then deleted


class OwnPrekey(BaseModel):
    """A signed prekey of this identity: current (``retired_at`` NULL) or retired."""

    id = peewee.AutoField()
    public = peewee.BlobField(unique=True)
    private_sealed = peewee.BlobField()
    created_at = peewee.IntegerField()
    retired_at = peewee.IntegerField(null=True)


_ready: WeakSet[Store] = WeakSet()
_not_due_before: WeakKeyDictionary[Store, int] = WeakKeyDictionary()


@contextlib.contextmanager
def bound(store: Store) -> Iterator[None]:
    """Bind (and create once) the prekey table; use inside a store transaction."""
    with bind_models(store.db, [OwnPrekey]):
        if store not in _ready:
            store.db.create_tables([OwnPrekey], safe=True)
            _ready.add(store)
        yield


def _current_row(store: Store, now: int) -> OwnPrekey:
    """The current prekey's row, made on first use for the account's prekey."""
    account = store.account()
    row = OwnPrekey.get_or_none(OwnPrekey.public == account.restore_prekey_public)
    if row is None:
        private = store.sealer.open(account.restore_prekey_sealed, "account.restore_prekey",
                                    account.id)
        row = OwnPrekey.create(public=account.restore_prekey_public,
                               private_sealed=_seal_own(store, account.restore_prekey_public,
                                                        private),
                               created_at=now)
    return row


def _seal_own(store: Store, public: bytes, private: bytes) -> bytes:
    """A prekey row's private key, sealed once and bound to its public key."""
    return store.sealer.seal(private, "own_prekey.private", public.hex())


def rotate(client: ClientCore, *, now: int) -> bool:
    """Apply the schedule (inside a write transaction); True when a new signed
    prekey was made. Contacts are told the new one in their sessions."""
    store = client.store
    _not_due_before.pop(store, None)
    with bound(store):
        current = _current_row(store, now)
        rotated = False
        if now - current.created_at >= ROTATE_AFTER_MS:
            fresh = DHKeyPair.generate()
            account = store.account()
            sealed = client.sealer.seal(fresh.private_bytes(), "account.restore_prekey",
                                        account.id)
            current.retired_at = now
            current.save()
            OwnPrekey.create(public=fresh.public,
                             private_sealed=_seal_own(store, fresh.public, fresh.private_bytes()),
                             created_at=now)
            db.Account.update(
                restore_prekey_sealed=sealed, restore_prekey_public=fresh.public,
                restore_prekey_signature=sessions.sign_restore_prekey(client.identity,
                                                                      fresh.public),
            ).execute()
            rotated = True
        # Forward secrecy: the private keys of prekeys retired long enough ago go.
        OwnPrekey.delete().where(OwnPrekey.retired_at.is_null(False),
                                 OwnPrekey.retired_at <= now - GRACE_MS).execute()
    if rotated:
        _announce(client)
    return rotated


def due(store: Store, *, now: int) -> bool:
    """Whether :func:`rotate` has anything to do (a read, so that the common
    case costs no write transaction).

    The answer "not before T" is kept for the open store, so that a delivery
    pass (every send) does not read the schedule again: T only moves later
    when another process rotates (it can rotate only once T has come), and
    :func:`rotate` in this one forgets it."""
    if now < _not_due_before.get(store, now):
        return False
    with store.read(), bound(store):
        account = store.account()
        current = OwnPrekey.get_or_none(OwnPrekey.public == account.restore_prekey_public)
        if current is None:
            return True
        oldest = OwnPrekey.select(peewee.fn.MIN(OwnPrekey.retired_at)).where(
            OwnPrekey.retired_at.is_null(False)).scalar()
    when = current.created_at + ROTATE_AFTER_MS
    if oldest is not None:
        when = min(when, oldest + GRACE_MS)
    if now >= when:
        return True
    _not_due_before[store] = when
    return False


def apply_schedule(client: ClientCore, *, now: int) -> bool:
    """:func:`rotate` in its own write transaction, when it is due."""
    if not due(client.store, now=now):
        return False
    with client.store.write():
        return rotate(client, now=now)


def _announce(client: ClientCore) -> None:
    """Queue the new signed prekey (in a ContactInfo) to every contact with a session."""
    for contact in db.Contact.select().where(db.Contact.issued_cap_sealed.is_null(False),
                                             db.Contact.blocked == False):  # noqa: E712
        issued = contact.issued_cap_sealed
        assert issued is not None
        capability = client.sealer.open(issued, "contact.issued_cap", contact.id)
        client._enqueue(contact, client._own_info(capability), kind="info")


def private_for(store: Store, public: bytes) -> DHKeyPair | None:
    """The private key of own signed prekey ``public`` (current, or retired and
    still in its grace period), or None when it is unknown or deleted."""
    account = store.account()
    if public == account.restore_prekey_public:
        return DHKeyPair.from_private_bytes(
            store.sealer.open(account.restore_prekey_sealed, "account.restore_prekey",
                              account.id))
    with bound(store):
        row = OwnPrekey.get_or_none(OwnPrekey.public == public)
        if row is None:
            return None
        return DHKeyPair.from_private_bytes(
            store.sealer.open(row.private_sealed, "own_prekey.private", public.hex()))


__all__ = [
    "GRACE_MS", "ROTATE_AFTER_MS", "OwnPrekey", "apply_schedule", "due", "private_for", "rotate",
]
