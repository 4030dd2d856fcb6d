"""Bulk provisioning against the real Kuzzle 2.56.

What the SDK promises: one result per spec; every key delivered is distinct (no shared token) and
accepted by the server; the server holds exactly the keys delivered (none lost, none stray).
Kuzzle makes this hard: one user's keys created in the same second with the same lifetime share one
token, and (since 2.34) an API key is verified among its user's first 10 keys only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from illumass import ApiKey, ApiKeyRejectedError, ApiKeySpec, AsyncIllumass, ProvisionResult

from .conftest import Account, Kuzzle, grew

pytestmark = [pytest.mark.kuzzle, pytest.mark.anyio]


def check_delivered(server: Kuzzle, account: Account, results: Sequence[ProvisionResult]) -> list[ApiKey]:
    """Assert the promise above for ``results`` (every broken part of it, in one message); return
    the delivered keys."""
    keys = [r.api_key for r in results if r.api_key is not None]
    tokens = [k.token.get_secret_value() for k in keys if k.token is not None]
    assert len(tokens) == len(keys), "a delivered key came without its token"
    problems = []
    held = server.key_ids(server.login(*account))
    if held != {k.id for k in keys}:
        problems.append(f"server holds {len(held)} keys for {len(keys)} delivered (ids differ)")
    shared = len(tokens) - len(set(tokens))
    if shared:
        problems.append(f"{shared} of {len(tokens)} delivered keys share a token with another")
    refused = [k.id for k, t in zip(keys, tokens, strict=True) if not server.accepts(t)]
    if refused:
        problems.append(f"{len(refused)} of {len(keys)} delivered keys are refused by the server")
    assert not problems, "; ".join(problems)
    return keys


async def test_create_api_keys_capped_server(kuzzle: Kuzzle, account: Account) -> None:
    """30 keys for one user on the production-like server, which verifies a user's first 10 keys
    only: 10 delivered, the rest refused with ApiKeyRejectedError, and none of those left behind."""
    async with AsyncIllumass(kuzzle.url, email=account.email, password=account.password) as client:
        results = await client.auth.create_api_keys([f"capped {i}" for i in range(30)], concurrency=4)
    assert [r.index for r in results] == list(range(30))
    assert [r.spec.description for r in results] == [f"capped {i}" for i in range(30)]
    refused = [r.error for r in results if not r.ok]
    assert all(isinstance(e, ApiKeyRejectedError) and "first 10 API keys" in str(e) for e in refused)
    assert len(check_delivered(kuzzle, account, results)) == 10


async def test_create_api_keys_uncapped(kuzzle_uncapped: Kuzzle, uncapped_account: Account) -> None:
    server, account = kuzzle_uncapped, uncapped_account
    seen: list[int] = []
    specs: list[str | ApiKeySpec] = [ApiKeySpec(f"device {i}", expires_in="2h") for i in range(25)]
    specs += [ApiKeySpec("with id", key_id="bulk-own-id"), "plain string"]
    async with AsyncIllumass(server.url, email=account.email, password=account.password) as client:
        results = await client.auth.create_api_keys(
            specs, concurrency=8, on_result=lambda r: seen.append(r.index)
        )
    assert sorted(seen) == list(range(27))
    assert all(r.ok for r in results), [str(r.error) for r in results if not r.ok]
    keys = check_delivered(server, account, results)
    assert keys[25].id == "bulk-own-id"
    assert keys[26].description == "plain string"


async def test_provision_stream_uncapped(kuzzle_uncapped: Kuzzle, uncapped_account: Account) -> None:
    server, account = kuzzle_uncapped, uncapped_account
    async with (
        AsyncIllumass(server.url, email=account.email, password=account.password) as client,
        client.auth.provision((f"stream {i}" for i in range(20)), concurrency=6) as stream,
    ):
        results = [r async for r in stream]
    assert sorted(r.index for r in results) == list(range(20))
    assert all(r.ok for r in results), [str(r.error) for r in results if not r.ok]
    check_delivered(server, account, results)


async def test_provision_left_early_keeps_only_delivered(
    kuzzle_uncapped: Kuzzle, uncapped_account: Account
) -> None:
    server, account = kuzzle_uncapped, uncapped_account
    delivered: list[ProvisionResult] = []
    async with (
        AsyncIllumass(server.url, email=account.email, password=account.password) as client,
        client.auth.provision((f"early {i}" for i in range(40)), concurrency=8) as stream,
    ):
        async for result in stream:
            delivered.append(result)
            if len(delivered) == 5:
                break
    assert len(delivered) == 5
    check_delivered(server, account, delivered)  # the keys created but not delivered were revoked


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"kind": "drop_after", "times": 3}, id="responses-lost-after-kuzzle-acted"),
        pytest.param({"kind": "status", "times": 3, "status": 503}, id="503-overloaded-before-kuzzle"),
    ],
)
async def test_bulk_faults_uncapped(
    kuzzle_uncapped: Kuzzle, uncapped_account: Account, fault: dict[str, Any]
) -> None:
    """Creates lost or refused mid-batch: still exactly one key per spec, each usable."""
    server, account = kuzzle_uncapped, uncapped_account
    async with AsyncIllumass(server.url, email=account.email, password=account.password) as client:
        await client.auth.login()
        server.fault(action="create", **fault)
        before = server.stats()
        results = await client.auth.create_api_keys([f"faulty {i}" for i in range(10)], concurrency=4)
        counted = grew(before, server.stats())
    assert counted[f"fault:{fault['kind']}:create"] == fault["times"]
    assert all(r.ok for r in results), [str(r.error) for r in results if not r.ok]
    check_delivered(server, account, results)
