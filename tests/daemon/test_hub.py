"""The event hub's backlog: what arrives while no consumer listens waits for the next."""

from __future__ import annotations

from chatcli.daemon.hub import EventHub


def message(n: int) -> dict[str, object]:
    return {"type": "message", "text": f"m{n}"}


def test_events_wait_for_the_next_consumer_and_are_handed_out_once() -> None:
    hub = EventHub(queue_limit=4, backlog_limit=3)
    hub.subscribe()  # not a consumer: sees events, does not take them
    for n in range(5):
        hub.publish(message(n))
    hub.publish({"type": "typing", "from": "bob", "active": True})  # momentary: never kept
    assert hub.backlog == 3  # the oldest went first
    first = hub.subscribe(consumer=True, backlog=True)
    assert first.replayed == 3
    assert [first.events.receive_nowait()["text"] for _ in range(3)] == ["m2", "m3", "m4"]
    assert hub.backlog == 0
    hub.publish(message(9))  # a consumer listens: nothing is kept
    assert hub.backlog == 0
    assert first.events.receive_nowait()["text"] == "m9"
    hub.unsubscribe(first.id)
    assert hub.subscribe(consumer=True, backlog=True).replayed == 0


def test_a_typed_consumer_takes_only_its_types_from_the_backlog() -> None:
    hub = EventHub()
    hub.publish(message(1))
    hub.publish({"type": "receipt", "from": "bob", "kind": "read", "ids": []})
    only_messages = hub.subscribe(["message"], backlog=True)
    assert only_messages.replayed == 1
    assert hub.backlog == 1  # the receipt still waits
    assert hub.subscribe(backlog=True).replayed == 1
