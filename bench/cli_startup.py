"""Wall time of the ``chatcli`` program: start-up and a one-shot ``send``.

Medians over ``--runs`` runs of:

- ``python -c pass``: the interpreter alone, the floor;
- ``chatcli --help``: the CLI's start-up (no trio, nacl or peewee imported);
- ``chatcli send CONTACT TEXT`` to a relay on 127.0.0.1: the whole one-shot
  path (unlock the keystore, open the local store, encrypt, connect, deposit,
  wait for the durable acknowledgement, exit).

For ``send``, a relay is started and identities are set up in temporary
CHATCLI_HOMEs with ``chatcli init``, ``invite`` and ``accept``. The recipient
is created with ``CHATCLI_INSECURE_FAST_KDF=1`` (set-up only). The measured
sender ``bob`` has a keystore made with the product's real Argon2id limits
(MODERATE), so ``send_ms`` is what a user waits; a second sender ``carol``,
made with the fast test KDF, shows how much of that is the keystore unlock
(``send_fast_kdf_ms``). The KDF costs are stored in each keystore file, so
unlocking follows what the file says. Last, ``bob`` runs ``chatcli agent
start`` and sends again with no passphrase in the environment: the key comes
from the agent, no Argon2id runs (``send_agent_ms``).

Usage::

    python -m bench.cli_startup [--runs 10] [--no-send]     # JSON on stdout
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    BenchError,
    RelayConfig,
    RelayProcess,
    chatcli_command,
    child_env,
    median,
)
from bench.profile import pyspy_command, summarise_collapsed

PASSPHRASE = "benchmark passphrase, not a secret"  # noqa: S105 - throwaway identities
SEND_COMMANDS = ("init", "invite", "accept", "send", "receive", "agent")


def time_command(cmd: list[str], runs: int, *, env: dict[str, str] | None = None,
                 timeout: float = 60.0) -> dict[str, Any]:
    """Run ``cmd`` ``runs`` times; wall times in ms and the median."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise BenchError(f"{' '.join(cmd[:3])}... exited with {proc.returncode}: "
                             f"{proc.stderr.decode(errors='replace').strip()[-300:]}")
        times.append(elapsed * 1000)
    return {"median_ms": round(median(times) or 0.0, 1), "min_ms": round(min(times), 1),
            "max_ms": round(max(times), 1), "runs": runs}


def _available_commands() -> set[str]:
    out = subprocess.run([*chatcli_command(), "--help"], capture_output=True, text=True,
                         timeout=60, env=child_env()).stdout
    names = set()
    in_commands = False
    for line in out.splitlines():
        if line.strip().lower().startswith("commands"):
            in_commands = True
            continue
        if in_commands and line.startswith("  ") and line.strip():
            names.add(line.split()[0])
    return names


