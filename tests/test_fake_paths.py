"""The less travelled paths of FakeIllumass and of bulk provisioning.

``python -m illumass.testing`` runs in a subprocess; the query emulation and the server's edge
cases are driven by real requests over loopback; bulk failures are injected with the fake's faults.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import attrs
import pytest

from illumass import AsyncIllumass, IllumassError, ProvisionResult
from illumass.testing import FakeIllumass
from illumass.testing.__main__ import parse_cap, parse_user, serve

from .conftest import FAST, http
from .test_fake_server import call, create, ids, login, search

pytestmark = pytest.mark.anyio


@pytest.fixture
async def server() -> AsyncIterator[FakeIllumass]:
    async with FakeIllumass(seed=1, refresh_interval=0) as fake:
        yield fake


# -- python -m illumass.testing -------------------------------------------------------------------


def _run_module(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "illumass.testing", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_module_serves_real_requests_until_interrupted() -> None:
    proc = _run_module(
        "--user",
        "ann@example.test:pw-ann",
        "--user",
        "bob@example.test:pw-bob",
        "--latency",
        "1",
        "--api-key-cap",
        "NONE",
        "--refresh-interval",
        "0",
        "--seed",
        "7",
    )
    assert proc.stdout is not None
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v4")
        assert proc.stdout.readline().strip() == "Accepted credentials (email / password):"
        assert proc.stdout.readline().strip() == "ann@example.test / pw-ann"
        assert proc.stdout.readline().strip() == "bob@example.test / pw-bob"
        status, body = http("POST", url + "/login", {"email": "bob@example.test", "password": "pw-bob"})
        assert status == 200 and body["result"]["jwt"].startswith("kauth-")
        token = body["result"]["jwt"]
        status, body = http("POST", url + "/api-keys/_create", {"description": "cli"}, token=token)
        assert status == 200 and body["result"]["_source"]["description"] == "cli"
        # --refresh-interval 0: the key is searchable at once.
        status, body = http("POST", url + "/api-keys/_search", {}, token=token)
        assert status == 200 and [h["_source"]["description"] for h in body["result"]["hits"]] == ["cli"]
        status, body = http(
            "POST", url + "/login", {"email": "demo@illumass.test", "password": "demo-password"}
        )
        assert status == 401  # only the accounts given
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert out == ""
    assert "Traceback" not in err


def test_module_defaults_to_the_demo_account() -> None:
    proc = _run_module("--port", "0")
    assert proc.stdout is not None
    try:
        url = proc.stdout.readline().strip()
        assert proc.stdout.readline().startswith("Accepted credentials")
        assert proc.stdout.readline().strip() == "demo@illumass.test / demo-password"
        status, body = http(
            "POST", url + "/login", {"email": "demo@illumass.test", "password": "demo-password"}
        )
        assert status == 200, body
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
    assert proc.returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "no-colon"], "expected EMAIL:PASSWORD"),
        (["--user", ":pw"], "expected EMAIL:PASSWORD"),
        (["--api-key-cap", "many"], "expected a number or 'none'"),
        (["--api-key-cap", "-1"], "expected a number >= 0 or 'none'"),
    ],
)
def test_module_refuses_bad_arguments(args: list[str], message: str) -> None:
    proc = _run_module(*args)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 2
    assert out == ""
    assert message in err and "usage: python -m illumass.testing" in err


def test_argument_parsers() -> None:
    assert parse_user("a@b:c:d") == ("a@b", "c:d")
    assert parse_cap("none") is None
    assert parse_cap("0") == 0
    assert parse_cap("25") == 25


# -- the Elasticsearch query emulation ------------------------------------------------------------


async def _three_keys(server: FakeIllumass) -> str:
    jwt: str = (await login(server))["jwt"]
    await create(server, jwt, "alpha beta", _id="k1")
    await create(server, jwt, "beta gamma", _id="k2", expiresIn="1h")
    await create(server, jwt, "Gamma", _id="x3")
    return jwt


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"term": {"_id": {"value": "k2"}}}, ["k2"]),
        ({"term": {"userId": True}}, []),  # a boolean never equals a keyword
        ({"match": {"_id": "x3"}}, ["x3"]),  # match on a keyword field is a term query
        ({"match": {"description": "!!!"}}, []),  # no token to look for
        ({"prefix": {"_id": {"value": "k"}}}, ["k1", "k2"]),
        ({"wildcard": {"_id": "?3"}}, ["x3"]),
        ({"wildcard": {"_id": {"wildcard": "k*"}}}, ["k1", "k2"]),
        ({"regexp": {"_id": "k[12]"}}, ["k1", "k2"]),
        ({"query_string": {"query": "*"}}, ["k1", "k2", "x3"]),
        ({"simple_query_string": {"query": "GAMMA"}}, ["k2", "x3"]),
        ({"range": {"userId": {"gte": 1, "lte": 1}}}, ["k1", "k2", "x3"]),  # "000…1" as a number
        ({"range": {"description": {"gt": 5}}}, []),  # text against a number: no match
        ({"range": {"expiresAt": {"gt": 0}}}, ["k2"]),
        ({"bool": {"should": [{"term": {"_id": "k1"}}, {"term": {"_id": "x3"}}]}}, ["k1", "x3"]),
        (
            {
                "bool": {
                    "should": [{"term": {"_id": "k1"}}, {"prefix": {"_id": "k"}}],
                    "minimum_should_match": "100%",
                }
            },
            ["k1"],
        ),
        ({"constant_score": {"filter": {"ids": {"values": ["k1", "x3"]}}}}, ["k1", "x3"]),
        ({"nested": {"query": {"match_none": {}}}}, []),
    ],
)
async def test_query_semantics(server: FakeIllumass, query: dict[str, Any], expected: list[str]) -> None:
    jwt = await _three_keys(server)
    assert await ids(server, jwt, query) == expected


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            {"term": {"_id": "k1", "userId": "u"}},
            "[term] query doesn't support multiple fields, found [_id] and [userId]",
        ),
        ({"term": {}}, "[term] query malformed, no field"),
        ({"ids": {"values": "k1"}}, "[ids] query malformed, no start_object after query name"),
        ({"terms": {"_id": "k1"}}, "[terms] query does not support [_id]"),
        ({"bool": []}, "[bool] query malformed, no start_object after query name"),
        (
            {"bool": {"should": [{"match_all": {}}], "minimum_should_match": "most"}},
            "cannot parse minimum_should_match [most]",
        ),
        ({"regexp": {"_id": "k["}}, "failed to parse regexp [k[]"),
        ({"range": {"expiresAt": 5}}, "[range] query does not support [expiresAt]"),
        ({"fuzzy": {"_id": "k"}}, "unknown query [fuzzy]"),
    ],
)
async def test_refused_queries(server: FakeIllumass, query: dict[str, Any], message: str) -> None:
    jwt = await _three_keys(server)
    status, body = await search(server, jwt, query)
    assert status == 400, body
    assert body["error"]["id"] == "services.storage.unexpected_bad_request"
    assert body["error"]["message"].startswith(message)


@pytest.mark.parametrize("raw", ["abc", "Infinity", "-Infinity", "1.5"])
async def test_from_and_size_must_be_integers(server: FakeIllumass, raw: str) -> None:
    jwt = await _three_keys(server)
    status, body = await search(server, jwt, {}, size=raw)
    assert status == 400, body
    assert body["error"]["id"] == "api.assert.invalid_type"


async def test_paging_parameters(server: FakeIllumass) -> None:
    jwt = await _three_keys(server)
    assert await ids(server, jwt, {}, **{"from": "1", "size": "1e0"}) == ["k2"]
    assert await ids(server, jwt, {}, size=" +2.0xyz") == ["k1", "k2"]  # parseFloat's prefix
    status, body = await search(server, jwt, {}, **{"from": "-1"})
    assert status == 400 and body["error"]["message"] == "[from] parameter cannot be negative, found [-1]"


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"and": [{"equals": {"_id": "k1"}}, {"exists": "description"}]}, ["k1"]),
        ({"or": [{"equals": {"_id": "k1"}}, {"in": {"_id": ["x3"]}}]}, ["k1", "x3"]),
        ({"not": {"ids": {"values": ["k1"]}}}, ["k2", "x3"]),
        ({"missing": "expiresAt"}, []),
        ({"range": {"expiresAt": {"lt": 0}}}, ["k1", "x3"]),
        ({"and": "not a list"}, ["k1", "k2", "x3"]),  # no operand: a filter of nothing
        ({"not": {}}, []),  # Kuzzle's translator keeps an empty operand: must_not match-all
    ],
)
async def test_koncorde_searches(server: FakeIllumass, filters: dict[str, Any], expected: list[str]) -> None:
    jwt = await _three_keys(server)
    assert await ids(server, jwt, filters, lang="koncorde") == expected


async def test_koncorde_bool_is_refused(server: FakeIllumass) -> None:
    jwt = await _three_keys(server)
    status, body = await search(server, jwt, {"bool": {"must": []}}, lang="koncorde")
    assert status == 400
    assert body["error"]["id"] == "api.assert.koncorde_restricted_keyword"
    assert body["error"]["props"] == ["operator", "bool"]


async def test_search_cache_keeps_answering_past_its_size(server: FakeIllumass) -> None:
    jwt = await _three_keys(server)
    for i in range(70):  # more distinct queries than the index caches
        wanted = ["k1", "k2", "x3"][i % 3]
        assert await ids(server, jwt, {"terms": {"_id": [wanted, f"none-{i}"]}}) == [wanted]
    assert await ids(server, jwt, {"terms": {"_id": ["k1", "none-0"]}}) == ["k1"]  # evicted, computed again
    assert server.stats.requests["searchApiKeys"] == 71


async def test_serve_without_credentials(capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeIllumass()
    task = asyncio.create_task(serve(fake))
    for _ in range(500):  # until it listens
        if fake._runner is not None:
            break
        await asyncio.sleep(0.01)
    url = fake.url
    status, _ = await call(fake, "POST", "/login", json={"email": fake.email, "password": fake.password})
    assert status == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert capsys.readouterr().out == url + "\n"  # the URL only, no credentials
    assert fake._runner is None


# -- server edge cases ----------------------------------------------------------------------------


async def test_url_needs_a_running_server() -> None:
    fake = FakeIllumass()
    with pytest.raises(RuntimeError, match="FakeIllumass is not running"):
        _ = fake.url
    await fake.stop()  # stopping a server that never started does nothing
    with pytest.raises(RuntimeError):
        _ = fake.url


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_blocking_start_failure_is_raised_and_cleaned_up(busy_port: int) -> None:
    fake = FakeIllumass(port=busy_port)
    with pytest.raises(OSError), fake:
        pass
    assert fake._portal_cm is not None  # the portal was closed, not kept for __exit__
    with FakeIllumass() as other:  # the thread machinery is usable again
        assert (
            http("POST", other.url + "/login", {"email": other.email, "password": other.password})[0] == 200
        )


async def test_serve_forever_until_cancelled() -> None:
    fake = FakeIllumass()
    task = asyncio.create_task(fake.serve_forever())
    for _ in range(500):  # until it listens
        if fake._runner is not None:
            break
        await asyncio.sleep(0.01)
    status, _ = await call(fake, "POST", "/login", json={"email": fake.email, "password": fake.password})
    assert status == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(RuntimeError, match="not running"):
        _ = fake.url


async def test_chunked_body_over_the_size_limit() -> None:
    async with FakeIllumass(max_request_size=1000) as fake:

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b"x" * 500

        status, body = await call(
            fake,
            "POST",
            "/login",
            data=chunks(),  # type: ignore[arg-type]  # aiohttp sends it chunked, with no length
            headers={"Content-Type": "application/json"},
        )
    assert status == 413
    assert body["id"] == "network.http.request_too_large"


async def test_recreated_id_of_another_user_before_the_refresh() -> None:
    users = {"a@x.test": "pa", "b@x.test": "pb"}
    async with FakeIllumass(users, refresh_interval=3600) as fake:
        jwt_a = (await call(fake, "POST", "/login", json={"email": "a@x.test", "password": "pa"}))[1][
            "result"
        ]["jwt"]
        jwt_b = (await call(fake, "POST", "/login", json={"email": "b@x.test", "password": "pb"}))[1][
            "result"
        ]["jwt"]
        token_a = (await create(fake, jwt_a, "a", _id="same", refresh="false"))["_source"]["token"]
        fake.refresh()
        status, _ = await call(fake, "DELETE", "/api-keys/same", token=jwt_a)
        assert status == 200
        await create(fake, jwt_b, "b", _id="same", refresh="false")
        # The index still lists A's key under that id; loading it finds B's.
        status, body = await call(fake, "GET", "/_me", token=token_a)
    assert status == 404, body
    assert body["error"]["id"] == "services.storage.not_found"
    assert body["error"]["message"] == f'ApiKey "same" not found for user "{fake.user_id("a@x.test")}".'


async def test_deleting_a_key_drops_its_cached_token_before_kuzzle_2_34() -> None:
    async with FakeIllumass(token_prefixes=False, refresh_interval=0) as fake:
        jwt = (await login(fake))["jwt"]
        token = (await create(fake, jwt, "old", _id="k"))["_source"]["token"]
        assert fake.accepts(token)
        status, _ = await call(fake, "DELETE", "/api-keys/k", token=jwt)
        assert status == 200
        assert not fake.accepts(token)


async def test_a_token_that_never_expires_cannot_be_refreshed(server: FakeIllumass) -> None:
    jwt = (await login(server, "-1"))["jwt"]
    status, body = await call(server, "POST", "/_refreshToken", token=jwt)
    assert status == 401, body
    assert body["error"]["id"] == "security.token.refresh_forbidden"
    assert body["error"]["message"] == "Token with infinite TTL cannot be refreshed."


async def test_multipart_edge_cases(server: FakeIllumass) -> None:
    jwt = await _three_keys(server)
    # Declared multipart without a boundary: no field at all, so an empty query.
    status, body = await call(
        server,
        "POST",
        "/api-keys/_search",
        token=jwt,
        data=b"junk",
        headers={"Content-Type": "multipart/form-data"},
    )
    assert status == 200 and len(body["result"]["hits"]) == 3
    # A part without a name is skipped; the named one is read.
    raw = (
        b"--B\r\nContent-Type: text/plain\r\n\r\nanonymous\r\n"
        b'--B\r\nContent-Disposition: form-data; name="description"\r\n\r\nnamed\r\n--B--\r\n'
    )
    status, body = await call(
        server,
        "POST",
        "/api-keys/_create",
        token=jwt,
        data=raw,
        headers={"Content-Type": "multipart/form-data; boundary=B"},
    )
    assert status == 200, body
    assert body["result"]["_source"]["description"] == "named"


def test_faults_clear() -> None:
    fake = FakeIllumass()
    rule = fake.faults.add("status", "login", times=5)
    fake.faults.clear()
    assert fake.faults.draw("login") is None
    assert rule.fired == 0


# -- bulk provisioning failures -------------------------------------------------------------------


@pytest.fixture
async def bulk_server() -> AsyncIterator[FakeIllumass]:
    async with FakeIllumass(seed=1, refresh_interval=0.05, api_key_cap=None) as fake:
        yield fake


@pytest.fixture
async def client(bulk_server: FakeIllumass) -> AsyncIterator[AsyncIllumass]:
    fake = bulk_server
    async with AsyncIllumass(fake.url, email=fake.email, password=fake.password, **FAST) as c:
        yield c


async def test_batch_fails_when_the_first_search_fails(
    client: AsyncIllumass, bulk_server: FakeIllumass
) -> None:
    bulk_server.faults.add("status", "searchApiKeys", status=400, error_id="api.assert.invalid_argument")
    with pytest.raises(IllumassError):
        await client.auth.create_api_keys(["a", "b"], concurrency=2)
    assert bulk_server.faults._rules[0].fired == 1
    assert bulk_server.stats.requests["createApiKey"] == 0
    assert bulk_server.api_keys == {}


async def test_failing_spec_iterable_stops_and_revokes(
    client: AsyncIllumass, bulk_server: FakeIllumass
) -> None:
    def specs() -> Iterator[str]:
        yield "one"
        yield "two"
        raise ValueError("spec source broke")

    with pytest.raises(ValueError, match="spec source broke"):
        await client.auth.create_api_keys(specs(), concurrency=1)
    assert bulk_server.api_keys == {}


async def test_failing_async_spec_iterable(client: AsyncIllumass, bulk_server: FakeIllumass) -> None:
    async def specs() -> AsyncIterator[str]:
        yield "one"
        raise LookupError("async source broke")

    delivered: list[ProvisionResult] = []
    with pytest.raises(LookupError, match="async source broke"):
        async with client.auth.provision(specs(), concurrency=2) as results:
            delivered.extend([r async for r in results])
    assert set(bulk_server.api_keys) == {r.api_key.id for r in delivered if r.api_key}


async def test_barrier_search_failure_is_retried(
    client: AsyncIllumass, bulk_server: FakeIllumass, caplog: pytest.LogCaptureFixture
) -> None:
    # The first search (counting the user's keys) passes; the barrier's first one fails.
    bulk_server.faults.add("delay", "searchApiKeys", delay=0)
    failing = bulk_server.faults.add(
        "status", "searchApiKeys", status=400, error_id="api.assert.invalid_argument"
    )
    results = await client.auth.create_api_keys(["a", "b", "c"], concurrency=3)
    assert all(r.ok for r in results)
    assert failing.fired == 1
    assert "could not confirm new API keys" in caplog.text
    assert {r.api_key.id for r in results if r.api_key} == set(bulk_server.api_keys)


async def test_failing_callback_on_an_invalid_spec(client: AsyncIllumass, bulk_server: FakeIllumass) -> None:
    def on_result(result: ProvisionResult) -> None:
        raise KeyError(result.index)

    with pytest.raises(KeyError):
        await client.auth.create_api_keys([123, "ok"], concurrency=1, on_result=on_result)  # type: ignore[list-item]
    assert bulk_server.api_keys == {}


async def test_consumer_leaving_with_failures_buffered(
    client: AsyncIllumass, bulk_server: FakeIllumass
) -> None:
    specs: list[Any] = [object() for _ in range(20)]  # every spec fails at once, filling the buffer
    with anyio.fail_after(10):
        async with client.auth.provision(specs, concurrency=2) as results:
            async for result in results:
                assert not result.ok
                break
    assert bulk_server.stats.requests["createApiKey"] == 0


async def _twin_appears(server: FakeIllumass) -> str:
    """Once the batch's key exists (not yet searchable), store an older-sorting key of the same
    user with the same token, as another client's create in the same second would; then refresh."""
    for _ in range(500):
        if server.api_keys:
            break
        await anyio.sleep(0.01)
    (ours,) = server.api_keys.values()
    server.index.add(attrs.evolve(ours, id="-twin"))  # "-" sorts before every hex id
    server.refresh_interval = 0.05  # from now on, deletes that wait for a refresh get one soon
    server.refresh()
    return ours.id


