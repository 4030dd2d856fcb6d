"""The core's less travelled paths: the blocking facade when its loop dies or closes at awkward
moments, the transport's edge answers, the auth policy's corner cases, and small helpers."""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import socket
import sys
import threading
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from contextlib import asynccontextmanager, suppress
from datetime import datetime
from typing import Any, cast

import aiohttp
import anyio
import pytest
from aiohttp import web

from illumass import (
    APIConnectionError,
    APITimeoutError,
    AsyncIllumass,
    AuthenticationError,
    Illumass,
    IllumassError,
    InvalidCredentialsError,
    InvalidResponseError,
    NotFoundError,
    PermissionDeniedError,
    ProvisionResult,
    Secret,
    ServerError,
    ServiceUnavailableError,
)
from illumass._duration import parse_duration
from illumass._jwt import claims
from illumass._pushback import Pushback
from illumass._sync import _LoopThread
from illumass._transport import _retry_after
from illumass._wire import structure, unwrap
from illumass.models import ApiKey, ApiKeyPage, ApiKeySpec, AuthToken, TokenInfo
from illumass.testing import FakeIllumass

from .conftest import FAST

API_KEY = "kapikey-not-checked-by-these-servers"


# --- helpers ------------------------------------------------------------------------------------


def loop_threads() -> int:
    """The blocking clients' loop threads (other threads, e.g. aiohttp's resolver, come and go)."""
    return sum(t.name == "illumass-loop" for t in threading.enumerate())


def wait_for(condition: Callable[[], bool]) -> None:
    """Block until ``condition()`` holds (a synchronisation point, not a timed assertion)."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.002)


def running(thread: threading.Thread, function: Callable[..., Any]) -> bool:
    """Whether ``thread`` is inside a call of ``function`` (a Python function) right now."""
    code = function.__code__
    frame = sys._current_frames().get(cast(int, thread.ident))
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def outcome_of(call: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Start ``call`` on a thread; the list receives what it returned or raised."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def kill_the_loop(client: Illumass) -> None:
    """End the client's loop thread the way a callback can: SystemExit raised on it."""
    before = loop_threads()

    def exit_here(_: ProvisionResult) -> None:
        raise SystemExit(3)

    with pytest.raises(IllumassError, match="SystemExit"):
        client.auth.create_api_keys(["doomed"], on_result=exit_here)
    wait_for(lambda: loop_threads() == before - 1)


