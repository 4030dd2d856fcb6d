"""Bulk provisioning: bounded concurrency, exactly once, nothing lost, early exit cleans up."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator

import anyio
import anyio.lowlevel
import pytest

import illumass._bulk
from illumass import (
    ApiKeySpec,
    AsyncIllumass,
    IllumassError,
    InvalidSpecError,
    NotFoundError,
    ProvisionResult,
)
from illumass._bulk import _MAX_PENDING
from illumass.testing import FakeIllumass

from .conftest import FAST

pytestmark = pytest.mark.anyio


def assert_exactly(server: FakeIllumass, results: list[ProvisionResult]) -> None:
    """The server holds exactly the delivered keys, and each delivered token is the server's."""
    delivered = {r.api_key.id: r.api_key for r in results if r.api_key is not None}
    assert set(server.api_keys) == set(delivered)
    for key_id, key in delivered.items():
        assert key.token is not None and key.token.get_secret_value() == server.api_keys[key_id].token


async def test_input_order_callbacks_and_concurrency(client: AsyncIllumass, server: FakeIllumass) -> None:
    server.latency = 0.01
    completed: list[int] = []

    async def on_result(result: ProvisionResult) -> None:
        await anyio.lowlevel.checkpoint()
        completed.append(result.index)

    specs = [f"key {i}" for i in range(60)]
    results = await client.auth.create_api_keys(specs, concurrency=7, on_result=on_result)
    assert [r.index for r in results] == list(range(60))
    assert [r.spec.description for r in results] == specs
    assert all(r.ok and r.attempts == 1 for r in results)
    assert sorted(completed) == list(range(60))
    assert 5 <= server.stats.max_in_flight <= 7
    assert_exactly(server, results)


async def test_specs_with_their_own_settings(client: AsyncIllumass, server: FakeIllumass) -> None:
    specs: list[str | ApiKeySpec] = [
        ApiKeySpec("a", expires_in="2d", key_id="key-a"),
        ApiKeySpec("b", expires_in=-1),
        "c",
    ]
    results = await client.auth.create_api_keys(specs, expires_in="3h")
    assert next(r.api_key.id for r in results if r.api_key) == "key-a"
    ttls = [server.api_keys[r.api_key.id].ttl for r in results if r.api_key]
    assert 172_799_000 < ttls[0] <= 172_800_000  # a caller's id: its ttl carries a tag (see Lifetimes)
    assert ttls[1:] == [-1, 10_800_000]


async def test_invalid_specs_fail_alone(client: AsyncIllumass, server: FakeIllumass) -> None:
    specs: list[object] = [
        "ok",
        "",
        ApiKeySpec("bad ttl", expires_in="1 fortnight"),
        42,
        "fine",
        ApiKeySpec("x", key_id="a/b"),
    ]
    results = await client.auth.create_api_keys(specs)  # type: ignore[arg-type]
    assert [r.ok for r in results] == [True, False, False, False, True, False]
    for r in results:
        if not r.ok:
            assert isinstance(r.error, InvalidSpecError) and isinstance(r.error, ValueError)
            assert r.attempts == 0
    assert len(server.api_keys) == 2


async def test_async_iterable_specs(client: AsyncIllumass, server: FakeIllumass) -> None:
    async def specs() -> AsyncIterator[str]:
        for i in range(25):
            await anyio.lowlevel.checkpoint()
            yield f"async {i}"

    results = await client.auth.create_api_keys(specs(), concurrency=5)
    assert len(results) == 25 and all(r.ok for r in results)


async def test_one_failure_never_stops_the_batch(client: AsyncIllumass, server: FakeIllumass) -> None:
    server.faults.add("status", "createApiKey", status=400, error_id="api.assert.invalid_argument", times=3)
    results = await client.auth.create_api_keys([f"k{i}" for i in range(20)], concurrency=4)
    assert sum(not r.ok for r in results) == 3 and len(results) == 20
    assert_exactly(server, results)


