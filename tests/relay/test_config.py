from __future__ import annotations

from pathlib import Path

import pytest

from chatcli.errors import UsageError
from chatcli.relay.config import RelayConfig, load_config_file, parse_duration, parse_size


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("15m", 900), ("12h", 43200), ("21d", 21 * 86400), ("2w", 14 * 86400),
    ("1.5h", 5400), ("500ms", 0.5), ("42", 42), (7, 7),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "5y", "-3d", "1 2"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


def test_sizes() -> None:
    assert parse_size("64MiB") == 64 * 1024 * 1024
    assert parse_size("512k") == 512 * 1024
    with pytest.raises(UsageError):
        parse_size("lots")


def test_config_file(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('[relay]\nport = 9000\nretention = "7d"\ninvite-only = true\n'
                    'max_blob_size = "1MiB"\n')
    settings = load_config_file(path)
    assert settings == {"port": 9000, "retention": 7 * 86400.0, "invite_only": True,
                        "max_blob_size": 1024 * 1024}
    config = RelayConfig(**settings)
    assert config.invite_only and config.port == 9000


def test_config_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("port = \n")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_config_file(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("colour = 'blue'\n")
    with pytest.raises(UsageError, match="Unknown setting"):
        load_config_file(unknown)
    with pytest.raises(UsageError, match="Cannot read"):
        load_config_file(tmp_path / "missing.toml")


def test_config_validation() -> None:
    with pytest.raises(UsageError):
        RelayConfig(tls_cert="cert.pem")
    with pytest.raises(UsageError):
        RelayConfig(port=70000)
    with pytest.raises(UsageError):
        RelayConfig(max_payload=10**9)


def test_postgres_url_without_driver_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    from chatcli.errors import UsageError
    from chatcli.relay.store import make_store

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "psycopg" else real_find_spec(name, *a))
    with pytest.raises(UsageError, match=r"chatcli\[postgres\]"):
        make_store("postgresql://postgres@127.0.0.1:5432/test")
