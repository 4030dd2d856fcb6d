"""Bulk at scale against the real Kuzzle 2.56: 500 keys, each unique and usable, at full speed,
with creates answered 500 retried, and keys of two clients (as two processes) kept apart."""

from __future__ import annotations

import time

import anyio
import pytest

from illumass import AsyncIllumass, ProvisionResult

from .conftest import Account, Kuzzle, grew
from .test_bulk import check_delivered

pytestmark = [pytest.mark.kuzzle, pytest.mark.anyio]

KEYS = 500


async def test_500_keys_unique_usable_and_retried_on_500(
    kuzzle_uncapped: Kuzzle, uncapped_account: Account
) -> None:
    """Elasticsearch's own overload reaches clients as 500 services.storage.unexpected_error:
    those creates are retried under their ids, and all 500 keys work, none shared."""
    server, account = kuzzle_uncapped, uncapped_account
    async with AsyncIllumass(server.url, email=account.email, password=account.password) as client:
        await client.auth.login()
        server.fault(
            kind="status", action="create", times=25, status=500, error_id="services.storage.unexpected_error"
        )
        before = server.stats()
        started = time.monotonic()
        results = await client.auth.create_api_keys([f"fleet {i}" for i in range(KEYS)], concurrency=16)
        wall = time.monotonic() - started
        counted = grew(before, server.stats())
    assert counted["fault:status:create"] == 25
    assert all(r.ok for r in results), {str(r.error) for r in results if not r.ok}
    assert len(check_delivered(server, account, results)) == KEYS
    print(f"\n{KEYS} keys at concurrency 16 on the real server: {wall:.1f} s, {KEYS / wall:.0f} keys/s")


async def test_two_clients_of_one_user_get_distinct_tokens(
    kuzzle_uncapped: Kuzzle, uncapped_account: Account
) -> None:
    """Two clients (as two processes) each vary lifetimes on their own, so their keys collide; the
    visibility barrier finds the twins on the server and creates them again."""
    server, account = kuzzle_uncapped, uncapped_account
    results: list[ProvisionResult] = []

    async def one_client(name: str) -> None:
        async with AsyncIllumass(server.url, email=account.email, password=account.password) as client:
            results.extend(
                await client.auth.create_api_keys([f"{name} {i}" for i in range(150)], concurrency=8)
            )

    before = server.stats()
    async with anyio.create_task_group() as tg:
        tg.start_soon(one_client, "left")
        tg.start_soon(one_client, "right")
    replaced = grew(before, server.stats())["delete"]
    assert all(r.ok for r in results), {str(r.error) for r in results if not r.ok}
    assert len(check_delivered(server, account, results)) == 300
    assert replaced > 0  # twins were made, and made again
