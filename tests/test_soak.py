"""Soak: provision under every fault at once and check that nothing is lost or duplicated.

CI runs 3,000 keys; `ILLUMASS_SOAK_KEYS=50000 pytest -m soak -s` is the full run.
"""

from __future__ import annotations

import json
import os
import time

import anyio
import pytest

from illumass import AsyncIllumass, IllumassError, ProvisionResult
from illumass.testing import FakeIllumass

pytestmark = [pytest.mark.anyio, pytest.mark.soak]

KEYS = int(os.environ.get("ILLUMASS_SOAK_KEYS", "3000"))


async def test_soak_under_faults(capsys: pytest.CaptureFixture[str]) -> None:
    async with FakeIllumass(seed=2026, api_key_cap=None, refresh_interval=0.05) as server:
        faults = server.faults
        faults.add("status", "createApiKey", probability=0.05, status=503)
        faults.add(
            "status", "createApiKey", probability=0.02, status=429, error_id="api.process.too_many_requests"
        )
        faults.add("drop_after", "createApiKey", probability=0.03)
        faults.add("drop_before", "createApiKey", probability=0.02)
        async with AsyncIllumass(
            server.url,
            email=server.email,
            password=server.password,
            login_expires_in="3s",
            retry_backoff=0.02,  # the invariants, not the waits
            retry_backoff_max=0.2,
        ) as client:
            results: list[ProvisionResult] = []
            forgotten = 0
            a_third = anyio.Event()

            async def forget_window() -> None:
                nonlocal forgotten
                await a_third.wait()
                for _ in range(3):  # a window in which every session token is forgotten, thrice
                    server.forget_sessions()
                    forgotten += 1
                    await anyio.sleep(0.2)

            started = time.monotonic()
            async with anyio.create_task_group() as tg:
                tg.start_soon(forget_window)
                async with client.auth.provision(
                    (f"soak {i}" for i in range(KEYS)), concurrency=48
                ) as stream:
                    async for result in stream:
                        results.append(result)
                        if len(results) == KEYS // 3:
                            a_third.set()
            wall = time.monotonic() - started

            # every input has exactly one result
            assert sorted(r.index for r in results) == list(range(KEYS))
            ok = [r for r in results if r.ok]
            failed = [r for r in results if not r.ok]
            assert all(isinstance(r.error, IllumassError) for r in failed)
            assert len(ok) >= KEYS * 0.999, {repr(r.error) for r in failed}
            # the server holds exactly the delivered keys, each with the token we were given
            delivered = {r.api_key.id: r.api_key for r in ok if r.api_key}
            assert set(server.api_keys) == set(delivered)
            for key_id, key in delivered.items():
                assert key.token is not None
                token = key.token.get_secret_value()
                assert token == server.api_keys[key_id].token
                assert server.accepts(token)  # it authenticates
            for key in list(delivered.values())[:20]:  # and over the wire, too
                async with AsyncIllumass(server.url, api_key=key.token) as bot:
                    assert (await bot.request("GET", "/_me"))["_id"] == server.user_id()
            # logins stay few: one per renewal window (1.5 s) and one per session flush, never a storm
            assert server.stats.logins <= 2 + wall / 1.5 + forgotten

        figures = {
            "keys": KEYS,
            "ok": len(ok),
            "failed": len(failed),
            "errors": sorted({str(r.error) for r in failed})[:5],
            "wall_s": round(wall, 2),
            "keys_per_s": round(KEYS / wall),
            "requests_create": server.stats.requests["createApiKey"],
            "requests_delete": server.stats.requests["deleteApiKey"],
            "retries": sum(r.attempts for r in results) - KEYS,
            "faults": {kind: faults.fired(kind) for kind in ("status", "drop_after", "drop_before")},
            "session_flushes": forgotten,
            "logins": server.stats.logins,
            "max_in_flight": server.stats.max_in_flight,
        }
    with capsys.disabled():
        print("\nsoak:", json.dumps(figures))
