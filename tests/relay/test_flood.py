"""Issue 16 items 2-3: a flooder's frames cost little, and cannot crowd out or
out-rate-limit anyone else."""

from __future__ import annotations

from pathlib import Path

from chatcli.protocol import codes, frames
from tests.relay.helpers import Client, capability, make_config, running_relay


async def deposit_many(client: Client, mailbox: bytes, caps: list[bytes]) -> list[str | None]:
    items = [frames.DepositItem(mailbox=mailbox, cap=cap, payload=b"x") for cap in caps]
    answer = await client.request(frames.Deposit(req=client.req(), items=items))
    assert isinstance(answer, frames.DepositResult), answer
    return answer.errors


async def test_invalid_capabilities_own_no_rate_limiter(tmp_path: Path) -> None:
    # In a thread (storage_process=False), so that the test reads the limiter.
    config = make_config(tmp_path, capability_rate=0.01, capability_burst=3.0,
                         storage_process=False)
    async with running_relay(config) as h:
        _, mailbox, cap = await h.owner()
        sender = await h.connect()
        for _ in range(4):
            errors = await deposit_many(sender, mailbox, [capability() for _ in range(200)])
            assert errors == [codes.BAD_CAPABILITY] * 200
        limits = h.relay.mailboxes.cap_limits
        assert limits is not None and len(limits) == 0
        errors = await deposit_many(sender, mailbox, [cap] * 5)
        assert errors == [None, None, None, codes.RATE_LIMITED, codes.RATE_LIMITED]
        assert len(limits) == 1
        # Invalid capabilities interleaved with the valid one do not refill it.
        mixed = [capability() for _ in range(100)] + [cap]
        assert (await deposit_many(sender, mailbox, mixed))[-1] == codes.RATE_LIMITED
        assert len(limits) == 1
