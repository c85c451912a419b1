"""One-time login tokens and session cookies (sans-I/O: callers pass ``now``).

``chatcli web`` prints or opens ``/login?token=T``; the first request with a
live T gets a session cookie and T is spent. Only SHA-256 digests of tokens
and session ids are kept, so that looking one up compares digests rather than
the secrets themselves.
"""

from __future__ import annotations

import hashlib
import secrets

LOGIN_TOKEN_TTL = 120.0
SESSION_TTL = 24 * 3600.0
_MAX_PENDING_TOKENS = 16


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


class WebAuth:
    """The login tokens not yet used and the sessions they opened."""

    def __init__(
        self, *, token_ttl: float = LOGIN_TOKEN_TTL, session_ttl: float = SESSION_TTL
    ) -> None:
        self._token_ttl = token_ttl
        self._session_ttl = session_ttl
        self._tokens: dict[bytes, float] = {}
        self._sessions: dict[bytes, float] = {}

    def issue_token(self, now: float) -> str:
        """A new single-use login token, valid for ``token_ttl`` seconds."""
        self._forget_expired(now)
        while len(self._tokens) >= _MAX_PENDING_TOKENS:
            oldest = min(self._tokens, key=self._tokens.__getitem__)
            del self._tokens[oldest]
        token = secrets.token_urlsafe(32)
        self._tokens[_digest(token)] = now + self._token_ttl
        return token

    def redeem(self, token: str, now: float) -> str | None:
        """Spend ``token``: a new session id, or None for an unknown, used or expired one."""
        expires = self._tokens.pop(_digest(token), None)
        if expires is None or now >= expires:
            return None
        session = secrets.token_urlsafe(32)
        self._sessions[_digest(session)] = now + self._session_ttl
        return session

    def session_ok(self, session: str | None, now: float) -> bool:
        if not session:
            return False
        expires = self._sessions.get(_digest(session))
        return expires is not None and now < expires

    def end_sessions(self) -> None:
        """Log every browser out (the identity was locked)."""
        self._sessions.clear()

    def _forget_expired(self, now: float) -> None:
        for table in (self._tokens, self._sessions):
            for key in [key for key, expires in table.items() if now >= expires]:
                del table[key]
