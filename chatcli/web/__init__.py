"""The web front end: a single-page app served on 127.0.0.1 to one user.

``static/`` holds the page (plain HTML, CSS and JavaScript, no build step,
nothing loaded from the network). :mod:`chatcli.web.server` serves it, trades
a one-time login token for a session cookie, and forwards JSON-RPC 2.0 frames
on ``/ws`` to an API object (the daemon's ``LocalApi``). The request checks
(Host, Origin, cookies, headers) are sans-I/O in :mod:`chatcli.web.policy`
and :mod:`chatcli.web.auth`.
"""

from chatcli.web.server import EventSource, WebApi, WebServer

__all__ = ["EventSource", "WebApi", "WebServer"]
