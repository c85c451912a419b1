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


def test_a_conversation_consumer_takes_only_its_conversation() -> None:
    """A chat window with bob (``contact="bob"``) takes bob's messages, receipts,
    key changes and the own sends to bob; carol's message and bob's message in
    a group keep waiting for the next `receive`."""
    hub = EventHub()
    from_bob = {"type": "message", "from": "bob", "text": "hi", "group": None}
    hub.publish(from_bob)
    window = hub.subscribe(consumer=True, backlog=True, contact="bob")
    assert window.replayed == 1 and window.events.receive_nowait() == from_bob
    for_window = [
        {"type": "message", "from": "bob", "text": "again", "group": None},
        {"type": "receipt", "from": "bob", "kind": "read", "ids": ["x"]},
        {"type": "sent", "id": "y", "to": "bob", "text": "mine", "sent_at": 1, "stored": True},
        {"type": "key_change", "contact": "bob", "fingerprint": "f", "pending": True,
         "text": "!", "warning": True},
    ]
    others = [
        {"type": "message", "from": "carol", "text": "not bob's", "group": None},
        {"type": "message", "from": "bob", "text": "in the team", "group": "team"},
        {"type": "sent", "id": "z", "to": "team", "text": "t", "sent_at": 1, "stored": True,
         "group": "team"},
    ]
    for event in for_window + others:
        hub.publish(event)
    assert [window.events.receive_nowait() for _ in for_window] == for_window
    assert hub.backlog == len(others)
    team = hub.subscribe(consumer=True, backlog=True, contact="team")
    assert team.replayed == 2
    rest = hub.subscribe(consumer=True, backlog=True)
    assert rest.replayed == 1 and rest.events.receive_nowait()["from"] == "carol"
