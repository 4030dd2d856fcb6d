"""pytest plugin (auto-loaded once illumass is installed): the ``illumass_server`` fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._server import FakeIllumass


@pytest.fixture
def illumass_server() -> Iterator[FakeIllumass]:
    """A fresh FakeIllumass on a free loopback port, served from a background thread.

    Works for sync and async tests alike; log in with ``server.email`` / ``server.password``.
    """
    with FakeIllumass() as server:
        yield server
