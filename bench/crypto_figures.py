"""Figures for the crypto core, printed as one JSON object.

    .venv/bin/python bench/crypto_figures.py [NAME ...]

Each figure is a function registered with ``@figure("name")`` returning a
dict; add new ones the same way. With names, only those figures run.
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from chatcli.crypto.envelope import open_envelope, seal_envelope
from chatcli.crypto.invite import create_invite, parse_invite
from chatcli.crypto.keys import DHKeyPair, IdentityKeyPair, MailboxKeyPair, relay_fingerprint
from chatcli.crypto.keystore import MODERATE, read_keystore, write_keystore
from chatcli.crypto.ratchet import RatchetSession
from chatcli.crypto.sender_keys import SenderKeyReceiver, SenderKeyState
from chatcli.crypto.x3dh import initiate, respond

Figure = Callable[[], dict[str, object]]
FIGURES: dict[str, Figure] = {}


def figure(name: str) -> Callable[[Figure], Figure]:
    def register(func: Figure) -> Figure:
        FIGURES[name] = func
        return func

    return register


def _best_of(runs: int, func: Callable[[], object]) -> float:
    """The fastest of ``runs`` timings of ``func``, in seconds."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def _rate(func: Callable[[], object], seconds: float = 1.0) -> float:
    """Calls of ``func`` per second over about ``seconds``."""
    count = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        func()
        count += 1
    return count / elapsed


@figure("keystore_unlock")
def keystore_unlock() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "keystore"
        write_keystore(path, b"\x01" * 200, "a passphrase for the benchmark")
        seconds = _best_of(3, lambda: read_keystore(path, "a passphrase for the benchmark"))
    return {
        "seconds": round(seconds, 3),
        "argon2id_opslimit": MODERATE.opslimit,
        "argon2id_memlimit_mib": MODERATE.memlimit // (1024 * 1024),
    }


@figure("invite_accept")
def invite_accept() -> dict[str, object]:
    """Parse and verify an invite, then X3DH on both sides (initiate + respond)."""
    alice, bob = IdentityKeyPair.generate(), IdentityKeyPair.generate()
    prekey = DHKeyPair.generate()
    link = create_invite(
        bob,
        relay_url="wss://relay.example.org:8765/#" + relay_fingerprint(bytes(32)),
        mailbox=bytes(16),
        capability=bytes(32),
        mailbox_key=MailboxKeyPair.generate().box_public,
        prekey_public=prekey.public,
        expires_at=2**40,
    ).to_link()

    def handshake() -> None:
        initiated = initiate(alice, bob.public, prekey.public)
        respond(bob, prekey, alice.public, initiated.ephemeral_public)

    def accept() -> None:
        invite = parse_invite(link, now=0)
        initiated = initiate(alice, invite.identity, invite.prekey)
        respond(bob, prekey, alice.public, initiated.ephemeral_public)

    return {
        "x3dh_initiate_plus_respond_ms": round(_best_of(200, handshake) * 1000, 3),
        "parse_invite_plus_x3dh_ms": round(_best_of(200, accept) * 1000, 3),
        "invite_link_chars": len(link),
    }


@figure("envelope_1k")
def envelope_1k() -> dict[str, object]:
    mailbox = MailboxKeyPair.generate()
    sender = IdentityKeyPair.generate().public
    body = b"m" * 1024

    def roundtrip() -> None:
        open_envelope(mailbox, seal_envelope(mailbox.box_public, sender, body))

    return {
        "seal_plus_open_per_second": round(_rate(roundtrip)),
        "sealed_bytes": len(seal_envelope(mailbox.box_public, sender, body)),
    }


@figure("ratchet_encrypt_decrypt_per_s_1KiB")
def ratchet_encrypt_decrypt() -> dict[str, object]:
    """Double Ratchet (header encryption): encrypt on one side, decrypt on the other."""
    sk, ad, prekey = b"\x07" * 32, b"\x08" * 64, DHKeyPair.generate()
    alice = RatchetSession.initiator(sk, prekey.public, ad)
    bob = RatchetSession.responder(sk, prekey, ad)
    body = b"m" * 1024
    turn = [0]

    def one_way() -> None:
        bob.decrypt(alice.encrypt(body))

    def alternating() -> None:  # every message steps the DH ratchet
        turn[0] ^= 1
        if turn[0]:
            alice.decrypt(bob.encrypt(body))
        else:
            bob.decrypt(alice.encrypt(body))

    return {
        "per_second": round(_rate(one_way)),
        "alternating_per_second": round(_rate(alternating)),
        "message_bytes": len(alice.encrypt(body)),
    }


@figure("sender_key_encrypt_decrypt_per_s_1KiB")
def sender_key_encrypt_decrypt() -> dict[str, object]:
    """Group sender key: encrypt and sign once, verify and decrypt once."""
    sender = SenderKeyState.generate()
    receiver = SenderKeyReceiver.from_distribution(sender.distribution())
    body = b"m" * 1024

    def roundtrip() -> None:
        receiver.decrypt(sender.encrypt(body))

    return {
        "per_second": round(_rate(roundtrip)),
        "message_bytes": len(sender.encrypt(body)),
    }


def main(names: list[str]) -> None:
    unknown = [name for name in names if name not in FIGURES]
    if unknown:
        raise SystemExit(f"unknown figure(s): {', '.join(unknown)}; known: {', '.join(FIGURES)}")
    results: dict[str, object] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    for name in names or list(FIGURES):
        results[name] = FIGURES[name]()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
