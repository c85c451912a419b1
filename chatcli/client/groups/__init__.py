"""Group chats (``docs/protocol.md``, part 3, "Groups").

* :mod:`~chatcli.client.groups.membership`: the pure membership state machine
  (no I/O; property-tested);
* :mod:`~chatcli.client.groups.wire`: the group messages and signed operations;
* :mod:`~chatcli.client.groups.models`: the local tables;
* :mod:`~chatcli.client.groups.service`: :class:`GroupService`, the glue with
  the client, the sessions, the sender keys and the relays.

Import the submodules directly; this package imports nothing, so that the
CLI's start-up stays light.
"""