async def test_thousand_keys_under_faults(client: AsyncIllumass, server: FakeIllumass) -> None:
    server.faults.add("status", "createApiKey", probability=0.05, status=503)
    server.faults.add("drop_after", "createApiKey", probability=0.03)
    server.faults.add("drop_before", "createApiKey", probability=0.02)
    server.faults.add(
        "status", "createApiKey", probability=0.02, status=429, error_id="api.process.too_many_requests"
    )
    # With 12% of creates failing, the default budget (5) runs out for about one key in a few
    # thousand (two lost responses and two 503s): a larger one makes every key's success certain.
    specs = (f"key {i}" for i in range(1000))
    results = await client.auth.create_api_keys(specs, concurrency=40, max_retries=12)
    assert len(results) == 1000 and all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    assert len(server.api_keys) == 1000
    assert_exactly(server, results)
    assert server.faults.fired("drop_after") > 10 and server.faults.fired("status") > 30
    assert server.stats.max_in_flight <= 40
    assert sum(r.attempts for r in results) > 1000


async def test_short_token_ttl_during_a_batch(server: FakeIllumass) -> None:
    server.latency = 0.02
    async with AsyncIllumass(
        server.url, email=server.email, password=server.password, login_expires_in="2s", **FAST
    ) as client:
        with anyio.fail_after(30):
            started = anyio.current_time()
            results = await client.auth.create_api_keys([f"k{i}" for i in range(900)], concurrency=6)
            elapsed = anyio.current_time() - started
    assert elapsed > 2.5
    assert all(r.ok for r in results)
    assert 2 <= server.stats.logins <= 2 + int(elapsed)  # about one renewal a second, never a storm


async def test_early_exit_keeps_exactly_the_delivered_keys(
    client: AsyncIllumass, server: FakeIllumass
) -> None:
    consumed = 0

    def specs() -> Iterator[str]:
        nonlocal consumed
        for i in range(1_000_000):
            consumed += 1
            yield f"lazy {i}"

    delivered: list[ProvisionResult] = []
    async with client.auth.provision(specs(), concurrency=16) as results:
        async for result in results:
            delivered.append(result)
            if len(delivered) == 100:
                break
    assert len(delivered) == 100
    assert consumed <= 100 + _MAX_PENDING + 16  # read-ahead: keys awaiting visibility, one per worker
    assert_exactly(server, delivered)