@asynccontextmanager
async def raw_server(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    """A tiny aiohttp server on a free loopback port, for answers FakeIllumass never gives."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = cast(Any, site._server).sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v4"
    finally:
        await runner.cleanup()


def answering(status: int, body: bytes, **headers: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, body=body, headers=headers)

    return handler


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return cast(int, sock.getsockname()[1])


# --- the blocking facade ------------------------------------------------------------------------


@pytest.fixture
def threaded_server() -> Iterator[FakeIllumass]:
    with FakeIllumass(api_key_cap=None, refresh_interval=0.05) as server:
        yield server


def new_client(server: FakeIllumass) -> Illumass:
    return Illumass(server.url, email=server.email, password=server.password, **FAST)


def test_bulk_deletes_and_prune_through_the_facade(threaded_server: FakeIllumass) -> None:
    with new_client(threaded_server) as client:
        keep, gone = client.auth.create_api_key("keep"), client.auth.create_api_key("gone")
        results = client.auth.delete_api_keys([gone.id, "no-such-key"])
        assert [(r.key_id, r.ok) for r in results] == [(gone.id, True), ("no-such-key", False)]
        assert isinstance(results[1].error, NotFoundError)
        assert client.auth.prune_api_keys() == []  # nothing has expired
    assert list(threaded_server.api_keys) == [keep.id]


def test_a_dead_loop_thread_fails_every_later_use_clearly(threaded_server: FakeIllumass) -> None:
    """The loop thread ends while a provision block and a key iterator are open."""
    before = loop_threads()
    client = new_client(threaded_server)
    client.auth.create_api_key("one")
    client.auth.create_api_key("two")
    with (
        pytest.raises(IllumassError) as exited,  # raised when the block exits
        client.auth.provision(["p0", "p1", "p2"], concurrency=1) as results,
    ):
        first = next(results)
        keys = cast("Generator[ApiKey, None, None]", client.auth.iter_api_keys(page_size=1))
        next(keys)
        kill_the_loop(client)
        with pytest.raises(IllumassError, match="event-loop thread stopped: SystemExit was raised"):
            client.auth.search_api_keys()
        with pytest.raises(IllumassError, match="event-loop thread stopped"):
            keys.close()  # the iterator cannot close its page stream: it says so
    assert "event-loop thread stopped: SystemExit" in str(exited.value)
    assert isinstance(exited.value.__cause__, RuntimeError)  # the portal's "not running"
    assert first.ok
    client.close()  # still fine: nothing left to stop
    assert loop_threads() == before


def test_a_call_racing_the_loop_closing_is_refused(threaded_server: FakeIllumass) -> None:
    client = new_client(threaded_server)
    kill_the_loop(client)
    # The moment between the event loop closing and its thread marking itself finished: a call
    # slipping in there cannot be scheduled at all.
    client._loop.finished = False
    with pytest.raises(IllumassError, match="event-loop thread stopped: SystemExit") as info:
        client.auth.search_api_keys()
    assert info.value.__cause__ is None
    client.close()


def test_a_call_queued_while_the_loop_dies_gets_a_clear_error(threaded_server: FakeIllumass) -> None:
    client = new_client(threaded_server)
    client.auth.login()
    inside, gate = threading.Event(), threading.Event()

    def exit_later(_: ProvisionResult) -> None:
        inside.set()
        gate.wait(10)  # holds the loop thread while the second call is queued behind it
        raise SystemExit(3)

    dying, died = outcome_of(lambda: client.auth.create_api_keys(["a"], on_result=exit_later))
    inside.wait(10)
    queued, outcome = outcome_of(client.auth.search_api_keys)
    wait_for(lambda: running(queued, _LoopThread.run))  # waiting for its call to run
    gate.set()
    dying.join()
    queued.join()
    assert isinstance(died[0], IllumassError) and "SystemExit" in str(died[0])
    [error] = outcome
    assert isinstance(error, IllumassError), repr(error)
    assert "event-loop thread stopped" in str(error)  # not an AssertionError of aiohttp's, nor a hang
    client.close()


def test_a_callback_failing_while_the_client_closes(threaded_server: FakeIllumass) -> None:
    """The call ends with the close's error, caused by the callback's; no key is left behind."""
    client = new_client(threaded_server)
    inside, gate = threading.Event(), threading.Event()

    def fail_later(_: ProvisionResult) -> None:
        inside.set()
        gate.wait(10)  # holds the loop thread until the close is under way
        raise ValueError("the callback failed")

    bulk, outcome = outcome_of(lambda: client.auth.create_api_keys(["a"], on_result=fail_later))
    inside.wait(10)
    closer = threading.Thread(target=client.close)
    closer.start()
    wait_for(lambda: running(closer, threading.Thread.join))  # the stop is queued on the loop
    gate.set()
    bulk.join()
    closer.join()
    [error] = outcome
    assert isinstance(error, IllumassError), repr(error)
    assert "closed while the call was in flight" in str(error)
    assert isinstance(error.__cause__, ValueError)
    assert threaded_server.stats.requests["createApiKey"] == 1
    assert list(threaded_server.api_keys) == []  # delivered to a callback that failed: revoked


def test_close_while_a_provision_block_is_exiting(threaded_server: FakeIllumass) -> None:
    client = new_client(threaded_server)
    threaded_server.faults.add("delay", "createApiKey", times=1000, delay=0.3)
    took: list[ProvisionResult] = []

    def consume() -> None:
        with client.auth.provision((f"k{i}" for i in range(50)), concurrency=4) as results:
            took.append(next(results))  # then leave: the exit waits for the creates in flight

    consumer, outcome = outcome_of(consume)
    wait_for(lambda: bool(took) and running(consumer, Illumass._through_portal))
    client.close()
    consumer.join()
    [error] = outcome
    assert isinstance(error, IllumassError), repr(error)
    assert str(error) == "this Illumass client was closed while the call was in flight"
    key = took[0].api_key
    assert key is not None and key.id in threaded_server.api_keys


def test_an_error_of_the_callers_specs_surfaces_from_the_block(threaded_server: FakeIllumass) -> None:
    def specs() -> Iterator[str]:
        yield "fine"
        raise RuntimeError("the spec source broke")

    received: list[ProvisionResult] = []
    with new_client(threaded_server) as client:
        with (
            pytest.raises(RuntimeError, match="the spec source broke"),
            client.auth.provision(specs()) as results,
        ):
            received.extend(results)
        assert client.auth.search_api_keys().total == len(threaded_server.api_keys)  # still usable
    # The key made for "fine", if any, was delivered or revoked: the server keeps what was received.
    assert {r.api_key.id for r in received if r.api_key} == set(threaded_server.api_keys)
    assert threaded_server.stats.requests["createApiKey"] <= 1


def test_an_unclosed_client_collected_on_its_own_loop_thread(threaded_server: FakeIllumass) -> None:
    """Its finalizer cannot wait for the thread it runs on: it stops the loop without joining."""
    before = loop_threads()
    client = new_client(threaded_server)

    def collected_here(_: ProvisionResult) -> None:
        client._finalizer()  # what the garbage collector does, on the loop thread

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(IllumassError, match="closed while the call was in flight"):
            client.auth.create_api_keys(["a"], on_result=collected_here)
    assert any("was never closed" in str(w.message) for w in caught)
    wait_for(lambda: loop_threads() == before)
    with pytest.raises(IllumassError, match="this Illumass client is closed"):
        client.auth.search_api_keys()
    client.close()


class _Ready:
    """An awaitable that is not a coroutine (as a Future or a custom awaitable is not)."""

    def __await__(self) -> Generator[Any, None, str]:
        yield from asyncio.sleep(0).__await__()
        return "awaited"


def test_the_facade_runs_awaitables_that_are_not_coroutines(threaded_server: FakeIllumass) -> None:
    with new_client(threaded_server) as client:
        assert client._call(_Ready) == "awaited"


# --- the transport --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_session_of_the_callers_own_is_used_and_left_open(server: FakeIllumass) -> None:
    async with aiohttp.ClientSession() as session:
        async with AsyncIllumass(
            server.url, email=server.email, password=server.password, http_session=session
        ) as client:
            assert (await client.auth.search_api_keys()).total == 0
        assert not session.closed
        assert server.stats.requests["searchApiKeys"] == 1


@pytest.mark.anyio
async def test_a_closed_client_refuses_calls(server: FakeIllumass) -> None:
    client = AsyncIllumass(server.url, email=server.email, password=server.password)
    await client.auth.search_api_keys()
    await client.aclose()
    with pytest.raises(IllumassError, match="the client is closed; create a new one"):
        await client.auth.search_api_keys()
    assert server.stats.requests["searchApiKeys"] == 1


def test_a_client_is_bound_to_its_first_event_loop(threaded_server: FakeIllumass) -> None:
    client = AsyncIllumass(
        threaded_server.url, email=threaded_server.email, password=threaded_server.password
    )
    first = asyncio.new_event_loop()
    try:
        assert first.run_until_complete(client.auth.search_api_keys()).total == 0
        with pytest.raises(IllumassError, match="first used on another event loop"):
            asyncio.run(client.auth.search_api_keys())
    finally:
        first.run_until_complete(client.aclose())
        first.close()
    assert threaded_server.stats.requests["searchApiKeys"] == 1


@pytest.mark.anyio
async def test_a_response_over_the_size_limit_is_refused(server: FakeIllumass) -> None:
    async with AsyncIllumass(
        server.url, email=server.email, password=server.password, max_response_size=2000, **FAST
    ) as client:
        for i in range(10):
            await client.auth.create_api_key(f"key {i}")
        with pytest.raises(InvalidResponseError, match="response larger than 2000 bytes"):
            await client.auth.search_api_keys()
    assert server.stats.requests["searchApiKeys"] == 3  # a search is safe to resend: retried twice


@pytest.mark.anyio
async def test_a_streamed_response_over_the_size_limit_is_cut_off() -> None:
    chunks_sent: list[int] = []

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()  # no Content-Length: the size shows only while reading
        await response.prepare(request)
        for _ in range(8):
            await response.write(b" " * 1000)
            chunks_sent.append(1)
        await response.write_eof()
        return response

    async with raw_server(stream) as url, AsyncIllumass(url, api_key=API_KEY, max_response_size=2500) as c:
        with pytest.raises(InvalidResponseError, match="response larger than 2500 bytes") as info:
            await c.request("GET", "/big")
    assert info.value.__cause__ is None and info.value.__context__ is None


@pytest.mark.anyio
async def test_an_empty_success_is_none_and_a_malformed_one_an_error() -> None:
    async with raw_server(answering(204, b"")) as url, AsyncIllumass(url, api_key=API_KEY) as client:
        assert await client.request("DELETE", "/empty") is None
    seen: list[str] = []

    async def malformed(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(status=200, body=b'{"error": "nope"}')

    async with raw_server(malformed) as url, AsyncIllumass(url, api_key=API_KEY, **FAST) as client:
        with pytest.raises(InvalidResponseError, match="malformed error object in a 200 response"):
            await client.request("GET", "/odd")
    assert seen == ["/v4/odd"] * 3  # unreadable, and a GET is safe to resend: retried twice


def test_a_retry_after_date_without_a_time_zone_is_ignored() -> None:
    naive = email.utils.format_datetime(datetime(2030, 1, 1))  # "... -0000": no zone known
    assert naive.endswith("-0000")
    assert _retry_after(naive) is None
    assert _retry_after(email.utils.format_datetime(datetime(2030, 1, 1).astimezone())) is not None


@pytest.mark.anyio
@pytest.mark.xfail(
    strict=True,
    reason="bug: the attempt's deadline (one timer for the whole attempt) cannot tell connecting from "
    "waiting for the answer, so a connection that could not be made in time is reported as 'no response' "
    "and marked as maybe-reached",
)
async def test_a_connection_that_cannot_be_made_in_time_is_a_connect_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]  # the accept queue is full: SYNs go unanswered
        try:
            for filler in fillers:
                filler.setblocking(False)
                with suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
            async with AsyncIllumass(
                f"http://127.0.0.1:{port}/v4", api_key=API_KEY, timeout=0.3, max_retries=0
            ) as client:
                with pytest.raises(APITimeoutError, match=r"connecting took over 0\.3s"):
                    await client.request("GET", "/anything")
        finally:
            for filler in fillers:
                filler.close()


@pytest.mark.anyio
async def test_a_base_url_without_the_api_prefix_gets_a_hint() -> None:
    """Kuzzle's own 404 for a route it does not know, as a front without ``/v4`` passes it on."""
    not_found = {
        "status": 404,
        "error": {"status": 404, "id": "network.http.url_not_found", "message": "API URL not found"},
        "result": None,
    }
    async with raw_server(answering(404, json.dumps(not_found).encode())) as url:
        root = url.removesuffix("/v4")
        async with AsyncIllumass(root, api_key=API_KEY) as client:
            with pytest.raises(NotFoundError, match=f"may lack the API prefix: try {root}/v4") as info:
                await client.auth.search_api_keys()
    assert info.value.error_id == "network.http.url_not_found" and info.value.status == 404


@pytest.mark.anyio
async def test_an_unknown_route_under_v4_gets_no_prefix_hint(client: AsyncIllumass) -> None:
    with pytest.raises(NotFoundError) as info:
        await client.request("GET", "/no/such/route")
    assert info.value.error_id == "network.http.url_not_found"
    assert "may lack the API prefix" not in str(info.value)


# --- the auth policy -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_rejected_session_token_without_a_password_says_log_in_again(
    client: AsyncIllumass, server: FakeIllumass, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ILLUMASS_EMAIL", raising=False)
    monkeypatch.delenv("ILLUMASS_PASSWORD", raising=False)
    token = await client.auth.login()
    async with AsyncIllumass(server.url, session_token=token.jwt) as cached:
        assert (await cached.auth.search_api_keys()).total == 0
        server.forget_sessions()
        with pytest.raises(AuthenticationError, match="session token has expired or was revoked"):
            await cached.auth.search_api_keys()
    assert server.stats.logins == 1


@pytest.mark.anyio
async def test_a_never_expiring_session_token_is_used_as_is(server: FakeIllumass) -> None:
    async with aiohttp.ClientSession() as session:
        body = {"email": server.email, "password": server.password}
        async with session.post(f"{server.url}/login?expiresIn=-1", json=body) as response:
            result = (await response.json())["result"]
    assert result["expiresAt"] == -1 and "exp" not in (claims(result["jwt"]) or {"exp": 0})
    async with AsyncIllumass(server.url, session_token=result["jwt"]) as client:
        assert client.auth.token is None
        for _ in range(3):
            await client.auth.search_api_keys()
    assert server.stats.logins == 1  # only the raw one above


@pytest.mark.anyio
async def test_an_api_key_client_can_switch_to_a_login(client: AsyncIllumass, server: FakeIllumass) -> None:
    key = await client.auth.create_api_key("bot")
    assert key.token is not None
    async with AsyncIllumass(server.url, api_key=key.token) as bot:
        await bot.auth.search_api_keys()
        token = await bot.auth.login(server.email, server.password)
        assert bot.auth.token == token
        await client.auth.delete_api_key(key.id)  # the key is gone; the session goes on
        assert (await bot.auth.search_api_keys()).total == 0
    assert server.stats.logins == 2


@pytest.mark.anyio
async def test_refused_credentials_are_never_sent_again(server: FakeIllumass) -> None:
    async with AsyncIllumass(server.url, email=server.email, password="wrong") as client:
        with pytest.raises(InvalidCredentialsError):
            await client.auth.login()
        with pytest.raises(InvalidCredentialsError) as again:
            await client.auth.login(expires_in="2h")
        assert again.value.status == 401
        with pytest.raises(InvalidCredentialsError):
            await client.auth.search_api_keys()
    assert server.stats.requests["login"] == 1


@pytest.mark.anyio
async def test_logout_before_any_login_sends_nothing(client: AsyncIllumass, server: FakeIllumass) -> None:
    await client.auth.logout()
    assert client.auth.token is None
    assert server.stats.requests["logout"] == 0 and server.stats.logins == 0


@pytest.mark.anyio
async def test_a_call_in_flight_during_logout_does_not_log_in_again(
    client: AsyncIllumass, server: FakeIllumass
) -> None:
    await client.auth.login()
    server.faults.add("delay", "searchApiKeys", delay=0.3)
    outcome: list[BaseException] = []

    async def search() -> None:
        try:
            await client.auth.search_api_keys()
        except BaseException as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(search)
        while server.stats.in_flight == 0:  # noqa: ASYNC110 (server state: no event to wait on)
            await anyio.sleep(0.002)
        await client.auth.logout()  # the search then meets its revoked token
    [error] = outcome
    assert isinstance(error, AuthenticationError)
    assert "logged out while this call was in flight" in str(error)
    assert server.stats.logins == 1


@pytest.mark.anyio
async def test_waiters_on_a_failed_renewal_keep_the_token_without_retrying(server: FakeIllumass) -> None:
    async with AsyncIllumass(
        server.url, email=server.email, password=server.password, login_expires_in="3s", max_retries=0, **FAST
    ) as client:
        await client.auth.search_api_keys()
        # Past min(300 s, ttl/2) = 1.5 s: due for renewal, and valid on the server still (which
        # floors the token's lifetime to whole seconds: at least 2 s left of the 3).
        await anyio.sleep(1.6)
        server.faults.add("status", "login", status=503)
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(client.auth.search_api_keys)
    assert server.stats.requests["login"] == 2  # the first login, then one failed renewal
    assert server.stats.requests["searchApiKeys"] == 4


@pytest.mark.anyio
async def test_waiters_on_a_failed_first_login_share_its_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/v4"  # nothing listens there
    async with AsyncIllumass(url, email="a@b.c", password="pw", max_retries=0) as client:
        errors: list[BaseException] = []

        async def search() -> None:
            try:
                await client.auth.search_api_keys()
            except BaseException as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(search)
    assert len(errors) == 3 and all(isinstance(e, APIConnectionError) for e in errors)
    assert len({id(e) for e in errors}) == 3  # each task raises its own copy
    assert len({str(e) for e in errors}) == 1


@pytest.mark.anyio
async def test_a_login_failing_for_all_waiters_is_sent_once(server: FakeIllumass) -> None:
    server.faults.add("status", "login", status=503)
    async with AsyncIllumass(server.url, email=server.email, password=server.password, max_retries=0) as c:
        errors: list[BaseException] = []

        async def search() -> None:
            try:
                await c.auth.search_api_keys()
            except BaseException as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(search)
    assert len(errors) == 3 and all(isinstance(e, ServiceUnavailableError) for e in errors)
    assert server.stats.requests["login"] == 1


# --- small helpers --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_waiter_cancelled_for_room_leaves_the_count_right() -> None:
    limiter = Pushback(ceiling=1)
    await limiter.acquire()

    async def waiter() -> None:
        await limiter.acquire()

    cancelled = asyncio.get_running_loop().create_task(waiter())
    await asyncio.sleep(0)  # now waiting for room
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    limiter.release()  # skips the cancelled waiter
    assert limiter.in_flight == 0
    await limiter.acquire()
    handed = asyncio.get_running_loop().create_task(waiter())
    await asyncio.sleep(0)
    limiter.release()  # hands the room to the waiter...
    assert limiter.in_flight == 1
    handed.cancel()  # ...which is cancelled before it runs: it passes the room on
    with pytest.raises(asyncio.CancelledError):
        await handed
    assert limiter.in_flight == 0


def test_secret_edges() -> None:
    with pytest.raises(TypeError, match="Secret takes a str, not bytes"):
        Secret(cast(str, b"raw"))
    assert Secret("a") != "a" and Secret("a") == Secret("a")
    assert hash(Secret("a")) == hash(Secret("a")) and len({Secret("a"), Secret("a"), Secret("b")}) == 2


@pytest.mark.parametrize(
    ("result", "cls", "message"),
    [
        ({"valid": "yes", "state": "ok"}, TokenInfo, "expected a boolean, got str"),
        ({"hits": [], "total": "3"}, ApiKeyPage, "expected an integer, got str"),
        ({"_id": "u", "jwt": "t", "ttl": 1, "expiresAt": "soon"}, AuthToken, "expected milliseconds"),
    ],
)
def test_wrong_types_in_results(result: dict[str, Any], cls: type, message: str) -> None:
    with pytest.raises(InvalidResponseError, match=message):
        structure(result, cls)


def test_an_error_inside_a_success_status_keeps_its_own_status() -> None:
    forbidden = {"error": {"status": 403, "id": "security.rights.forbidden", "message": "no"}}
    with pytest.raises(PermissionDeniedError) as info:
        unwrap(200, forbidden, "rid")
    assert info.value.status == 403 and info.value.request_id == "rid"
    with pytest.raises(ServerError) as unknown:  # no error status of its own: a server fault
        unwrap(200, {"error": {"id": "some.thing", "message": "odd", "status": 200}}, None)
    assert unknown.value.status == 500


def test_argument_and_duration_edges() -> None:
    with pytest.raises(TypeError, match="email must be a non-empty str"):
        AsyncIllumass("http://127.0.0.1:1/v4", email="", password="pw")
    with pytest.raises(TypeError, match="password must be a str or Secret, not int"):
        AsyncIllumass("http://127.0.0.1:1/v4", email="a@b.c", password=cast(str, 1234))
    with pytest.raises(ValueError, match="duration out of range"):
        parse_duration(1e20)
    with pytest.raises(ValueError, match="duration must be finite"):
        parse_duration(math.inf)
    assert claims(cast(str, None)) is None
    # Invalid specs fail their item only when it runs; their dicts stay JSON-safe meanwhile.
    odd = ApiKeySpec(cast(str, object), expires_in=cast(Any, 1.5), key_id=cast(Any, math.nan))
    assert odd.to_dict() == {"description": repr(object), "expires_in": 1.5, "key_id": "nan"}
    assert json.loads(json.dumps(odd.to_dict())) == odd.to_dict()


@pytest.mark.anyio
async def test_a_long_description_that_fits_is_sent(client: AsyncIllumass, server: FakeIllumass) -> None:
    description = "d" * 200_000  # past the quick bound (6 bytes a character), under 1 MB as JSON
    key = await client.auth.create_api_key(description)
    assert server.api_keys[key.id].description == description


@pytest.mark.anyio
async def test_a_waiter_whose_login_was_cancelled_logs_in_itself(server: FakeIllumass) -> None:
    """An earlier login failed; the next one is cancelled in flight: a call that waited for it
    logs in itself rather than raise the earlier failure."""
    async with AsyncIllumass(server.url, email=server.email, password=server.password, max_retries=0) as c:
        server.faults.add("status", "login", status=503)
        with pytest.raises(ServiceUnavailableError):
            await c.auth.search_api_keys()
        slow = server.faults.add("delay", "login", delay=0.3)
        leader = asyncio.ensure_future(c.auth.search_api_keys())
        for _ in range(500):  # until its login is in flight
            if server.stats.in_flight:
                break
            await asyncio.sleep(0.002)
        waiter = asyncio.ensure_future(c.auth.search_api_keys())
        await asyncio.sleep(0.01)  # the waiter waits for that login (the server holds it 0.3 s)
        leader.cancel()
        assert (await waiter).total == 0
        assert slow.fired == 1
    assert server.stats.requests["login"] == 3
