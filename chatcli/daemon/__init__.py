"""The chatcli daemon: one resident process per CHATCLI_HOME serving JSON-RPC 2.0.

Building blocks: the sans-I/O codec (:mod:`.jsonrpc`), the event hub (:mod:`.hub`),
the single-instance lock (:mod:`.instance`) and the Unix socket server (:mod:`.server`).
"""
