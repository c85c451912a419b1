"""The CLI starts fast: `--help` and the local commands import no heavy library."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("trio", "trio_websocket", "nacl", "peewee", "msgspec", "segno", "prompt_toolkit")


def _heavy_imported_by(code: str, heavy: tuple[str, ...] = HEAVY,
                       env: dict[str, str] | None = None) -> list[str]:
    """The ``heavy`` top-level modules imported once ``code`` has run in a
    fresh interpreter."""
    code += (f"print('HEAVY=' + ','.join(sorted({{m.split('.')[0] for m in sys.modules}}"
             f" & set({heavy!r}))))\n")
    out = subprocess.run([sys.executable, "-c", "import sys\n" + code], capture_output=True,
                         text=True, check=True, env=env)
    line = out.stdout.strip().splitlines()[-1]
    assert line.startswith("HEAVY="), out.stdout
    return [m for m in line.removeprefix("HEAVY=").split(",") if m]


def _imported_after(args: list[str], heavy: tuple[str, ...] = HEAVY,
                    env: dict[str, str] | None = None) -> list[str]:
    """The ``heavy`` modules that running ``chatcli ARGS`` imports."""
    return _heavy_imported_by(
        "from chatcli.cli.main import cli\n"
        "try:\n"
        f"    cli.main({args!r}, standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n", heavy, env)


def test_help_imports_nothing_heavy() -> None:
    assert _imported_after(["--help"]) == []


def test_subcommand_help_imports_nothing_heavy() -> None:
    for command in (["send", "--help"], ["receive", "--help"], ["keys", "export", "--help"],
                    ["contacts", "--help"], ["init", "--help"], ["verify", "--help"]):
        assert _imported_after(command) == [], command


def test_help_does_not_load_the_api() -> None:
    """The API layer is loaded by the commands that call it, not by their help."""
    for args in (["--help"], ["send", "--help"], ["receive", "--help"]):
        code = ("import sys\nfrom chatcli.cli.main import cli\ntry:\n"
                f"    cli.main({args!r}, standalone_mode=False)\nexcept SystemExit:\n    pass\n"
                "print('API=' + ','.join(sorted(m for m in sys.modules "
                "if m.startswith('chatcli.api'))))\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True)
        assert out.stdout.strip().splitlines()[-1] == "API=", (args, out.stdout)


def test_installed_script_help() -> None:
    import shutil
    from pathlib import Path

    script = Path(sys.executable).parent / "chatcli"
    exe = str(script) if script.exists() else shutil.which("chatcli")
    assert exe, "the chatcli script is not installed"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True)
    assert "Usage:" in out.stdout and "send" in out.stdout


def test_local_commands_import_no_network_library(tmp_path: Path) -> None:
    """Commands that only read the local database never import trio."""
    from chatcli.client.home import Home
    from chatcli.client.service import ChatClient
    from chatcli.crypto.keys import IdentityKeyPair, MailboxKeyPair

    os.environ["CHATCLI_INSECURE_FAST_KDF"] = "1"
    try:
        ChatClient.create(Home(tmp_path), "a passphrase", name="alice",
                          relay_url="ws://127.0.0.1:1/#" + "a" * 52, mailbox=bytes(16),
                          identity=IdentityKeyPair.generate(),
                          mailbox_key=MailboxKeyPair.generate()).close()
    finally:
        del os.environ["CHATCLI_INSECURE_FAST_KDF"]
    env = {**os.environ, "CHATCLI_HOME": str(tmp_path), "CHATCLI_PASSPHRASE": "a passphrase"}
    for command in (["contacts", "--offline"], ["account", "settings"]):
        assert _imported_after(command, ("trio", "trio_websocket", "psycopg"), env) == [], command


def test_agent_modules_are_lean() -> None:
    """The agent daemon holds 32 bytes and answers on a socket: it imports no
    heavy library (nor click), and neither does the client side that every
    command uses to ask it for the key."""
    assert _heavy_imported_by("import chatcli.client.agent, chatcli.client.agent_daemon\n",
                              (*HEAVY, "click")) == []


def test_agent_commands_import_nothing_heavy(tmp_path: Path) -> None:
    env = {**os.environ, "CHATCLI_HOME": str(tmp_path)}
    for command in (["agent", "--help"], ["agent", "status"], ["agent", "stop"]):
        assert _imported_after(command, env=env) == [], command
