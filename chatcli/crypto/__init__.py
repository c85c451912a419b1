"""Pure, synchronous cryptography for chatcli, on libsodium (pynacl).

No I/O, no clocks, no trio/click/peewee: functions that need the time take
``now``. See ``docs/architecture.md`` for the API and ``docs/protocol.md``
(part 1) for every construction and byte layout.
"""
