"""The chatcli client: local store, sessions, outbox and relay connections."""