async def test_failed_replacement_of_a_twin_is_reported(
    client: AsyncIllumass, bulk_server: FakeIllumass
) -> None:
    bulk_server.refresh_interval = 3600  # only explicit refreshes
    failing = bulk_server.faults.add(
        "status", "deleteApiKey", status=400, error_id="api.assert.invalid_argument"
    )
    async with anyio.create_task_group() as tg:
        results: list[ProvisionResult] = []

        async def run() -> None:
            results.extend(await client.auth.create_api_keys(["mine"], concurrency=1))

        tg.start_soon(run)
        ours = await _twin_appears(bulk_server)
    (result,) = results
    assert not result.ok and result.api_key is None
    assert isinstance(result.error, IllumassError) and "api.assert.invalid_argument" in str(result.error)
    assert failing.fired == 1
    assert set(bulk_server.api_keys) == {"-twin"}  # ours was discarded after the failed replacement
    assert ours not in bulk_server.api_keys


async def test_refresh_twice_wakes_each_waiter_once(server: FakeIllumass) -> None:
    server.refresh_interval = 3600
    jwt = (await login(server))["jwt"]
    async with anyio.create_task_group() as tg:
        made: list[dict[str, Any]] = []

        async def make() -> None:
            made.append(await create(server, jwt, "waits", _id="w"))

        tg.start_soon(make)
        for _ in range(500):
            if server.api_keys:
                break
            await anyio.sleep(0.01)
        assert not made  # waiting for the refresh
        server.refresh()
        server.refresh()  # the waiter already has its answer
    assert made[0]["_id"] == "w"
    assert await ids(server, jwt) == ["w"]


async def test_a_token_twinned_again_and_again_gives_up(
    client: AsyncIllumass, bulk_server: FakeIllumass
) -> None:
    """Every re-created key meets a twin again: after 10 replacements the spec fails."""
    bulk_server.refresh_interval = 3600  # only explicit refreshes
    results: list[ProvisionResult] = []
    twins = 0
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            results.extend(await client.auth.create_api_keys(["mine"], concurrency=1))

        tg.start_soon(run)
        seen: set[str] = set()
        with anyio.fail_after(20):
            while not results:
                for key in list(bulk_server.api_keys.values()):
                    if not key.id.startswith("-") and key.token not in seen:
                        seen.add(key.token)
                        twins += 1
                        bulk_server.index.add(attrs.evolve(key, id=f"-twin{twins:02d}"))
                bulk_server.refresh()  # every write is searchable, and waiting deletes answer
                await anyio.sleep(0.01)
    (result,) = results
    assert not result.ok
    assert "the server issued a token another key already has 11 times" in str(result.error)
    assert twins == 11
    assert all(key_id.startswith("-twin") for key_id in bulk_server.api_keys)
