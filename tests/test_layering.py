"""The crypto and protocol layers are pure: importing them loads no I/O library."""

import subprocess
import sys

import pytest

FORBIDDEN = ("trio", "trio_websocket", "click", "peewee", "prompt_toolkit", "psycopg")


@pytest.mark.parametrize("package", ["chatcli.crypto", "chatcli.protocol"])
def test_pure_layer_imports_no_io_library(package: str) -> None:
    import pkgutil

    mod = __import__(package, fromlist=["_"])
    names = [package] + [
        f"{package}.{info.name}" for info in pkgutil.iter_modules(mod.__path__)
    ]
    code = (
        "import sys\n"
        + "".join(f"import {name}\n" for name in names)
        + f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{package} imports {out.stdout.strip()}"


def test_api_layer_imports_no_front_end_or_network_library() -> None:
    """chatcli.api is front-end neutral and cheap to import: the CLI's local
    commands and the daemon both load it; trio comes only with a relay call."""
    code = (
        "import sys\n"
        "import chatcli.api.errors, chatcli.api.events, chatcli.api.local, chatcli.api.schema\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('trio', 'trio_websocket', 'click', 'peewee', 'prompt_toolkit', 'psycopg'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"chatcli.api imports {out.stdout.strip()}"
