"""Local pieces: message formats, session glue, store, home, passphrase sources."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from chatcli.client import messages as m
from chatcli.client import models as db
from chatcli.client import sessions
from chatcli.client.home import Home
from chatcli.client.store import SCHEMA_VERSION, Sealer, Store
from chatcli.client.unlock import get_passphrase
from chatcli.crypto.errors import CorruptData, DecryptionFailed, ReplayedMessage
from chatcli.crypto.keys import DHKeyPair, IdentityKeyPair
from chatcli.errors import StorageError, UsageError


def test_messages_round_trip_and_tags() -> None:
    text = m.Text(id="0" * 8 + "-0000-0000-0000-" + "0" * 12, sent_at=1, text="hi")
    assert m.decode_content(m.encode(text)) == text
    receipt = m.Receipt(kind="read", ids=[text.id])
    assert m.decode_content(m.encode(receipt)) == receipt
    assert msgspec.msgpack.decode(m.encode(receipt))[0] == "receipt"
    body = m.RatchetBody(v=1, message=b"x")
    assert m.decode_body(m.encode(body)) == body
    with pytest.raises(msgspec.ValidationError):
        m.decode_content(msgspec.msgpack.encode(["receipt", "seen", [text.id]]))
    # An unknown tag (a newer client's) is not an error: it is shown as unsupported.
    assert m.decode_content(msgspec.msgpack.encode(["no_such_tag"])) == m.Unsupported(
        "no_such_tag")
    with pytest.raises(msgspec.ValidationError):
        m.decode_content(msgspec.msgpack.encode([7, "not a tag"]))


def test_messages_ignore_appended_fields() -> None:
    """A newer client may append fields: an older one still decodes the message."""
    newer = msgspec.msgpack.encode(["typing", True, "a field from the future"])
    assert m.decode_content(newer) == m.Typing(active=True)


def test_session_glue_invite_and_restore() -> None:
    alice, bob = IdentityKeyPair.generate(), IdentityKeyPair.generate()
    prekey = DHKeyPair.generate()
    session_b, body = sessions.start_from_invite(bob, alice.public, b"i" * 16, prekey.public,
                                                 b"first")
    session_a, first = sessions.answer_prekey(alice, prekey, bob.public, body)
    assert first == b"first"
    assert session_a.decrypt(session_b.encrypt(b"second")) == b"second"
    reply = session_a.encrypt(b"reply")
    assert session_b.decrypt(reply) == b"reply"
    with pytest.raises(ReplayedMessage):
        session_b.decrypt(reply)
    # Restore: Bob lost his sessions; Alice's signed restore prekey starts a new one.
    restore = DHKeyPair.generate()
    signature = sessions.sign_restore_prekey(alice, restore.public)
    sessions.verify_restore_prekey(alice.public, restore.public, signature)
    with pytest.raises(sessions.HandshakeRefused):
        sessions.verify_restore_prekey(bob.public, restore.public, signature)
    new_b, rbody = sessions.start_restore(bob, alice.public, restore.public, b"back")
    assert rbody.invite_id is None and rbody.restore_prekey == restore.public
    _, plain = sessions.answer_prekey(alice, restore, bob.public, rbody)
    assert plain == b"back"
    # A handshake naming another sender is refused; one for another prekey fails.
    with pytest.raises(sessions.HandshakeRefused):
        sessions.answer_prekey(alice, restore, IdentityKeyPair.generate().public, rbody)
    with pytest.raises(DecryptionFailed):
        sessions.answer_prekey(alice, DHKeyPair.generate(), bob.public, rbody)
    assert sessions.handshake_digest(rbody) != sessions.handshake_digest(body)
    assert new_b.can_send


def test_store_seals_and_refuses_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "chatcli.db"
    store = Store.open(path, Sealer(bytes(32)), create=True)
    sealed = store.sealer.seal(b"secret", "message.text", "uuid-1")
    assert store.sealer.open(sealed, "message.text", "uuid-1") == b"secret"
    with pytest.raises(CorruptData):
        store.sealer.open(sealed, "contact.deposit_cap", "uuid-1")  # bound to its column
    with pytest.raises(CorruptData):
        store.sealer.open(sealed, "message.text", "uuid-2")  # and to its row
    with pytest.raises(CorruptData):
        Sealer(bytes([1]) * 32).open(sealed, "message.text", "uuid-1")
    with store.write():
        db.MetaEntry.update(value=str(SCHEMA_VERSION + 1)).where(
            db.MetaEntry.key == "schema_version").execute()
    store.close()
    with pytest.raises(StorageError, match="newer chatcli"):
        Store.open(path, Sealer(bytes(32)))
    with pytest.raises(StorageError):
        Store.open(tmp_path / "missing.db", None)
    locked = Store(path, None)
    with pytest.raises(StorageError, match="passphrase"):
        _ = locked.sealer


def test_a_version_5_database_gains_the_saved_attachments_table(tmp_path: Path) -> None:
    path = tmp_path / "chatcli.db"
    store = Store.open(path, Sealer(bytes(32)), create=True)
    with store.write():
        store.db.drop_tables([db.SavedAttachment])
        db.MetaEntry.update(value="5").where(db.MetaEntry.key == "schema_version").execute()
    store.close()
    store = Store.open(path, Sealer(bytes(32)))
    with store.read():
        assert store.db.table_exists("saved_attachment")
        assert db.MetaEntry.get(db.MetaEntry.key == "schema_version").value == str(
            SCHEMA_VERSION)
    store.close()


def test_a_version_6_database_gains_the_message_kinds(tmp_path: Path) -> None:
    path = tmp_path / "chatcli.db"
    store = Store.open(path, Sealer(bytes(32)), create=True)
    with store.write():
        store.db.drop_tables([db.MessageEdit, db.MessageReaction, db.PendingAction])
        for column in ("kind", "reply_sealed", "edited_at", "deleted_at"):
            store.db.execute_sql(f"ALTER TABLE message DROP COLUMN {column}")
        db.MetaEntry.update(value="6").where(db.MetaEntry.key == "schema_version").execute()
    store.close()
    store = Store.open(path, Sealer(bytes(32)))
    with store.read():
        assert store.db.table_exists("pending_action")
        assert "deleted_at" in {c.name for c in store.db.get_columns("message")}
        assert db.MetaEntry.get(db.MetaEntry.key == "schema_version").value == str(
            SCHEMA_VERSION)
    store.close()


def test_home_checks(tmp_path: Path) -> None:
    home = Home(tmp_path / "h")
    with pytest.raises(UsageError, match="chatcli init"):
        home.require()
    home.require_empty()
    home.create()
    assert (home.root.stat().st_mode & 0o777) == 0o700
    home.keystore.write_bytes(b"x")
    with pytest.raises(UsageError, match="already exists"):
        home.require_empty()
    with home.exclusive():
        pass


def test_passphrase_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATCLI_PASSPHRASE", "from the environment")
    assert get_passphrase() == "from the environment"
    file = tmp_path / "pw"
    file.write_text("from a file\nignored\n")
    assert get_passphrase(file) == "from a file"
    file.write_text("")
    with pytest.raises(UsageError, match="empty"):
        get_passphrase(file)
    with pytest.raises(UsageError, match="Cannot read"):
        get_passphrase(tmp_path / "missing")
    monkeypatch.setenv("CHATCLI_PASSPHRASE", "short")
    with pytest.raises(UsageError, match="at least"):
        get_passphrase(confirm=True)
    monkeypatch.delenv("CHATCLI_PASSPHRASE")
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(UsageError, match="CHATCLI_PASSPHRASE"):
        get_passphrase()


def test_durations() -> None:
    import click

    from chatcli.cli.output import parse_duration

    assert parse_duration("90") == 90
    assert parse_duration("15m") == 900
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration("2w") == 14 * 86400
    for bad in ("", "0", "-5m", "7x", "d"):
        with pytest.raises(click.BadParameter):
            parse_duration(bad)


def test_deleted_and_overwritten_secrets_leave_no_trace_on_disk(tmp_path: Path) -> None:
    """One-time prekeys and superseded ratchet states are gone from the database
    file and its WAL once the transaction that replaced them commits."""
    from chatcli.client import models

    path = tmp_path / "local.db"
    store = Store.open(path, Sealer(bytes(32)), create=True)
    first, second = "FIRST-SECRET-" + "a" * 40, "SECOND-SECRET-" + "b" * 40
    with store.write():
        models.MetaEntry.create(key="secret", value=first)
    with store.write():
        models.MetaEntry.update(value=second).where(models.MetaEntry.key == "secret").execute()
    with store.write():
        models.MetaEntry.delete().where(models.MetaEntry.key == "secret").execute()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("local.db"))
    assert first.encode() not in on_disk
    assert second.encode() not in on_disk
    store.close()


def test_deferred_scrub_checkpoints_once_when_the_last_block_ends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon wraps each request in ``deferred_scrub``: its transactions
    share one truncating WAL checkpoint, run when the last (overlapping) block
    ends, and no checkpoint waits longer than SCRUB_DEFER_LIMIT."""
    from chatcli.client import models
    from chatcli.client import store as store_module

    path = tmp_path / "local.db"
    wal = Path(str(path) + "-wal")
    store = Store.open(path, Sealer(bytes(32)), create=True)
    first, second = "FIRST-SECRET-" + "a" * 40, "SECOND-SECRET-" + "b" * 40

    def on_disk() -> bytes:
        return b"".join(p.read_bytes() for p in tmp_path.iterdir()
                        if p.name.startswith("local.db"))

    with store.deferred_scrub():
        with store.write():
            models.MetaEntry.create(key="secret", value=first)
        with store.write():
            models.MetaEntry.update(value=second).where(
                models.MetaEntry.key == "secret").execute()
        assert wal.stat().st_size > 0  # not checkpointed yet
        with store.deferred_scrub(), store.write():  # another request, overlapping
            models.MetaEntry.delete().where(models.MetaEntry.key == "secret").execute()
        assert wal.stat().st_size > 0  # the first request still runs
        assert first.encode() in on_disk()
    assert wal.stat().st_size == 0
    assert first.encode() not in on_disk() and second.encode() not in on_disk()

    monkeypatch.setattr(store_module, "SCRUB_DEFER_LIMIT", 0.0)
    with store.deferred_scrub():
        with store.write():
            models.MetaEntry.create(key="secret", value=first)
        assert wal.stat().st_size == 0  # overdue at once: not deferred
    store.close()


def test_a_handed_off_scrub_waits_for_scrub_if_due(tmp_path: Path) -> None:
    """The daemon answers a request before its checkpoint: the block leaves it
    (``hand_off``) and ``scrub_if_due`` runs it, unless another block is open."""
    from chatcli.client import models

    path = tmp_path / "local.db"
    wal = Path(str(path) + "-wal")
    store = Store.open(path, Sealer(bytes(32)), create=True)
    with store.deferred_scrub(hand_off=True), store.write():
        models.MetaEntry.create(key="secret", value="HANDED-OFF-SECRET")
    assert wal.stat().st_size > 0  # left to the caller
    with store.deferred_scrub():
        store.scrub_if_due()  # another request is still open: its end runs it
        assert wal.stat().st_size > 0
    assert wal.stat().st_size == 0
    with store.deferred_scrub(hand_off=True), store.write():
        models.MetaEntry.delete().where(models.MetaEntry.key == "secret").execute()
    store.scrub_if_due()
    assert wal.stat().st_size == 0
    assert b"HANDED-OFF-SECRET" not in path.read_bytes()
    store.close()
