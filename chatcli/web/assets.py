"""The page's files, read from the installed package (importlib.resources)."""

from __future__ import annotations

import functools
import re
from importlib import resources

# Flat names only: no folders, no dot-files, nothing outside static/.
_ASSET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*\.(?:html|css|js|svg|png|ico)")


@functools.cache
def read_asset(name: str) -> bytes | None:
    """The bytes of static/NAME, or None when there is no such asset."""
    if not _ASSET_NAME.fullmatch(name):
        return None
    entry = resources.files("chatcli.web").joinpath("static", name)
    if not entry.is_file():
        return None
    return entry.read_bytes()
