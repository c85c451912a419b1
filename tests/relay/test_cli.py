"""`chatcli relay ...` commands."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from chatcli.cli.main import cli
from chatcli.relay.mailbox import TOKEN_PREFIX, token_hash
from chatcli.relay.store.sqlite import SqliteStore

CLI = [sys.executable, "-c", "from chatcli.cli.main import cli; cli()"]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_fingerprint_is_stable_and_alone(tmp_path: Path) -> None:
    db = str(tmp_path / "relay.db")
    code, out, _ = run("relay", "fingerprint", "--db", db)
    assert code == 0
    fingerprint = out.strip()
    assert len(fingerprint) == 52 and out == fingerprint + "\n"
    assert run("relay", "fingerprint", "--db", db)[1] == out


def test_token_create_stores_only_a_hash(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    code, out, _ = run("relay", "token", "create", "--uses", "3", "--expires", "7d",
                       "--db", str(db))
    assert code == 0
    token = out.strip()
    assert token.startswith(TOKEN_PREFIX)
    for path in tmp_path.glob("relay.db*"):
        assert token.encode() not in path.read_bytes()
    store = SqliteStore(db)
    store.open(0)
    try:
        assert store.consume_token(token_hash(token), 1)
    finally:
        store.close()
    assert run("relay", "token", "create", "--uses", "0", "--db", str(db))[0] == 2
    assert run("relay", "token", "create", "--expires", "soon", "--db", str(db))[0] == 2


def test_stats_json_and_text(tmp_path: Path) -> None:
    db = str(tmp_path / "relay.db")
    code, out, _ = run("relay", "stats", "--db", db, "--json")
    assert code == 0
    figures = json.loads(out)
    assert figures["mailboxes"] == 0 and figures["connections"] == 0
    assert figures["running"] is False
    code, out, _ = run("relay", "stats", "--db", db)
    assert code == 0 and "queued" not in out and "messages" in out


@pytest.mark.parametrize("command", [["relay"], ["relay", "serve"], ["relay", "token"],
                                     ["relay", "token", "create"], ["relay", "stats"],
                                     ["relay", "fingerprint"]])
def test_every_command_has_help(command: list[str]) -> None:
    code, out, _ = run(*command, "--help")
    assert code == 0 and len(out.splitlines()) > 3


@pytest.mark.slow
def test_serve_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([*CLI, "relay", "serve", "--port", str(port), "--db",
                                 str(tmp_path / "relay.db")], capture_output=True, text=True,
                                timeout=30)
    assert result.returncode == 3
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("chatcli: error:")]
    assert errors and "Cannot listen" in errors[0]


@pytest.mark.slow
def test_serve_reads_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(f'port = 0\ndb = "{tmp_path / "from-config.db"}"\ninvite-only = true\n')
    proc = subprocess.Popen([*CLI, "relay", "serve", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("relay address: ws://127.0.0.1:")
        assert (tmp_path / "from-config.db").exists()
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0
        if proc.stdout:
            proc.stdout.close()


def test_bad_config_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text("nonsense = 1\n")
    code, _, err = run("relay", "serve", "--config", str(config))
    assert code == 2 and "Unknown setting" in err


def test_an_empty_database_file_is_refused_not_made_a_new_relay(tmp_path: Path) -> None:
    """A truncated relay.db (0 bytes) must not quietly become a new relay with
    a new key: one clear line, the file left alone; deleting it makes a new one."""
    db = tmp_path / "relay.db"
    db.write_bytes(b"")
    code, out, err = run("relay", "fingerprint", "--db", str(db))
    assert code != 0 and out == ""
    errors = [line for line in err.splitlines() if line.startswith("chatcli: error:")]
    assert len(errors) == 1 and "empty file" in errors[0] and "delete the file" in errors[0]
    assert db.stat().st_size == 0
    db.unlink()
    code, out, _ = run("relay", "fingerprint", "--db", str(db))
    assert code == 0 and out.strip()
