"""The chatcli relay: a Trio WebSocket server that stores sealed mailboxes,
encrypted blobs and presence, and can read none of what it stores."""
