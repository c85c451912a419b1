"""Group chats (``docs/protocol.md``, part 3, "Groups").

* :mod:`~chatcli.client.groups.membership`: the pure membership state machine
  (no I/O; property-tested);
* :mod:`~chatcli.client.groups.wire`: the group messages and signed operations;
* :mod:`~chatcli.client.groups.models`: the local tables;
* :mod:`~chatcli.client.groups.pairwise`: two-way sessions between members;
* :mod:`~chatcli.client.groups.core`, :mod:`~chatcli.client.groups.inbox`,
  :mod:`~chatcli.client.groups.commands`, :mod:`~chatcli.client.groups.queries`,
  :mod:`~chatcli.client.groups.delivery`: the synchronous group core, one
  concern each; :mod:`~chatcli.client.groups.backup`: groups in key backups;
* :mod:`~chatcli.client.groups.service`: :class:`GroupService`, made of them,
  and its network shell (deposits, capabilities).

Import the submodules directly; this package imports nothing, so that the
CLI's start-up stays light.
"""
