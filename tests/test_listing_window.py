"""Listing an account past Elasticsearch's 10,000-hit window: every key once, or a clear error."""

from __future__ import annotations

import time

import pytest

from illumass import AsyncIllumass, IllumassError
from illumass.testing import FakeIllumass, StoredApiKey

pytestmark = pytest.mark.anyio

HOUR_MS = 3_600_000


def seed(server: FakeIllumass, count: int, *, expires_at: float | None = None, prefix: str = "k") -> set[str]:
    """Store ``count`` keys of the server's user directly (creating 25,000 through HTTP is slow)."""
    now = int(time.time() * 1000)
    ids = set()
    for i in range(count):
        if expires_at is not None:
            expiry = expires_at
        elif i % 50 == 0:
            expiry = -1  # some keys never expire
        else:
            expiry = now + HOUR_MS + i * 7919 % 10_000_000  # spread over a few hours
        key_id = f"{prefix}{i:06d}"
        ttl = -1 if expiry == -1 else expiry - now
        parity = "odd" if i % 2 else "even"
        description = f"{prefix} {parity}"
        key = StoredApiKey(key_id, server.user_id(), description, "t", f"fp{key_id}", expiry, ttl, now)
        server.index.add(key)
        ids.add(key_id)
    server.index.refresh()
    return ids


async def test_an_account_of_25000_keys_lists_completely(server: FakeIllumass) -> None:
    ids = seed(server, 25_000)
    async with AsyncIllumass(server.url, email=server.email, password=server.password) as client:
        listed = [key.id async for key in client.auth.iter_api_keys(page_size=1000)]
    assert len(listed) == len(set(listed)) == 25_000
    assert set(listed) == ids
    # The window was used up first (10 pages), then ranges of expiresAt took over.
    assert server.stats.requests["searchApiKeys"] > 25_000 // 1000


async def test_a_query_is_kept_past_the_window(server: FakeIllumass) -> None:
    seed(server, 24_000)
    wanted = {k.id for k in server.api_keys.values() if k.description.endswith("odd")}
    query = {"match": {"description": "odd"}}
    async with AsyncIllumass(server.url, email=server.email, password=server.password) as client:
        listed = [key.id async for key in client.auth.iter_api_keys(query, page_size=1000)]
    assert len(wanted) > 10_000
    assert len(listed) == len(set(listed)) and set(listed) == wanted


async def test_more_than_10000_keys_with_one_expiry_is_a_clear_error(server: FakeIllumass) -> None:
    seed(server, 10_050, expires_at=-1)
    async with AsyncIllumass(server.url, email=server.email, password=server.password) as client:
        listed: list[str] = []
        with pytest.raises(IllumassError, match="more than 10,000 API keys share one expiresAt"):
            async for key in client.auth.iter_api_keys(page_size=1000):
                listed.append(key.id)
    assert len(listed) == 10_000  # the window, then the error: never a silent truncation
