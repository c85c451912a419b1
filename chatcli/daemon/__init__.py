"""The chatcli daemon: one resident process per CHATCLI_HOME serving JSON-RPC 2.0.

Only the sans-I/O codec (:mod:`chatcli.daemon.jsonrpc`) exists so far.
"""
