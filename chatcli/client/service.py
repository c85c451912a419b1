"""The client service: everything a command or the interactive chat does.

:class:`ChatClient` holds an unlocked identity (keys + local store). Local
operations are plain methods; network operations are ``async`` and need the
client to be *online*::

    client = ChatClient.unlock(home, passphrase)
    async with client.online():
        uuid = await client.send_text("bob", "hello")      # stored by bob's relay
        async for event in client.events(wait=None):        # own relay, until Synced
            ...

``online()`` opens a nursery and a pool of relay connections that live until
the block ends; call it from one task.

This module is the I/O shell: it owns the relay connections and the waiting
(trio). What to send, what an answer means and what an incoming message does
to the store are decided by the synchronous core it is made of, one module
per concern (see ``docs/architecture.md``): :mod:`~chatcli.client.core`,
:mod:`~chatcli.client.contacts`, :mod:`~chatcli.client.invites`,
:mod:`~chatcli.client.outbox`, :mod:`~chatcli.client.inbox`,
:mod:`~chatcli.client.presence`, :mod:`~chatcli.client.backup`; groups in
:mod:`chatcli.client.groups`.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from chatcli.client import messages as m
from chatcli.client import models as db
from chatcli.client import prepared
from chatcli.client.backup import Backup, BackupContact, BackupV1
from chatcli.client.capabilities import cap_hash, invite_contact_capability
from chatcli.client.errors import InviteRefusedError, RelayRequestError
from chatcli.client.events import (
    DeliveryReport,
    Event,
    MessageEvent,
    NoticeEvent,
    PresenceEvent,
    ReceiptEvent,
    SyncedEvent,
    TypingEvent,
)
from chatcli.client.home import Home
from chatcli.client.inbox import Inbox
from chatcli.client.invites import DEFAULT_INVITE_SECONDS
from chatcli.client.names import NAME_RE, validate_name
from chatcli.client.outbox import DEPOSIT_CHUNK
from chatcli.client.presence import Presence, PresenceInfo
from chatcli.client.store import Store
from chatcli.crypto.keys import IdentityKeyPair, MailboxKeyPair
from chatcli.errors import RelayError, ReplacedError, UsageError
from chatcli.protocol import codes, frames

if TYPE_CHECKING:
    import trio

    from chatcli.client.relay_client import AnonymousConnection, OwnerConnection, RelayPool

__all__ = [
    "DEFAULT_INVITE_SECONDS", "NAME_RE", "BackupContact", "BackupV1", "ChatClient",
    "DeliveryReport", "Event", "MessageEvent", "NoticeEvent", "PresenceEvent", "PresenceInfo",
    "ReceiptEvent", "SyncedEvent", "TypingEvent", "cap_hash", "create_account",
    "invite_contact_capability", "validate_name",
]

REPLACED_MESSAGE = (
    "This installation was replaced: the identity was restored from a backup on another "
    "machine (`chatcli keys import`), which now receives its messages, and contacts no "
    "longer read what this one sends. Use the other machine (this one's history stays "
    "readable with `chatcli messages`); to come back here, run `chatcli keys export` there "
    "and `chatcli keys import` here.")


class ChatClient(Backup, Inbox, Presence):
    """An unlocked identity: keys, local store, and (inside :meth:`online`)
    relay connections."""

    def __init__(self, home: Home, identity: IdentityKeyPair, mailbox: MailboxKeyPair,
                 store: Store) -> None:
        super().__init__(home, identity, mailbox, store)
        self._pool: RelayPool | None = None
        self._nursery: trio.Nursery | None = None
        self._own: OwnerConnection | None = None
        self._authenticated = False
        self._installation_checked = False
        self._delivery_lock: trio.Lock | None = None
        self._delivery_owner: object = None

    # ------------------------------------------------------------ connections

    @contextlib.asynccontextmanager
    async def delivering(self) -> AsyncIterator[None]:
        import trio

        task = trio.lowlevel.current_task()
        if self._delivery_owner is task:  # a pass inside a pass (flush -> deliver)
            yield
            return
        if self._delivery_lock is None:
            self._delivery_lock = trio.Lock()
        async with self._delivery_lock:
            self._delivery_owner = task
            try:
                yield
            finally:
                self._delivery_owner = None

    @contextlib.asynccontextmanager
    async def online(self, *, resume: bool = False) -> AsyncIterator[ChatClient]:
        """Relay connections and background tasks for the length of the block.

        With ``resume``, a block that ends normally also delivers what is left
        in the outbox (best effort, at most 3 s): how every command that
        connects resumes the sends an earlier one could not finish."""
        import trio

        from chatcli.client.relay_client import RelayPool, unwrap

        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._pool = RelayPool(nursery)
                try:
                    yield self
                    if resume:
                        await self.flush_outbox(time_limit=3.0)
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise unwrap(group) from None
        finally:
            self._pool = None
            self._nursery = None
            self._own = None
            self._authenticated = False
            self._installation_checked = False

    def _require_pool(self) -> RelayPool:
        if self._pool is None:
            raise RuntimeError("use `async with client.online()` for network operations")
        return self._pool

    async def own_relay(self, *, authenticate: bool = True) -> OwnerConnection:
        """The connection to this identity's relay, authenticated as the mailbox
        owner. It refuses deposits and presence queries: use :meth:`anonymous`."""
        self.require_listed()
        account = self.account()
        conn = await self._require_pool().owner(account.relay_url)
        if authenticate and (conn is not self._own or not self._authenticated):
            self._own = conn
            installation, supersede = self._installation()
            try:
                await conn.authenticate(account.mailbox, self.mailbox_key.sign,
                                        installation=installation, supersede=supersede)
            except RelayRequestError as exc:
                if exc.code == codes.AUTH_FAILED:
                    raise RelayError("The relay does not know this account's mailbox "
                                     "(it was deleted, or the relay lost its data).") from None
                if exc.code == codes.INSTALLATION_REPLACED:
                    raise ReplacedError(REPLACED_MESSAGE) from None
                raise
            if supersede:
                self._took_over()
            self._authenticated = True
        return conn

    async def take_over_mailbox(self) -> None:
        """Log in to the own relay once, so that an installation restored from a
        backup replaces the old one at once (see :meth:`import_backup`)."""
        async with self.online():
            await self.own_relay()

    async def _check_installation(self) -> None:
        """Before sending: fail if this installation was replaced, so that it
        does not go on sending into sessions its contacts no longer have. An
        unreachable own relay does not stop sending to other relays."""
        if self._authenticated or self._installation_checked:
            return
        self._installation_checked = True
        try:
            await self.own_relay()
        except ReplacedError:
            raise
        except RelayError:
            pass

    async def anonymous(self, url: str) -> AnonymousConnection:
        """The connection to the relay at ``url`` that never logs in: for
        deposits, presence of contacts and others' blobs (sealed sender)."""
        return await self._require_pool().anonymous(url)

    # ------------------------------------------------------------ account

    async def set_presence_hidden(self, hidden: bool) -> None:
        conn = await self.own_relay()
        await conn.request(lambda req: frames.PresenceSettings(req=req, hidden=hidden))
        with self.store.write():
            db.Account.update(presence_hidden=hidden).execute()

    async def delete_account(self) -> None:
        """Delete the mailbox on the relay, then every local file of this identity."""
        conn = await self.own_relay()
        # The relay answers Ok, then closes: a failure here leaves everything in place.
        await conn.request(lambda req: frames.AccountDelete(req=req))
        self.wipe_local()

    # ------------------------------------------------------------ contacts and invites

    async def reject_key_change(self, name: str) -> None:
        """Refuse ``name``'s pending new identity key: the old key stays, the new
        one's session is discarded, and the capabilities it was given (ours and
        its invite's) are revoked on the own relay."""
        contact = self.get_contact(name, allow_key_changed=True)
        pending = self._pending_to_reject(contact)
        if pending is not None and pending.issued_cap is not None:
            revoked = cap_hash(pending.issued_cap)
            conn = await self.own_relay()
            await conn.request(lambda req: frames.CapRevoke(req=req, cap_hashes=[revoked]))
        self._reject_pending(contact, pending)
        await self._retire_expired_invites()

    async def create_invite(self, label: str | None, expires_in: int = DEFAULT_INVITE_SECONDS
                            ) -> str:
        """Register a fresh capability, make a one-time prekey, return the link."""
        new = self._new_invite(label, expires_in, now=int(time.time()))
        conn = await self.own_relay()
        # The invite's capability is one-shot: the relay takes the first
        # handshake on it and refuses every later deposit (a second acceptor is
        # told at once). The acceptor's own is registered now too: it must work
        # when the acceptor switches to it after the first exchange.
        await conn.request(lambda req: frames.CapAdd(
            req=req, cap_hashes=[cap_hash(new.capability)], one_shot=True))
        await conn.request(lambda req: frames.CapAdd(
            req=req, cap_hashes=[cap_hash(new.contact_cap)]))
        await self._retire_expired_invites()
        return self._keep_invite(new)

    async def _retire_expired_invites(self) -> None:
        """Revoke the capabilities of invites that expired unused or whose
        acceptor switched to its own (see :meth:`Invites._invites_to_retire`)."""
        expired, hashes = self._invites_to_retire(now=int(time.time()))
        if not hashes:
            return
        conn = await self.own_relay()
        for start in range(0, len(hashes), frames.MAX_BATCH):
            chunk = hashes[start:start + frames.MAX_BATCH]
            await conn.request(lambda req, c=chunk: frames.CapRevoke(  # type: ignore[misc]
                req=req, cap_hashes=c))
        self._mark_retired(expired, [bytes(h) for h in hashes])

    async def accept_invite(self, link: str, name: str | None, *,
                            previous_identity: IdentityKeyPair | None = None) -> str:
        """Add the inviter as a contact and deposit the handshake; returns the
        contact's local name once its relay stored the handshake.

        With ``previous_identity`` (an identity key this person used before),
        the handshake carries that key's signed statement that the current key
        replaces it, so an inviter who knew the old key moves to the new one.

        A handshake the inviter's relay refuses (the invite was used or revoked)
        raises :class:`InviteRefusedError` and leaves no contact behind."""
        invite, final_name = self._check_acceptable(link, name, now=int(time.time()))
        capability = os.urandom(32)
        conn = await self.own_relay()
        await conn.request(lambda req: frames.CapAdd(req=req, cap_hashes=[cap_hash(capability)]))
        contact_id = self._add_inviter(invite, final_name, auto_named=name is None,
                                       capability=capability,
                                       previous_identity=previous_identity,
                                       now=int(time.time()))
        try:
            await self.deliver_until_stored(kinds={"handshake"}, contact_id=contact_id)
        except RelayError:
            if self._forget_refused_inviter(contact_id):
                with contextlib.suppress(RelayError):
                    await conn.request(lambda req: frames.CapRevoke(
                        req=req, cap_hashes=[cap_hash(capability)]))
            raise
        return final_name

    # ------------------------------------------------------------ sending

    async def send_text(self, name: str, text: str, *, time_limit: float = 20.0,
                        attachment: m.AttachmentRef | None = None,
                        reply_to: str | None = None) -> str:
        """Queue a message and return its uuid once the contact's relay stored it.
        Raises ``RelayError`` when it was refused or could not be stored in time
        (it then stays queued, unless refused)."""
        from chatcli.client.groups.service import GroupService, is_group

        if is_group(self, name):
            if reply_to is not None:
                raise UsageError("Replies in groups are not supported yet.")
            report = await GroupService(self).send_text(name, text, time_limit=time_limit,
                                                        attachment=attachment)
            return report.id
        message_id, contact_id = self._queue_text(name, text, attachment, reply_to=reply_to)
        await self.deliver_until_stored(message_id=message_id, contact_id=contact_id,
                                        time_limit=time_limit)
        return message_id

    async def send_action(self, name: str, ref: str, kind: str, value: str = "", *,
                          time_limit: float = 20.0) -> str:
        """React to, edit or delete for everyone a message (:meth:`enqueue_action`)
        and deliver it; answers the target's full id."""
        target = self.enqueue_action(name, ref, kind, value)
        contact = self.get_contact(name, allow_key_changed=True)
        await self.deliver_until_stored(kinds={"action"}, contact_id=contact.id,
                                        time_limit=time_limit)
        return target

    async def _delete_blobs(self) -> None:
        """Delete from the own relay the blobs of messages deleted for everyone;
        what cannot be reached now stays queued for the next pass."""
        if not self.blobs_to_delete_due:
            return
        with self.store.read():
            blobs = [bytes(row.blob) for row in prepared.BLOBS_TO_DELETE.rows()]
        if not blobs:
            self.blobs_to_delete_due = False
            return
        try:
            conn = await self.own_relay()
            for blob in blobs:
                with contextlib.suppress(RelayRequestError):  # expired or gone already
                    await conn.request(lambda req, b=blob: frames.BlobDelete(  # type: ignore[misc]
                        req=req, blob=b))
                with self.store.write():
                    db.BlobToDelete.delete().where(db.BlobToDelete.blob == blob).execute()
        except RelayError:
            return

    async def deliver_outbox(self, contact_id: int | None = None) -> DeliveryReport:
        """One pass: encrypt what is queued, deposit everything encrypted (or only
        what is for ``contact_id``), grouped by relay. Stored items leave the
        outbox; refused ones are marked failed."""
        async with self.delivering():
            with self.store.deferred_scrub():  # one WAL checkpoint for the pass
                return await self._deliver_outbox(contact_id)

    async def _deliver_outbox(self, contact_id: int | None) -> DeliveryReport:
        from chatcli.client.groups.service import flush_groups

        await self._check_installation()
        await flush_groups(self)
        await self._delete_blobs()
        report, by_relay = self._start_delivery(contact_id)
        for url, items in by_relay.items():
            try:
                conn = await self.anonymous(url)
                for start in range(0, len(items), DEPOSIT_CHUNK):
                    chunk = items[start:start + DEPOSIT_CHUNK]
                    deposit = self._deposit_items(chunk)
                    answer = await conn.request(
                        lambda req, d=deposit: frames.Deposit(req=req, items=d))  # type: ignore[misc]
                    assert isinstance(answer, frames.DepositResult)
                    self._record_deposit([row for row, _ in chunk], answer.errors, report)
            except RelayError as exc:
                if isinstance(exc, RelayRequestError) and not exc.transient:
                    raise
                self._require_pool().drop(url)
                report.unreachable[url] = str(exc)
                self._record_unreachable([row for row, _ in items], str(exc), report)
        return report

    async def deliver_until_stored(self, *, message_id: str | None = None,
                                   kinds: set[str] | None = None, contact_id: int | None = None,
                                   time_limit: float = 20.0) -> None:
        """Retry the outbox with backoff until the given message (or every item of
        ``kinds`` for ``contact_id``) is stored; raise ``RelayError`` otherwise."""
        import trio

        delay = 0.25
        last = "the relay did not store it in time"
        if message_id is not None and contact_id is None:
            contact_id = self._contact_of_message(message_id)
        with trio.move_on_after(time_limit):
            while True:
                # Only this contact's relay: another unreachable relay must not
                # slow this send down (`flush_outbox` and later commands do the rest).
                report = await self.deliver_outbox(contact_id)
                if message_id is not None:
                    if message_id in report.refused:
                        raise RelayError(report.refused[message_id] + ".")
                    if message_id in report.held:
                        raise RelayError(report.held[message_id] + ".")
                elif "handshake" in report.refused:
                    raise InviteRefusedError(report.refused["handshake"] + ".")
                if message_id is not None and message_id in report.stored:
                    return
                if not self._waiting(message_id=message_id, kinds=kinds,
                                     contact_id=contact_id):
                    return
                if report.unreachable:
                    last = next(iter(report.unreachable.values())).rstrip(".")
                await trio.sleep(delay)
                delay = min(delay * 2, 4.0)
        raise RelayError(f"{last}; the message stays queued and the next chatcli command "
                         "that connects will send it.")

    async def flush_outbox(self, time_limit: float = 5.0) -> DeliveryReport | None:
        """Best effort: deliver what is queued, without raising for unreachable relays."""
        import trio

        # Its several write transactions share one truncating WAL checkpoint.
        with trio.move_on_after(time_limit), self.store.deferred_scrub():
            from chatcli.client.groups.service import flush_groups

            async with self.delivering():
                await flush_groups(self)
                with self.store.read():
                    if not db.Outbox.select().exists():
                        return DeliveryReport()
                try:
                    return await self.deliver_outbox()
                except RelayError:
                    return None
        return None

    # ------------------------------------------------------------ receiving

    async def events(self, *, wait: float | None = None, stop_at_synced: bool = True
                     ) -> AsyncIterator[Event]:
        """Authenticate to the own relay and yield what arrives: messages,
        receipts, typing, notices, and one :class:`SyncedEvent` (presence comes
        from :meth:`presence_updates`, on another connection). Stops after
        Synced when ``stop_at_synced`` (then ``wait`` seconds more if given), or
        when the connection ends."""
        import trio

        conn = await self.own_relay()
        await self._retire_expired_invites()
        deadline: float | None = None
        while True:
            time_limit = math.inf if deadline is None else max(0.0, deadline - trio.current_time())
            frame = None
            with trio.move_on_after(time_limit):
                try:
                    frame = await conn.pushes.receive()
                except trio.EndOfChannel:
                    raise RelayError(f"The connection to the relay ended: {conn.close_reason}."
                                     ) from None
            if frame is None:
                await self.flush_outbox()
                return
            if isinstance(frame, frames.Deliver):
                await self._retire_expired_invites()
                events = self.process_deliveries(frame.messages)
                # Stored, with their relay ids, in one transaction: hand them
                # out before the Ack's round trip to the relay (a durable
                # commit there). Should the Ack be lost, the relay delivers
                # them again and process_deliveries skips them by relay id.
                for event in events:
                    yield event
                await conn.request(lambda req, f=frame: frames.Ack(  # type: ignore[misc]
                    req=req, ids=[d.id for d in f.messages]))
                # Invites whose acceptor switched to its own capability just now.
                await self._retire_expired_invites()
                await self.flush_outbox()
            elif isinstance(frame, frames.Synced):
                yield SyncedEvent()
                if stop_at_synced:
                    if wait is None or wait <= 0:
                        await self.flush_outbox()
                        return
                    deadline = trio.current_time() + wait
            elif isinstance(frame, frames.Bye | frames.Error):
                raise RelayError(f"The relay ended the connection: {conn.close_reason}.")

    async def listen(self, *, wait: float | None = None) -> AsyncIterator[Event]:
        """:meth:`events`, and with ``wait`` seconds: stay for that long after
        catching up, reconnecting with backoff (0.5 s doubling to 10 s) when the
        relay goes away. Without ``wait``, a lost connection raises ``RelayError``."""
        import trio

        deadline = None if wait is None else trio.current_time() + wait
        delay = 0.5
        synced = False
        while True:
            remaining = None if deadline is None else deadline - trio.current_time()
            try:
                async for event in self.events(wait=remaining):
                    if isinstance(event, SyncedEvent):
                        delay = 0.5
                        if synced:
                            continue  # a reconnection's catch-up: not news
                        synced = True
                    yield event
                return
            except RelayError as exc:
                if deadline is None or trio.current_time() + delay >= deadline:
                    raise
                yield NoticeEvent(f"{exc} Reconnecting in {delay:g} s.", warning=True)
                self._authenticated = False
                await trio.sleep(delay)
                delay = min(delay * 2, 10.0)

    # ------------------------------------------------------------ presence

    async def presence(self, names: list[str] | None = None, *, time_limit: float = 5.0
                       ) -> dict[str, PresenceInfo]:
        """Ask each contact's relay whether they are online (their capability
        proves we may ask), all relays at once. A relay that cannot be asked
        within ``time_limit`` seconds gives ``known=False``, not an error."""
        import trio

        by_relay, result = self._presence_queries(names)

        async def ask(url: str, group: list[db.Contact]) -> None:
            targets = self._presence_targets(group)
            try:
                conn = await self.anonymous(url)
                answer = await conn.request(
                    lambda req: frames.PresenceQuery(req=req, targets=targets),
                    time_limit=time_limit)
            except RelayError:
                return
            assert isinstance(answer, frames.PresenceResult)
            result.update(self._presence_answer(group, answer))

        with trio.move_on_after(time_limit):
            async with trio.open_nursery() as nursery:
                for url, group in by_relay.items():
                    nursery.start_soon(ask, url, group)
        return result

    async def subscribe_presence(self, names: list[str]) -> dict[str, PresenceInfo]:
        """Like :meth:`presence`, and later changes arrive as :class:`PresenceEvent`
        from :meth:`presence_updates`."""
        contacts = [c for c in self.contacts() if c.name in names]
        result: dict[str, PresenceInfo] = {}
        for contact in contacts:
            target, = self._presence_targets([contact])
            try:
                conn = await self.anonymous(contact.relay_url)
                answer = await conn.request(
                    lambda req, t=target: frames.PresenceSubscribe(req=req, targets=[t]),  # type: ignore[misc]
                    time_limit=5)
            except RelayError:
                result[contact.name] = PresenceInfo(None, None, False)
                continue
            assert isinstance(answer, frames.PresenceResult)
            entry = answer.entries[0] if answer.entries else None
            result[contact.name] = PresenceInfo(entry.online if entry else None,
                                                entry.last_seen if entry else None, True)
        return result

    async def presence_updates(self, name: str) -> AsyncIterator[PresenceEvent]:
        """The presence changes of contact ``name`` that its relay pushes after
        :meth:`subscribe_presence`, on the anonymous connection to that relay
        (also when it is this identity's own relay). Ends when that connection
        closes. (Added for ``chatcli chat``.)"""
        contact = self.get_contact(name, allow_key_changed=True)
        conn = await self.anonymous(contact.relay_url)
        async for frame in conn.pushes:
            if isinstance(frame, frames.PresenceUpdate):
                for event in self._presence_events(frame.entries):
                    if isinstance(event, PresenceEvent) and event.contact == name:
                        yield event

    # ------------------------------------------------------------ block, remove

    async def block(self, name: str) -> None:
        """Revoke the capabilities ``name`` deposits with (its own and, before it
        switched, its invite's); their messages are refused."""
        contact = self.get_contact(name, allow_key_changed=True)
        invites, revoked = self._capabilities_of(contact)
        if revoked:
            conn = await self.own_relay()
            await conn.request(lambda req: frames.CapRevoke(req=req, cap_hashes=revoked))
        self._mark_blocked(contact, invites)
        await self._roll_profile_key()

    async def unblock(self, name: str) -> None:
        """Issue a new capability to ``name`` and send it inside the session."""
        contact = self.get_contact(name)
        capability = os.urandom(32)
        conn = await self.own_relay()
        await conn.request(lambda req: frames.CapAdd(req=req, cap_hashes=[cap_hash(capability)]))
        self._mark_unblocked(contact, capability)
        await self.deliver_until_stored(kinds={"capability"}, contact_id=contact.id)

    async def remove_contact(self, name: str) -> None:
        """Revoke ``name``'s capability and delete the contact and its history."""
        contact = self.get_contact(name, allow_key_changed=True)
        invites, revoked = self._capabilities_of(contact)
        if revoked:
            conn = await self.own_relay()
            with contextlib.suppress(RelayRequestError):
                await conn.request(lambda req: frames.CapRevoke(req=req, cap_hashes=revoked))
        self._forget_contact(contact, invites)
        await self._roll_profile_key()

    async def _roll_profile_key(self) -> None:
        """A new profile key, with the profile re-sealed for the remaining contacts."""
        from chatcli.client.profiles import publish_profile

        await publish_profile(self, None, new_key=True)


async def create_account(home: Home, passphrase: str, *, name: str, relay_url: str,
                         token: str | None = None) -> tuple[ChatClient, bool]:
    """Register a mailbox on the relay and create the identity in ``home``.

    Returns the client and whether the relay key was trusted on first use
    (the URL had no fingerprint: the caller warns; the key is pinned)."""
    from chatcli.client.relay_client import connect
    from chatcli.crypto.keys import relay_fingerprint
    from chatcli.protocol.address import parse_relay_url

    validate_name(name)
    home.require_empty()
    address = parse_relay_url(relay_url)
    identity = IdentityKeyPair.generate()
    mailbox_key = MailboxKeyPair.generate()
    async with connect(address) as conn:
        mailbox = await conn.register(mailbox_key.auth_public, mailbox_key.sign, token)
        pinned = address.with_fingerprint(relay_fingerprint(conn.relay_key)).display()
    client = ChatClient.create(home, passphrase, name=name, relay_url=pinned, mailbox=mailbox,
                               identity=identity, mailbox_key=mailbox_key)
    return client, address.fingerprint is None
