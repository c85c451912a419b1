"""LocalApi over clients on the in-memory relay of tests/client."""

from __future__ import annotations

from tests.client.conftest import clients, fast_kdf, relay, trio_of

__all__ = ["clients", "fast_kdf", "relay", "trio_of"]
