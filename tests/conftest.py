"""Shared test configuration."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_PYCACHE_OWNER = "_CHATCLI_TESTS_PYCACHE_OWNER"


def pytest_configure(config: pytest.Config) -> None:
    """Let the Python processes the tests start cache their bytecode.

    End-to-end and relay tests start ``chatcli`` commands, relays and storage
    processes by the hundred. With ``PYTHONDONTWRITEBYTECODE`` set, each of
    them compiled every chatcli module from source again (about a quarter of
    a command's CPU time). This keeps the source tree clean all the same: the
    bytecode goes to a directory of this run (``PYTHONPYCACHEPREFIX``), removed
    at the end, and shared by the xdist workers, which inherit the environment.
    An explicit ``PYTHONPYCACHEPREFIX`` is left as it is.
    """
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or os.environ.get("PYTHONPYCACHEPREFIX"):
        return
    prefix = tempfile.mkdtemp(prefix="chatcli-tests-pycache-")
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    os.environ[_PYCACHE_OWNER] = str(os.getpid())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Test files with a ``slow`` test (those that start real processes) run
    first, each file in one piece, the others in their usual order after them.

    With ``--dist loadfile --no-loadscope-reorder`` (pyproject's addopts; only
    used with ``-n``), xdist hands out whole files in this order as workers
    come free: a file's module-scoped relay and saved users are built on one
    worker only, the longest files start early, and the short ones fill the
    end instead of one worker finishing a long file alone.
    """
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: keeps each file's order


def pytest_unconfigure(config: pytest.Config) -> None:
    if os.environ.get(_PYCACHE_OWNER) == str(os.getpid()):
        shutil.rmtree(os.environ["PYTHONPYCACHEPREFIX"], ignore_errors=True)
