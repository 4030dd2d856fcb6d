"""Illumass, the blocking facade: same surface, one loop thread, threads, Jupyter, Ctrl-C, fork."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from illumass import AsyncIllumass, Illumass, IllumassError, NotFoundError
from illumass._client import AsyncAuthAPI
from illumass._sync import AuthAPI
from illumass.testing import FakeIllumass


def loop_threads() -> int:
    """The blocking clients' loop threads (other threads, e.g. aiohttp's resolver, come and go)."""
    return sum(t.name == "illumass-loop" for t in threading.enumerate())


@pytest.fixture
def threaded_server() -> Iterator[FakeIllumass]:
    with FakeIllumass(api_key_cap=None, refresh_interval=0.05) as server:
        yield server


@pytest.fixture
def client(threaded_server: FakeIllumass) -> Iterator[Illumass]:
    with Illumass(threaded_server.url, email=threaded_server.email, password=threaded_server.password) as c:
        yield c


def public(cls: type) -> list[str]:
    return sorted(n for n in dir(cls) if not n.startswith("_"))


def test_same_surface_and_signatures() -> None:
    assert public(AsyncAuthAPI) == public(AuthAPI)
    assert set(public(AsyncIllumass)) - {"aclose"} == set(public(Illumass)) - {"close"}
    pairs: list[tuple[Callable[..., Any], Callable[..., Any]]] = [
        (AsyncIllumass.__init__, Illumass.__init__),
        (AsyncIllumass.request, Illumass.request),
    ]
    pairs += [
        (getattr(AsyncAuthAPI, n), getattr(AuthAPI, n))
        for n in public(AuthAPI)
        if callable(getattr(AuthAPI, n))
    ]
    for async_fn, sync_fn in pairs:
        a, s = inspect.signature(async_fn), inspect.signature(sync_fn)
        # An aiohttp session belongs to one event loop: the facade runs its own, so it takes none.
        async_only = {"http_session"}
        assert [(p.name, p.kind, p.default) for p in a.parameters.values() if p.name not in async_only] == [
            (p.name, p.kind, p.default) for p in s.parameters.values()
        ], async_fn.__name__


def test_lifecycle(client: Illumass, threaded_server: FakeIllumass) -> None:
    token = client.auth.login()
    assert client.auth.token == token
    key = client.auth.create_api_key("sync", expires_in="1d")
    assert key.token is not None
    found = client.auth.find_api_key(key.token)
    assert found is not None and found.id == key.id
    keys = client.auth.iter_api_keys(page_size=1)
    assert isinstance(keys, Iterator) and [k.id for k in keys] == [key.id]
    assert client.auth.search_api_keys().total == 1
    assert client.auth.check_token().valid
    assert client.request("GET", "/_me")["_id"] == threaded_server.user_id()
    client.auth.delete_api_key(key.id)
    with pytest.raises(NotFoundError):  # the async core's exception, unwrapped
        client.auth.delete_api_key(key.id)
    client.auth.logout()
    assert client.auth.token is None


def test_bulk_through_the_facade(client: Illumass, threaded_server: FakeIllumass) -> None:
    seen: list[int] = []
    results = client.auth.create_api_keys(
        ["a", "b", "c"], concurrency=2, on_result=lambda r: seen.append(r.index)
    )
    assert [r.index for r in results] == [0, 1, 2] and all(r.ok for r in results)
    assert sorted(seen) == [0, 1, 2]
    with client.auth.provision((f"k{i}" for i in range(1000)), concurrency=4) as stream:
        taken = [r for _, r in zip(range(10), stream, strict=False)]
    assert len(threaded_server.api_keys) == 3 + 10
    assert {r.api_key.id for r in taken if r.api_key} <= set(threaded_server.api_keys)


def test_close_is_idempotent_and_final(threaded_server: FakeIllumass) -> None:
    before = loop_threads()
    client = Illumass(threaded_server.url, email=threaded_server.email, password=threaded_server.password)
    client.auth.search_api_keys()
    assert loop_threads() == before + 1
    client.close()
    client.close()
    assert loop_threads() == before
    with pytest.raises(IllumassError, match="closed"):
        client.auth.search_api_keys()


def test_bad_arguments_raise_in_the_caller(threaded_server: FakeIllumass) -> None:
    before = loop_threads()
    with pytest.raises(ValueError):
        Illumass("http://example.com/v4")
    assert loop_threads() == before
    with Illumass(threaded_server.url, email=threaded_server.email, password="x") as client:
        with pytest.raises(ValueError):
            client.auth.create_api_key("")
        with pytest.raises(ValueError):
            client.auth.provision(["a"], concurrency=0)
    assert sum(threaded_server.stats.requests.values()) == 0


def test_sixteen_threads_share_one_login(client: Illumass, threaded_server: FakeIllumass) -> None:
    with ThreadPoolExecutor(16) as pool:
        keys = list(pool.map(lambda i: client.auth.create_api_key(f"t{i}"), range(64)))
    assert len({k.id for k in keys}) == 64
    assert threaded_server.stats.logins == 1


def test_from_a_thread_running_an_event_loop(client: Illumass) -> None:
    async def cell() -> int:
        return client.auth.search_api_keys().total

    with pytest.warns(RuntimeWarning, match="blocks that loop"):
        assert asyncio.run(cell()) == 0


def test_call_from_the_loop_thread_is_an_error(client: Illumass) -> None:
    errors: list[Exception] = []

    def reenter(_: object) -> None:
        try:
            client.auth.search_api_keys()
        except IllumassError as exc:
            errors.append(exc)

    results = client.auth.create_api_keys(["a"], on_result=reenter)
    assert results[0].ok
    assert errors and "own event loop" in str(errors[0])


def test_ctrl_c_cancels_the_call_and_leaves_the_client_usable(
    client: Illumass, threaded_server: FakeIllumass
) -> None:
    client.auth.search_api_keys()
    threaded_server.faults.add("delay", "searchApiKeys", delay=5.0)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        client.auth.search_api_keys()
    assert time.monotonic() - started < 3
    assert client.auth.search_api_keys().total == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # on purpose
def test_use_after_fork_is_a_clear_error(client: Illumass) -> None:
    client.auth.search_api_keys()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            client.auth.search_api_keys()
            message = b"no error"
        except IllumassError as exc:
            message = str(exc).encode()
        except BaseException as exc:  # pragma: no cover
            message = repr(exc).encode()
        os.write(write, message)
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as pipe:
        assert b"another process" in pipe.read()
    assert client.auth.search_api_keys().total == 0
