"""Every command registered in ``chatcli.cli.main.COMMANDS`` (recursively for
groups) has help text and a section in ``docs/cli.md`` naming each option."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from chatcli.cli.main import _available, _load

DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def _walk(prefix: str, command: click.Command) -> list[tuple[str, click.Command]]:
    found = [(prefix, command)]
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            found.extend(_walk(f"{prefix} {name}", sub))
    return found


def _all_commands() -> list[tuple[str, click.Command]]:
    result = []
    for name, target in sorted(_available().items()):
        result.extend(_walk(name, _load(target)))
    return result


COMMANDS = _all_commands()


def _section(path: str) -> str | None:
    """The text under the heading that names `chatcli PATH`, up to the next heading."""
    text = DOC.read_text(encoding="utf-8")
    heading = re.compile(r"^#{2,4} .*`chatcli " + re.escape(path) + r"(`| )", re.MULTILINE)
    match = heading.search(text)
    if match is None:
        return None
    rest = text[match.end():]
    following = re.search(r"^#{2,4} ", rest, re.MULTILINE)
    return rest[: following.start()] if following else rest


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[p for p, _ in COMMANDS])
def test_command_has_help(path: str, command: click.Command) -> None:
    assert (command.help or "").strip(), f"`chatcli {path}` has no help text"
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert (param.help or "").strip(), f"`chatcli {path}` option {param.opts} lacks help"


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[p for p, _ in COMMANDS])
def test_command_documented(path: str, command: click.Command) -> None:
    section = _section(path)
    assert section is not None, f"docs/cli.md has no section for `chatcli {path}`"
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            longest = max(param.opts, key=len)
            assert f"`{longest}" in section, (
                f"docs/cli.md does not document {longest} of `chatcli {path}`")
        elif isinstance(param, click.Argument):
            assert param.human_readable_name.upper() in section, (
                f"docs/cli.md does not name the argument {param.human_readable_name} "
                f"of `chatcli {path}`")


def test_env_vars_and_exit_codes_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name in ("CHATCLI_HOME", "CHATCLI_PASSPHRASE", "CHATCLI_INSECURE_FAST_KDF",
                 "CHATCLI_DEBUG"):
        assert name in text
    for code in range(5):
        assert re.search(rf"^\| `?{code}`? \|", text, re.MULTILINE), f"exit code {code}"
