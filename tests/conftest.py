from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import pytest

from illumass import AsyncIllumass
from illumass._transport import Backoff
from illumass.testing import FakeIllumass

FAST = Backoff(base=0.001, cap=0.004)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def server() -> AsyncIterator[FakeIllumass]:
    """FakeIllumass on the test's own event loop."""
    async with FakeIllumass(seed=1) as fake:
        yield fake


@pytest.fixture
async def client(server: FakeIllumass) -> AsyncIterator[AsyncIllumass]:
    """A client of `server` whose retries wait milliseconds, not seconds."""
    async with AsyncIllumass(server.url, email=server.email, password=server.password) as c:
        c._transport.backoff = FAST
        yield c


@pytest.fixture
def debug_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every log record of every logger at DEBUG."""
    caplog.set_level(logging.DEBUG)
    return caplog
