from __future__ import annotations

import contextlib
import json
import logging
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypedDict

import pytest

from illumass import AsyncIllumass
from illumass.testing import FakeIllumass


class Backoff(TypedDict):
    retry_backoff: float
    retry_backoff_max: float


FAST: Backoff = {"retry_backoff": 0.001, "retry_backoff_max": 0.004}
"""Client kwargs for tests that retry: milliseconds of backoff instead of seconds."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def server() -> AsyncIterator[FakeIllumass]:
    """FakeIllumass on the test's own event loop."""
    # Quick index ticks and no 10-key cap: the tests of those behaviours make their own server.
    async with FakeIllumass(seed=1, refresh_interval=0.05, api_key_cap=None) as fake:
        yield fake


@pytest.fixture
async def client(server: FakeIllumass) -> AsyncIterator[AsyncIllumass]:
    """A client of `server` whose retries wait milliseconds, not seconds."""
    async with AsyncIllumass(server.url, email=server.email, password=server.password, **FAST) as c:
        yield c


@pytest.fixture
def debug_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record of every logger at DEBUG."""
    caplog.set_level(logging.DEBUG)
    return caplog


def http(method: str, url: str, body: object = None, token: str | None = None) -> tuple[int, Any]:
    """A blocking request with the standard library, for tests that run no event loop."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


@contextlib.contextmanager
def served(*args: str) -> Iterator[str]:
    """Run ``python -m <args>`` as a server process; yield the base URL it prints first."""
    proc = subprocess.Popen(
        [sys.executable, "-m", *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the server stops cleanly and exits 0
        try:
            assert proc.wait(10) == 0
        finally:
            proc.kill()
            proc.stdout.close()
