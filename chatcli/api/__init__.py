"""The front-end-neutral API: one method per thing a front end can do.

``schema`` names each method and its parameters, ``errors`` the stable error
codes, ``events`` the JSON of each event, ``local`` the implementation over
an unlocked :class:`chatcli.client.service.ChatClient`. The CLI, ``chatcli
chat`` and the daemon's JSON-RPC server all call the same methods and get
the same plain JSON back (docs/api.md)."""
