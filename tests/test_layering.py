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


# The client's sans-I/O core: synchronous decisions over the local store, one
# module per concern. The shells (relay connections, trio, the front ends)
# are built on it, never the other way round.
CLIENT_CORE = (
    "chatcli.client.core", "chatcli.client.contacts", "chatcli.client.invites",
    "chatcli.client.outbox", "chatcli.client.inbox", "chatcli.client.presence",
    "chatcli.client.backup", "chatcli.client.events", "chatcli.client.names",
    "chatcli.client.capabilities", "chatcli.client.sessions", "chatcli.client.prekeys",
    "chatcli.client.devices",
    "chatcli.client.groups.core", "chatcli.client.groups.inbox",
    "chatcli.client.groups.commands", "chatcli.client.groups.queries",
    "chatcli.client.groups.delivery", "chatcli.client.groups.backup",
)
CLIENT_SHELLS = (
    "chatcli.client.service", "chatcli.client.groups.service", "chatcli.client.chat_ui",
    "chatcli.client.chat_remote",
    "chatcli.client.agent", "chatcli.client.agent_daemon", "chatcli.client.profiles",
    "chatcli.client.attachments", "chatcli.client.device_setup", "chatcli.cli", "chatcli.api",
)
CLIENT_FORBIDDEN = ("trio", "trio_websocket", "click", "prompt_toolkit")


def test_client_core_imports_no_io_library() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {name}\n" for name in CLIENT_CORE)
        + f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {CLIENT_FORBIDDEN!r})\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the client core imports {out.stdout.strip()}"


def _imports(module: str) -> list[tuple[str, bool]]:
    """(imported module, only for type checking) for every import statement of
    ``module``, wherever it stands (also inside functions)."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    from pathlib import Path

    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in (
                "TYPE_CHECKING", "typing.TYPE_CHECKING"):
            typing_only.update(id(n) for child in node.body for n in ast.walk(child))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in typing_only) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [(f"{node.module}.{alias.name}", id(node) in typing_only)
                      for alias in node.names]
    return found


@pytest.mark.parametrize("module", CLIENT_CORE)
def test_client_core_never_imports_a_shell(module: str) -> None:
    """Not even lazily or for type checking: the core names the relay
    connections' types (``relay_client``) only for type checking."""
    for name, typing_only in _imports(module):
        assert not any(name == shell or name.startswith(shell + ".")
                       for shell in CLIENT_SHELLS), f"{module} imports {name}"
        if name.startswith("chatcli.client.relay_client"):
            assert typing_only, f"{module} imports {name} at run time"


def test_client_modules_import_each_other_in_no_circle() -> None:
    """Counting every import: lazy ones inside functions and those only for
    type checking too."""
    import pkgutil

    import chatcli.client

    modules = {info.name for info in pkgutil.walk_packages(chatcli.client.__path__,
                                                           "chatcli.client.")}
    graph: dict[str, set[str]] = {}
    for module in modules:
        targets = set()
        for name, _typing_only in _imports(module):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets

    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            circle = [*path[path.index(module):], module]
            raise AssertionError("import circle: " + " -> ".join(circle))
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
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
