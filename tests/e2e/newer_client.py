"""Plays a newer chatcli: sends a contact content of a tag this version does
not know (``python -m tests.e2e.newer_client CONTACT``, in CHATCLI_HOME with
CHATCLI_PASSPHRASE)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import trio

from chatcli.client import messages as m
from chatcli.client.home import Home
from chatcli.client.service import ChatClient


class Poll(m.Content, frozen=True, tag="poll"):
    question: str


async def main(contact: str) -> None:
    home = Home(Path(os.environ["CHATCLI_HOME"]))
    client = ChatClient.unlock(home, os.environ["CHATCLI_PASSPHRASE"])
    try:
        row = client.get_contact(contact)
        with client.store.write():
            client._enqueue(row, Poll(question="lunch?"), kind="action")
        async with client.online():
            await client.deliver_until_stored(kinds={"action"}, contact_id=row.id)
    finally:
        client.close()


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
