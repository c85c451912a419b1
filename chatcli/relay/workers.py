"""``chatcli relay serve --workers N``: N relay processes on one port.

Each worker is a whole relay process on the same PostgreSQL database (one
relay: same key, same mailboxes; wake-ups and presence cross processes
through :mod:`chatcli.relay.notify`). Each opens its own listening socket
with ``SO_REUSEPORT`` on the same host and port, and the kernel spreads new
connections over them, so every core accepts and serves.

The parent supervises: it binds the port first (also with ``SO_REUSEPORT``,
never listening, so ``--port 0`` picks one port for all), starts the workers
(``python -m chatcli.relay.workers CONFIG``), prints the one ``relay
address:`` line once all are ready, restarts a worker that dies (with a
growing delay if it keeps dying), and on SIGTERM or SIGINT asks every worker
to shut down gracefully and waits for them. A worker whose parent disappears
(killed with SIGKILL) shuts down by itself: its stdin, a pipe from the
parent, closes.

SQLite cannot be shared by several processes this way (one writer, no
cross-process wake-ups): ``--workers`` above 1 needs PostgreSQL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
from typing import Any, Final

import trio

from chatcli.errors import RelayError, UsageError
from chatcli.relay.config import RelayConfig

__all__ = ["check_workers", "reuse_port_listeners", "run_workers", "worker_entry"]

log = logging.getLogger("chatcli.relay.workers")

ADDRESS_PREFIX: Final = "relay address: "
START_TIMEOUT: Final = 60.0
_MAX_RESTART_DELAY: Final = 30.0


def check_workers(config: RelayConfig, workers: int) -> None:
    """Refuse what cannot work: several workers need PostgreSQL and a port."""
    from chatcli.relay.store.postgres import is_postgres_url

    if workers < 1:
        raise UsageError("--workers must be at least 1.")
    if workers > 1 and not is_postgres_url(config.db):
        raise UsageError(
            "--workers above 1 needs PostgreSQL (--db postgresql://USER@HOST:PORT/DB): "
            "SQLite serves one process. Use `chatcli relay migrate` to move.")


def _reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """Bind (not listen) host:port with SO_REUSEPORT: fixes the port for all workers."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock, int(sock.getsockname()[1])


async def reuse_port_listeners(host: str, port: int,
                               tls: ssl.SSLContext | None = None) -> list[Any]:
    """Listening sockets on host:port with SO_REUSEPORT (one per address family)."""
    infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM,
                                          flags=trio.socket.AI_PASSIVE)
    listeners: list[Any] = []
    seen: set[Any] = set()
    try:
        for family, kind, proto, _, address in infos:
            if address in seen:
                continue
            seen.add(address)
            sock = trio.socket.socket(family, kind, proto)
            try:
                sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
                sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
                if family == trio.socket.AF_INET6:
                    sock.setsockopt(trio.socket.IPPROTO_IPV6, trio.socket.IPV6_V6ONLY, 1)
                await sock.bind(address)
                sock.listen(1024)
            except OSError:
                sock.close()
                raise
            listener: Any = trio.SocketListener(sock)
            if tls is not None:
                listener = trio.SSLListener(listener, tls, https_compatible=False)
            listeners.append(listener)
    except OSError:
        for listener in listeners:
            await listener.aclose()
        raise
    return listeners


def _worker_relay_class() -> type[Any]:
    from chatcli.relay.server import Relay

    class _WorkerRelay(Relay):
        """A relay whose listening sockets share the port with its siblings."""

        async def _listeners(self) -> list[Any]:
            cfg = self.config
            context = None
            if cfg.tls:
                assert cfg.tls_cert is not None and cfg.tls_key is not None
                context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                context.load_cert_chain(cfg.tls_cert, cfg.tls_key)
            return await reuse_port_listeners(cfg.host, cfg.port, context)

    return _WorkerRelay


# ------------------------------------------------------------------ parent


