"""Sans-I/O request checks and response headers of the web front end.

The server answers only requests addressed to itself by its loopback name
(Host ``127.0.0.1:PORT`` or ``localhost:PORT``: a DNS-rebound name is
refused) and coming from its own pages (Origin, Sec-Fetch-Site).
"""

from __future__ import annotations

from collections.abc import Iterable
from http.cookies import CookieError, SimpleCookie

SESSION_COOKIE = "chatcli_session"

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}

# Images a browser may show inline from the downloads folder; everything else
# (SVG included: it can carry script) is offered as a download.
INLINE_IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}


def allowed_hosts(port: int) -> frozenset[str]:
    """The Host header values this server answers to."""
    return frozenset({f"127.0.0.1:{port}", f"localhost:{port}"})


def allowed_origins(port: int) -> frozenset[str]:
    """The Origin header values of this server's own pages."""
    return frozenset(f"http://{host}" for host in allowed_hosts(port))


def host_ok(host: str | None, port: int) -> bool:
    return host is not None and host.lower() in allowed_hosts(port)


def origin_ok(origin: str | None, port: int, *, required: bool) -> bool:
    """Whether a request's Origin is one of ours (absent is fine unless ``required``).

    Browsers send Origin on every WebSocket handshake and every POST, so both
    require it; a plain navigation may lack it.
    """
    if origin is None:
        return not required
    return origin.lower() in allowed_origins(port)


def fetch_site_ok(sec_fetch_site: str | None) -> bool:
    """Refuse what a browser marks as coming from another site."""
    return sec_fetch_site is None or sec_fetch_site.lower() in {"same-origin", "none"}


def cookie_value(cookie_headers: Iterable[str], name: str = SESSION_COOKIE) -> str | None:
    """The value of cookie ``name`` in the request's Cookie headers, if any."""
    for header in cookie_headers:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(header)
        except CookieError:
            continue
        if name in jar:
            return jar[name].value
    return None


def session_cookie(value: str) -> str:
    """The Set-Cookie value that gives a browser its session."""
    return f"{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/"


def content_security_policy(port: int) -> str:
    """A strict policy: only this origin, no inline script or style, no framing."""
    sockets = " ".join(f"ws://{host}" for host in sorted(allowed_hosts(port)))
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        "img-src 'self' blob:; "
        f"connect-src 'self' {sockets}; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def security_headers(port: int) -> list[tuple[str, str]]:
    """Headers sent with every response."""
    return [
        ("Content-Security-Policy", content_security_policy(port)),
        ("X-Frame-Options", "DENY"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
        ("Cross-Origin-Resource-Policy", "same-origin"),
        ("Cache-Control", "no-store"),
    ]


def content_type(name: str) -> str:
    """The Content-Type of a static asset, by its extension."""
    dot = name.rfind(".")
    return _CONTENT_TYPES.get(name[dot:].lower() if dot >= 0 else "", "application/octet-stream")