class _Identity:
    def __init__(self, root: Path, name: str, *, fast_kdf: bool) -> None:
        self.name = name
        self.env = child_env({"CHATCLI_HOME": str(root / name),
                              "CHATCLI_PASSPHRASE": PASSPHRASE})
        if fast_kdf:
            self.env["CHATCLI_INSECURE_FAST_KDF"] = "1"
        else:
            self.env.pop("CHATCLI_INSECURE_FAST_KDF", None)

    def run(self, *args: str, timeout: float = 120.0) -> str:
        proc = subprocess.run([*chatcli_command(), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise BenchError(f"chatcli {args[0]} ({self.name}) exited with "
                             f"{proc.returncode}: {proc.stderr.strip()[-400:]}")
        return proc.stdout


def _profile_send(cmd: list[str], env: dict[str, str], output: Path) -> dict[str, Any]:
    """One send under py-spy: where its CPU time goes (samples of running
    code; time waiting for the relay is not sampled)."""
    exe = pyspy_command()
    if exe is None:
        return {"error": "py-spy is not installed (pip install py-spy)"}
    proc = subprocess.run([exe, "record", "--rate", "1000", "--format", "raw",
                           "--output", str(output), "--", *cmd], env=env,
                          capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    if proc.returncode != 0 or not output.exists():
        return {"error": proc.stderr.decode(errors="replace").strip()[-300:]}
    return summarise_collapsed(output, 20) | {"stacks": str(output)}


def measure_send(runs: int, config: RelayConfig | None = None,
                 profile_dir: Path | None = None) -> dict[str, Any]:
    """Set up three identities on a fresh relay and time one-shot sends."""
    missing = [c for c in SEND_COMMANDS if c not in _available_commands()]
    if missing:
        raise BenchError(f"the client commands {', '.join(missing)} do not exist yet")
    with tempfile.TemporaryDirectory(prefix="chatcli-bench-cli-") as tmp, \
            RelayProcess(config or RelayConfig()) as relay:
        root = Path(tmp)
        alice = _Identity(root, "alice", fast_kdf=True)
        alice.run("init", "--name", "alice", "--relay", relay.url)
        senders = {"send": _Identity(root, "bob", fast_kdf=False),
                   "send_fast_kdf": _Identity(root, "carol", fast_kdf=True)}
        for sender in senders.values():
            link = alice.run("invite", "--name", sender.name).strip()
            sender.run("init", "--name", sender.name, "--relay", relay.url)
            sender.run("accept", link, "--name", "alice")
        alice.run("receive", "--json")  # completes the handshakes
        for sender in senders.values():  # alice's answers: each sender's own capability
            sender.run("receive", "--json")
        out: dict[str, Any] = {"relay": relay.config.describe()}
        bob = senders["send"]
        # The MODERATE sender again, with `chatcli agent` holding its key and no
        # passphrase in the environment: what a user who started the agent waits.
        agent_env = {k: v for k, v in bob.env.items() if k != "CHATCLI_PASSPHRASE"}
        runs_by_key = [("send", bob, bob.env), ("send_fast_kdf", senders["send_fast_kdf"],
                                                senders["send_fast_kdf"].env),
                       ("send_agent", bob, agent_env)]
        try:
            for key, sender, env in runs_by_key:
                if key == "send_agent":
                    bob.run("agent", "start", "--timeout", "10m")
                cmd = [*chatcli_command(), "send", "alice", f"one-shot send from {sender.name}"]
                time_command(cmd, 1, env=env)  # warm the page cache and the session
                out[key] = time_command(cmd, runs, env=env)
                if profile_dir is not None:
                    out[f"{key}_profile"] = _profile_send(cmd, env,
                                                          profile_dir / f"cli-{key}.txt")
        finally:
            subprocess.run([*chatcli_command(), "agent", "stop"], env=bob.env,
                           capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
        received = [line for line in alice.run("receive", "--json").splitlines()
                    if line.strip().startswith("{")]
        out["delivered"] = len(received)
        out["expected"] = 3 * (runs + 1) + (3 if profile_dir is not None else 0)
        out["sender_kdf"] = {"send": "product default (Argon2id MODERATE)",
                             "send_fast_kdf": "CHATCLI_INSECURE_FAST_KDF=1 (test minimum)",
                             "send_agent": "the MODERATE keystore, key from `chatcli agent` "
                                           "(no passphrase in the environment)"}
        return out


def run(runs: int = 10, *, send: bool = True,
        profile_dir: Path | None = None) -> dict[str, Any]:
    env = child_env()
    report: dict[str, Any] = {
        "python_c_pass": time_command([sys.executable, "-c", "pass"], runs, env=env),
        "chatcli_help": time_command([*chatcli_command(), "--help"], runs, env=env),
    }
    report["help_over_python"] = round(
        report["chatcli_help"]["median_ms"] / report["python_c_pass"]["median_ms"], 2)
    if send:
        try:
            report["one_shot_send"] = measure_send(runs, profile_dir=profile_dir)
        except (BenchError, subprocess.TimeoutExpired) as exc:
            report["one_shot_send"] = None
            report["one_shot_send_error"] = str(exc)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cli_startup",
        description="Wall time of python -c pass, chatcli --help and a one-shot send; JSON.")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--no-send", action="store_true", help="skip the one-shot send")
    parser.add_argument("--profile", metavar="DIR", type=Path,
                        help="also run one send of each sender under py-spy (stacks in DIR)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.pop("CHATCLI_INSECURE_FAST_KDF", None)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    print(json.dumps({"cli_startup": run(args.runs, send=not args.no_send,
                                         profile_dir=args.profile)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