class _Supervisor:
    def __init__(self, config: RelayConfig, workers: int) -> None:
        self.config = config
        self.workers = workers
        self.procs: dict[int, trio.Process] = {}
        self.stopping = False
        self.ready = [trio.Event() for _ in range(workers)]
        self.address: str | None = None
        self.restarts = 0

    def _child_argv(self, index: int) -> list[str]:
        settings = dataclasses.asdict(self.config)
        if self.config.metrics_port:
            # One metrics endpoint per worker: --metrics-port, +1, +2...
            settings["metrics_port"] = self.config.metrics_port + index
        return [sys.executable, "-m", "chatcli.relay.workers", json.dumps(settings),
                str(index)]

    async def run_slot(self, index: int) -> None:
        delay = 0.5
        while not self.stopping:
            started = trio.current_time()
            proc = await trio.lowlevel.open_process(
                self._child_argv(index), stdout=subprocess.PIPE, stdin=subprocess.PIPE)
            self.procs[index] = proc
            try:
                assert proc.stdout is not None
                await self._read_stdout(index, proc.stdout)
                code = await proc.wait()
            finally:
                self.procs.pop(index, None)
                if proc.stdin is not None:
                    await proc.stdin.aclose()
            if self.stopping:
                return
            if not self.ready[index].is_set():
                raise RelayError(f"Relay worker {index} failed to start (exit status {code}).")
            self.restarts += 1
            log.warning("relay worker died; restarting", extra={"fields": {
                "worker": index, "status": code}})
            if trio.current_time() - started > 60:
                delay = 0.5
            await trio.sleep(delay)
            delay = min(delay * 2, _MAX_RESTART_DELAY)

    async def _read_stdout(self, index: int, stream: trio.abc.ReceiveStream) -> None:
        buffer = b""
        async for chunk in stream:
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                text = line.decode("utf-8", "replace")
                if text.startswith(ADDRESS_PREFIX):
                    self.address = text[len(ADDRESS_PREFIX):].strip()
                    self.ready[index].set()

    def signal_all(self, sig: int) -> None:
        for proc in list(self.procs.values()):
            with contextlib.suppress(OSError):
                proc.send_signal(sig)


async def _supervise(config: RelayConfig, workers: int,
                     task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    reserve, port = _reserve_port(config.host, config.port)
    sup = _Supervisor(config.replace(port=port), workers)
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                for index in range(workers):
                    nursery.start_soon(sup.run_slot, index)
                with trio.fail_after(START_TIMEOUT):
                    for event in sup.ready:
                        await event.wait()
                assert sup.address is not None
                task_status.started(sup.address)
                async for _ in signals:
                    break
                # Graceful: each worker finishes its commits and says Bye; the
                # slots return as their workers exit, or are cut off after the grace.
                sup.stopping = True
                sup.signal_all(signal.SIGTERM)
                nursery.cancel_scope.deadline = (trio.current_time()
                                                 + config.shutdown_grace + 10)
    except trio.TooSlowError:
        raise RelayError("The relay workers did not start in time.") from None
    finally:
        sup.stopping = True
        sup.signal_all(signal.SIGKILL)
        reserve.close()


def run_workers(config: RelayConfig, workers: int) -> None:
    """Run ``workers`` relay processes until SIGTERM/SIGINT; print the address once."""
    check_workers(config, workers)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            address = await nursery.start(_supervise, config, workers)
            sys.stdout.write(f"{ADDRESS_PREFIX}{address}\n")
            sys.stdout.flush()
            log.info("relay workers running", extra={"fields": {"workers": workers}})

    trio.run(main)


# ------------------------------------------------------------------ worker


async def _worker_main(config: RelayConfig) -> None:
    relay_class = _worker_relay_class()
    relay = relay_class(config)

    async def watch_signals() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                relay.shutdown()
                return

    async def watch_parent() -> None:
        # Our stdin is a pipe the parent never writes to: it closes when the
        # parent dies, however. (PR_SET_PDEATHSIG would follow the thread
        # that started us, not the parent process.)
        stdin = trio.lowlevel.FdStream(os.dup(0))
        async with stdin:
            while await stdin.receive_some(1024):
                pass
        log.warning("the supervising process is gone; shutting down")
        relay.shutdown()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_signals)
        nursery.start_soon(watch_parent)
        await nursery.start(relay.serve)
        sys.stdout.write(f"{ADDRESS_PREFIX}{relay.address}\n")
        sys.stdout.flush()
        await relay.wait_stopped()
        nursery.cancel_scope.cancel()


def worker_entry(argv: list[str]) -> int:
    """``python -m chatcli.relay.workers CONFIG_JSON INDEX``: one worker."""
    from chatcli.relay.logging import setup_logging

    config = RelayConfig(**json.loads(argv[0]))
    setup_logging(json_lines=config.log_json, level=config.log_level)
    sys.setswitchinterval(0.0005)   # as `relay serve`: quick hand-overs to threads
    try:
        trio.run(_worker_main, config)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        log.error("relay worker failed", extra={"fields": {
            "error": type(exc).__name__, "pid": os.getpid()}})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(worker_entry(sys.argv[1:]))
