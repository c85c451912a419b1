"""``python -m chatcli.daemon.main --home PATH [options]``: the detached daemon.

Options: ``--locked`` (no key on stdin), ``--websocket PORT``, ``--web PORT``.

``chatcli daemon --detach`` unlocks in the foreground, then starts this
process with the keystore's 32-byte key on stdin (never in argv or the
environment). It prints ``ready PID`` on stdout once its socket answers, or
``error: ...`` and exits non-zero; its log goes to stderr, which the parent
points at ``CHATCLI_HOME/daemon.log``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from chatcli.client.agent_daemon import PR_SET_DUMPABLE, _prctl, _read_key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chatcli.daemon.main")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--websocket", type=int, default=None, metavar="PORT")
    parser.add_argument("--web", type=int, default=None, metavar="PORT")
    parser.add_argument("--locked", action="store_true",
                        help="start locked (or empty): no key on stdin")
    args = parser.parse_args(argv)
    _prctl(PR_SET_DUMPABLE, 0)  # no core dumps or ptrace of a process holding keys
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    out = sys.stdout
    key = None
    if not args.locked:
        try:
            key = _read_key()
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=out, flush=True)
            return 2

    from chatcli.cli.output import lean_imports

    lean_imports()
    from chatcli.client.home import Home
    from chatcli.client.keys import read_secrets_with_key
    from chatcli.client.service import ChatClient
    from chatcli.daemon.runtime import Daemon, serve
    from chatcli.errors import ChatcliError

    def ready(daemon: Daemon) -> None:
        print(f"ready {os.getpid()}", file=out, flush=True)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)

    try:
        home = Home(args.home)
        client = None
        if key is not None:
            client = ChatClient.from_secrets(home,
                                             read_secrets_with_key(home.keystore, bytes(key)))
            key[:] = bytes(len(key))
        try:
            serve(home, client, ready, websocket_port=args.websocket, web_port=args.web)
        finally:
            if client is not None:
                client.close()
    except ChatcliError as exc:
        print(f"error: {exc}", file=out, flush=True)
        print(f"chatcli daemon: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code or 1
    except Exception as exc:  # the wrong key, a broken store: say so, no traceback
        print(f"error: {type(exc).__name__}", file=out, flush=True)
        raise
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
