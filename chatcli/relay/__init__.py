"""The chatcli relay: a Trio WebSocket server that stores sealed mailboxes,
encrypted blobs and presence, and can read none of what it stores.

Modules, one concept each (importing this package imports none of them, so
``chatcli --help`` stays fast):

- ``config``: :class:`RelayConfig`, durations, the TOML config file;
- ``server``: the Trio shell (:class:`Relay`, :func:`serve_relay`, per-connection handling);
- ``commit``: the group-commit writer; ``storage``: the storage worker contract (and
  its thread); ``storage_process``: the database work in a child process;
- ``mailbox``: mailbox rules (registration, capabilities, quotas, retention), explicit time;
- ``presence``: online state and subscriptions; ``delivery``: routing pushes to owners;
- ``blobs``: blob rules; ``limits``: token buckets;
- ``store``: the storage interface (``store.base.Store``) and its backends;
- ``metrics``, ``logging``, ``errors``, ``cli`` (``chatcli relay ...``).
"""
