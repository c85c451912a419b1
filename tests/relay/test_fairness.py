"""The fair queue of storage work (chatcli/relay/fairness.py)."""

from __future__ import annotations

from collections import Counter

from chatcli.relay.fairness import FairQueue


def test_a_newcomer_goes_before_a_backlog() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(100):
        queue.put("flooder", "10.0.0.1", f"f{i}", 64_000)
    assert queue.pop()[0] == "f0"
    queue.put("victim", "10.0.0.2", "v", 600)
    assert queue.pop()[0] == "v"   # the backlog's tags are ahead of "now"
    assert queue.pop()[0] == "f1"
    assert queue.depth("flooder") == 98 and queue.depth("victim") == 0


def test_each_source_gets_one_share_however_many_connections() -> None:
    queue: FairQueue[str] = FairQueue()
    for _ in range(50):
        for conn in range(4):             # one address, four connections
            queue.put(("a", conn), "10.0.0.1", "a", 1000)
        queue.put("b", "10.0.0.2", "b", 1000)
    taken = Counter(queue.pop()[0] for _ in range(80))
    # Half each, give or take the shares fixed as the connections arrived.
    assert abs(taken["a"] - taken["b"]) <= 8, taken


def test_shares_follow_cost() -> None:
    queue: FairQueue[str] = FairQueue()
    for _ in range(200):
        queue.put("big", "x", "big", 64_000)
        queue.put("small", "y", "small", 1_000)
    taken = Counter(queue.pop()[0] for _ in range(130))
    # Equal bytes: 64 small jobs per big one.
    assert taken["big"] <= 3 and len(queue) == 400 - 130