async def test_workers_waiting_for_room_all_resume(
    client: AsyncIllumass, server: FakeIllumass, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many workers wait at once for keys awaiting visibility to drain; each round of the barrier
    must wake them all (each used to wait on an event of its own, and all but one hung)."""
    monkeypatch.setattr(illumass._bulk, "_MAX_PENDING", 4)
    server.refresh_interval = 0.3  # keys pile up between refreshes: most workers wait
    with anyio.fail_after(30):
        results = await client.auth.create_api_keys([f"k{i}" for i in range(120)], concurrency=16)
    assert all(r.ok for r in results)
    assert_exactly(server, results)


async def test_a_stopping_batch_frees_workers_waiting_for_room(
    client: AsyncIllumass, server: FakeIllumass, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consumer leaves while workers wait for room: the batch ends, none hangs."""
    monkeypatch.setattr(illumass._bulk, "_MAX_PENDING", 4)
    server.refresh_interval = 0.5  # keys pile up: the workers wait for room when the first arrives
    delivered: list[ProvisionResult] = []
    with anyio.fail_after(30), pytest.raises(RuntimeError, match="consumer left"):
        async with client.auth.provision([f"k{i}" for i in range(40)], concurrency=8) as results:
            async for result in results:
                delivered.append(result)
                raise RuntimeError("consumer left")
    assert_exactly(server, delivered)


async def test_consumer_error_revokes_and_propagates(client: AsyncIllumass, server: FakeIllumass) -> None:
    delivered: list[ProvisionResult] = []
    with pytest.raises(RuntimeError, match="consumer broke"):
        async with client.auth.provision([f"k{i}" for i in range(200)], concurrency=8) as results:
            async for result in results:
                delivered.append(result)
                if len(delivered) == 5:
                    raise RuntimeError("consumer broke")
    assert_exactly(server, delivered)


async def test_provision_runs_to_completion(client: AsyncIllumass, server: FakeIllumass) -> None:
    async with client.auth.provision((f"k{i}" for i in range(50)), concurrency=8) as results:
        got = [r async for r in results]
    assert sorted(r.index for r in got) == list(range(50))
    assert_exactly(server, got)


async def test_failed_revocation_names_the_keys(client: AsyncIllumass, server: FakeIllumass) -> None:
    await client.auth.search_api_keys()
    server.faults.add("status", "deleteApiKey", status=500, error_id="core.fatal", times=10_000)
    delivered: list[ProvisionResult] = []
    with pytest.raises(IllumassError, match="could not be revoked; delete them: ") as info:
        async with client.auth.provision([f"k{i}" for i in range(40)], concurrency=4) as results:
            async for result in results:
                delivered.append(result)
                break
    stranded = set(server.api_keys) - {r.api_key.id for r in delivered if r.api_key}
    assert len(stranded) >= 2
    assert all(key_id in str(info.value) for key_id in stranded)


async def test_failing_callback_stops_the_batch_and_revokes_the_rest(
    client: AsyncIllumass, server: FakeIllumass
) -> None:
    kept: list[ProvisionResult] = []

    def on_result(result: ProvisionResult) -> None:
        if len(kept) == 10:
            raise OSError("disk full")
        kept.append(result)

    with pytest.raises(OSError, match="disk full"):
        await client.auth.create_api_keys((f"k{i}" for i in range(500)), concurrency=8, on_result=on_result)
    assert_exactly(server, kept)


async def test_cancelled_batch_revokes_created_keys(client: AsyncIllumass, server: FakeIllumass) -> None:
    server.latency = 0.01
    with anyio.move_on_after(0.3):
        await client.auth.create_api_keys((f"k{i}" for i in itertools.count()), concurrency=8)
    assert server.stats.requests["createApiKey"] > 8
    assert server.api_keys == {}


async def test_retry_after_holds_back_only_the_refused_request(
    client: AsyncIllumass, server: FakeIllumass
) -> None:
    """A 429 with Retry-After delays that create's retry; the batch goes on at a reduced pace
    instead of stopping (adaptive concurrency, not a global pause)."""
    await client.auth.search_api_keys()
    server.latency = 0.005
    server.faults.add(
        "status", "createApiKey", status=429, error_id="api.process.too_many_requests", retry_after="0.5"
    )
    results = await client.auth.create_api_keys([f"k{i}" for i in range(200)], concurrency=10)
    assert all(r.ok for r in results) and server.faults.fired("status") == 1
    creates = [(r.at, r.query["_id"]) for r in server.stats.recent if r.action == "createApiKey"]
    refused_at, refused_id = creates[0]
    retried_at = [at for at, key_id in creates[1:] if key_id == refused_id]
    assert len(retried_at) == 1 and retried_at[0] >= refused_at + 0.5  # Retry-After was honoured
    assert [at for at, _ in creates if refused_at < at < refused_at + 0.45]  # the others went on


async def test_timeout_starts_once_a_connection_slot_is_taken(server: FakeIllumass) -> None:
    server.latency = 0.15
    async with AsyncIllumass(
        server.url,
        email=server.email,
        password=server.password,
        max_connections=2,
        timeout=0.5,
        max_retries=0,
    ) as client:
        await client.auth.login()
        results = await client.auth.create_api_keys(
            [f"k{i}" for i in range(12)], concurrency=12, max_retries=0
        )
    assert all(r.ok for r in results)  # 6 waves of 0.15 s: queueing did not count against the 0.5 s
    assert server.stats.max_in_flight <= 2


async def test_two_clients_of_one_user_never_share_a_token(server: FakeIllumass) -> None:
    """Each client varies lifetimes on its own, so their keys collide in the same second: the
    barrier finds the other client's twins on the server and re-creates the newer key."""
    server.refresh_interval = 0.2
    results: list[ProvisionResult] = []

    async def one_client(name: str) -> None:
        async with AsyncIllumass(server.url, email=server.email, password=server.password, **FAST) as client:
            results.extend(
                await client.auth.create_api_keys([f"{name} {i}" for i in range(200)], concurrency=8)
            )

    async with anyio.create_task_group() as tg:
        tg.start_soon(one_client, "left")
        tg.start_soon(one_client, "right")
    assert len(results) == 400 and all(r.ok for r in results), {str(r.error) for r in results if not r.ok}
    tokens = [r.api_key.token.get_secret_value() for r in results if r.api_key and r.api_key.token]
    assert len(set(tokens)) == 400 and all(server.accepts(t) for t in tokens)
    assert_exactly(server, results)
    assert server.stats.requests["deleteApiKey"] > 0  # twins were met and replaced


async def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (state the test's server changes) until it holds, for up to 10 s."""
    for _ in range(2000):
        if condition():
            return
        await anyio.sleep(0.005)
    raise TimeoutError


async def twin_race(
    server: FakeIllumass, a: AsyncIllumass, b: AsyncIllumass, ids: tuple[str, str]
) -> tuple[bool, dict[str, ProvisionResult]]:
    """A's key shows alone, then B makes one with the id ``ids[1]``; whether they were twins."""
    results: dict[str, ProvisionResult] = {}

    async def one(name: str, client: AsyncIllumass, key_id: str) -> None:
        [results[name]] = await client.auth.create_api_keys([ApiKeySpec(name, key_id=key_id)])

    async def refresh_often() -> None:
        while True:
            server.refresh()
            await anyio.sleep(0.05)

    await until(lambda: time.time() % 1 < 0.1)  # early in a second: both creates may land in it
    async with anyio.create_task_group() as tg:
        tg.start_soon(one, "a", a, ids[0])
        await until(lambda: ids[0] in server.api_keys)
        server.refresh()
        await anyio.sleep(0.35)  # A's barrier searches and sees its key alone
        tg.start_soon(one, "b", b, ids[1])
        await until(lambda: ids[1] in server.api_keys)
        twins = server.api_keys[ids[0]].token == server.api_keys[ids[1]].token
        tg.start_soon(refresh_often)
        await until(lambda: len(results) == 2)
        tg.cancel_scope.cancel()
    return twins, results


async def test_the_key_indexed_second_meets_its_twin_and_is_made_again(server: FakeIllumass) -> None:
    """Client A's key is visible alone, so A delivers it; then, in the same second, client B makes
    its twin, with a lower id. B sees both and makes its key again, whatever the ids."""
    server.refresh_interval = 3600.0  # the index refreshes when this test says
    async with (
        AsyncIllumass(server.url, email=server.email, password=server.password, **FAST) as a,
        AsyncIllumass(server.url, email=server.email, password=server.password, **FAST) as b,
    ):
        for attempt in range(5):  # until both creates land in one server second
            deletes = server.stats.requests["deleteApiKey"]
            twins, results = await twin_race(server, a, b, (f"z{attempt}", f"a{attempt}"))
            if twins:
                break
        else:
            pytest.fail("never made two keys in one second")
    kept, replaced = results["a"].api_key, results["b"].api_key
    assert kept is not None and replaced is not None and kept.token and replaced.token
    assert kept.token.get_secret_value() != replaced.token.get_secret_value()
    assert server.api_keys[kept.id].token == kept.token.get_secret_value()
    assert server.api_keys[replaced.id].token == replaced.token.get_secret_value()
    assert server.stats.requests["deleteApiKey"] == deletes + 1  # B's key only


async def test_two_clients_making_keys_that_never_expire_never_share_a_token(
    server: FakeIllumass,
) -> None:
    """Such keys have one lifetime, so two clients' keys of one second always collide; re-created
    after random pauses, they part."""
    results: list[ProvisionResult] = []

    async def one_client(name: str) -> None:
        async with AsyncIllumass(server.url, email=server.email, password=server.password, **FAST) as client:
            specs = [ApiKeySpec(f"{name} {i}", expires_in=-1) for i in range(2)]
            results.extend(await client.auth.create_api_keys(specs))

    async with anyio.create_task_group() as tg:
        tg.start_soon(one_client, "left")
        tg.start_soon(one_client, "right")
    assert len(results) == 4 and all(r.ok for r in results), {str(r.error) for r in results if not r.ok}
    tokens = {r.api_key.token.get_secret_value() for r in results if r.api_key and r.api_key.token}
    assert len(tokens) == 4
    assert_exactly(server, results)
    assert server.stats.requests["deleteApiKey"] > 0  # twins were met and replaced


async def test_delete_api_keys_revokes_concurrently_with_per_id_results(
    client: AsyncIllumass, server: FakeIllumass
) -> None:
    """One result per id, in input order; a missing id fails alone; requests overlap."""
    made = await client.auth.create_api_keys([f"k{i}" for i in range(40)])
    ids = [r.api_key.id for r in made if r.api_key]
    server.latency = 0.02
    server.stats.max_in_flight = 0
    results = await client.auth.delete_api_keys([*ids[:20], "missing", *ids[20:]], concurrency=8)
    assert [r.key_id for r in results] == [*ids[:20], "missing", *ids[20:]]
    assert [r.ok for r in results].count(False) == 1 and isinstance(results[20].error, NotFoundError)
    assert server.api_keys == {}
    assert 4 <= server.stats.max_in_flight <= 8
