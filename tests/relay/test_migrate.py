"""``chatcli relay migrate``: SQLite → PostgreSQL round trip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chatcli.relay.migrate import MigrationError, migrate_sqlite_to_postgres
from chatcli.relay.store.base import BlobInfo, NewMessage, PresenceRecord, Usage
from chatcli.relay.store.postgres import PostgresStore
from chatcli.relay.store.sqlite import SqliteStore

NOW = 1_700_000_000_000


def build_source(path: Path) -> dict[str, object]:
    """A SQLite relay database with a bit of everything; what to expect after."""
    s = SqliteStore(path)
    s.open(NOW)
    seed = s.load_or_store_relay_seed(os.urandom(32))
    a, b = os.urandom(16), os.urandom(16)
    key_a, key_b = os.urandom(32), os.urandom(32)
    s.create_mailbox(a, key_a, NOW)
    s.create_mailbox(b, key_b, NOW)
    cap_ok, cap_revoked = os.urandom(32), os.urandom(32)
    s.add_caps(a, [cap_ok, cap_revoked], NOW)
    s.revoke_caps(a, [cap_revoked], NOW)
    invite, handshake = os.urandom(32), os.urandom(32)   # a used one-shot capability
    s.add_caps(a, [invite], NOW, one_shot=True)
    with s.transaction():
        assert s.consume_caps({(a, invite): handshake}) == {(a, invite)}
    ids = s.insert_messages([NewMessage(a, f"m{i}".encode(), NOW + i) for i in range(5)]
                            + [NewMessage(b, b"for-b", NOW)])
    # The highest id is deleted: PostgreSQL must not hand it out again.
    s.delete_messages(b, [ids[-1]])
    s.set_presence_hidden(b, True)
    s.set_last_seen(a, NOW + 99)
    blob = os.urandom(16)
    read_cap = os.urandom(32)
    data = os.urandom(3000)
    s.create_blob(BlobInfo(blob, a, read_cap, 0, False, NOW + 10_000), NOW)
    s.append_blob_chunk(blob, 0, data[:2000], False)
    s.append_blob_chunk(blob, 2000, data[2000:], True)
    token = os.urandom(32)
    s.add_token(token, 3, None, NOW)
    s.close()
    return {"seed": seed, "a": a, "b": b, "key_a": key_a, "key_b": key_b,
            "cap_ok": cap_ok, "cap_revoked": cap_revoked, "invite": invite,
            "handshake": handshake, "ids": ids, "blob": blob,
            "read_cap": read_cap, "data": data, "token": token}


def test_migrate_round_trip(tmp_path: Path, pg_database: tuple[str, str]) -> None:
    _name, url = pg_database
    source = tmp_path / "relay.db"
    want = build_source(source)
    said: list[str] = []
    report = migrate_sqlite_to_postgres(source, url, progress=said.append, now_ms=NOW)
    assert report.counts == {"meta": 1, "mailbox": 2, "capability": 3, "token": 1,
                             "message": 5, "blob": 1, "blob_chunk": 2}
    assert report.message_bytes == 10
    assert any("message" in line for line in said)
    ids = want["ids"]
    assert isinstance(ids, list)

    pg = PostgresStore(url)
    pg.open(NOW)
    try:
        a, b = want["a"], want["b"]
        assert isinstance(a, bytes) and isinstance(b, bytes)
        assert pg.load_or_store_relay_seed(os.urandom(32)) == want["seed"]
        assert pg.mailbox_auth_key(a) == want["key_a"]
        assert pg.mailbox_auth_key(b) == want["key_b"]
        assert pg.valid_caps([(a, want["cap_ok"]), (a, want["cap_revoked"])]) == {  # type: ignore[list-item]
            (a, want["cap_ok"])}
        used = [(a, want["invite"]), (a, want["cap_ok"])]
        assert pg.cap_uses(used) == {used[0]: 0, used[1]: None}  # type: ignore[arg-type]
        assert pg.cap_used_by(used) == {used[0]: want["handshake"]}  # type: ignore[arg-type]
        got = pg.fetch_messages(a, 0, 100)
        assert [m.id for m in got] == ids[:5]
        assert [m.payload for m in got] == [f"m{i}".encode() for i in range(5)]
        assert [m.received_at for m in got] == [NOW + i for i in range(5)]
        assert pg.mailbox_usage([a, b]) == {a: Usage(5, 10), b: Usage(0, 0)}
        assert pg.presence_records([a, b]) == {a: PresenceRecord(False, NOW + 99),
                                               b: PresenceRecord(True, None)}
        info = pg.get_blob(want["blob"])  # type: ignore[arg-type]
        assert info is not None and info.complete and info.size == 3000
        assert info.read_cap_hash == want["read_cap"]
        assert pg.read_blob(want["blob"], 0, 5000) == want["data"]  # type: ignore[arg-type]
        assert pg.consume_token(want["token"], NOW)  # type: ignore[arg-type]
        (new_id,) = pg.insert_messages([NewMessage(a, b"after", NOW)])
        assert new_id > ids[-1]
        assert report.next_message_id == ids[-1] + 1
    finally:
        pg.close()

    # A second migration into the now non-empty target is refused, and changes nothing.
    with pytest.raises(MigrationError, match="already holds relay data"):
        migrate_sqlite_to_postgres(source, url, now_ms=NOW)
    pg = PostgresStore(url)
    pg.open(NOW)
    try:
        assert pg.stats().messages == 6
    finally:
        pg.close()


def test_migrate_missing_source(tmp_path: Path, pg_database: tuple[str, str]) -> None:
    from chatcli.errors import UsageError

    with pytest.raises(UsageError, match="does not exist"):
        migrate_sqlite_to_postgres(tmp_path / "nope.db", pg_database[1])
    with pytest.raises(UsageError, match="postgresql://"):
        migrate_sqlite_to_postgres(tmp_path / "nope.db", str(tmp_path / "x.db"))


def test_migrate_command(tmp_path: Path, pg_database: tuple[str, str]) -> None:
    """`chatcli relay migrate` end to end: counts printed, the relay address
    (key fingerprint) unchanged, a second run refused with a clear error."""
    import json

    from click.testing import CliRunner

    from chatcli.cli.main import cli

    _name, url = pg_database
    source = tmp_path / "relay.db"
    build_source(source)
    runner = CliRunner()
    before = runner.invoke(cli, ["relay", "fingerprint", "--db", str(source)])
    assert before.exit_code == 0, before.output
    result = runner.invoke(cli, ["relay", "migrate", "--from", str(source), "--to", url,
                                 "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["counts"]["message"] == 5 and report["counts"]["mailbox"] == 2
    after = runner.invoke(cli, ["relay", "fingerprint", "--db", url])
    assert after.exit_code == 0, after.output
    assert after.stdout.strip() == before.stdout.strip()
    again = runner.invoke(cli, ["relay", "migrate", "--from", str(source), "--to", url])
    assert again.exit_code == 1
    assert "already holds relay data" in again.stderr
