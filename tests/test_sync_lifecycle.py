"""The blocking facade's life: exit without close, fork, close under load, close from a callback.

The first two are about whether a process exits at all, so they run scripts in a subprocess with
a timeout: a hang fails the test instead of hanging the suite.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from illumass import Illumass, IllumassError, ProvisionResult
from illumass.testing import FakeIllumass

from .conftest import served


def loop_threads() -> int:
    """The blocking clients' loop threads (other threads, e.g. aiohttp's resolver, come and go)."""
    return sum(t.name == "illumass-loop" for t in threading.enumerate())


@pytest.fixture
def threaded_server() -> Iterator[FakeIllumass]:
    with FakeIllumass(api_key_cap=None, refresh_interval=0.05) as server:
        yield server


def new_client(server: FakeIllumass) -> Illumass:
    return Illumass(server.url, email=server.email, password=server.password)


def run_script(source: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``source`` in a fresh interpreter, showing every ResourceWarning; 5 s to exit."""
    return subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-c", textwrap.dedent(source), *args],
        capture_output=True,
        text=True,
        timeout=5,
    )


def assert_session_closed(stderr: str) -> None:
    # aiohttp's own complaints when a session or connection is garbage collected open.
    assert "Unclosed" not in stderr and "unclosed transport" not in stderr, stderr


UNCLOSED = """
import gc, sys, threading, warnings
from illumass import Illumass
from illumass.testing import FakeIllumass
loop_threads = lambda: sum(t.name == "illumass-loop" for t in threading.enumerate())

with FakeIllumass(api_key_cap=None, refresh_interval=0.05) as server:
    client = Illumass(server.url, email=server.email, password=server.password)
    {body}
print("script done")
"""

BODIES = {
    "after a call": "client.auth.search_api_keys()",
    "without a call": "pass",
    "crashing": "client.auth.search_api_keys(); raise RuntimeError('the script fails')",
}


@pytest.mark.parametrize("body", BODIES.values(), ids=list(BODIES))
def test_a_script_that_never_closes_its_client_exits(body: str) -> None:
    result = run_script(UNCLOSED.format(body=body))
    if "raise" in body:
        assert result.returncode == 1 and "RuntimeError: the script fails" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert result.stdout == "script done\n"
    assert "ResourceWarning: <Illumass http://127.0.0.1:" in result.stderr
    assert "was never closed" in result.stderr
    assert_session_closed(result.stderr)


def test_a_client_dropped_mid_script_is_closed() -> None:
    body = """client.auth.search_api_keys()
    threads = loop_threads()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del client
        gc.collect()
    print("loop threads left:", 1 - (threads - loop_threads()))
    print("warned:", any("never closed" in str(w.message) for w in caught))"""
    result = run_script(UNCLOSED.format(body=body))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "loop threads left: 0\nwarned: True\nscript done\n"
    assert_session_closed(result.stderr)


FORKED = """
import os, sys
from illumass import Illumass, IllumassError

url, mode = sys.argv[1:]
client = Illumass(url, email="a@b.c", password="pw")
if mode != "unused":
    client.auth.search_api_keys()
pid = os.fork()
if pid == 0:
    try:
        client.auth.search_api_keys()
    except IllumassError as exc:
        print("child:", exc, flush=True)
    if mode == "close":
        client.close()
    if mode == "fresh":
        fresh = Illumass(url, email="a@b.c", password="pw")
        print("fresh client in the child:", fresh.auth.search_api_keys().total, flush=True)
    sys.exit(0)  # a normal exit: atexit, finalizers, garbage collection
_, status = os.waitpid(pid, 0)
print("child exit code:", os.waitstatus_to_exitcode(status))
print("parent's client:", client.auth.search_api_keys().total)
client.close()
"""


@pytest.fixture(scope="module")
def server_process() -> Iterator[str]:
    with served("illumass.testing", "--user", "a@b.c:pw") as url:
        yield url


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
@pytest.mark.parametrize("mode", ["close", "no close", "unused", "fresh"])
def test_a_forked_child_exits_and_cannot_use_the_parents_client(server_process: str, mode: str) -> None:
    result = run_script(FORKED, server_process, mode)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("child: this Illumass client was created in another process")
    if mode == "fresh":
        assert lines[1] == "fresh client in the child: 0"
    assert lines[-2:] == ["child exit code: 0", "parent's client: 0"]


def test_close_ends_calls_in_flight_with_a_clear_error(threaded_server: FakeIllumass) -> None:
    before = loop_threads()
    client = new_client(threaded_server)
    client.auth.login()
    threaded_server.faults.add("delay", "searchApiKeys", times=3, delay=3.0)
    outcomes = close_during(
        client, client.auth.search_api_keys, lambda: threaded_server.stats.in_flight == 3, threads=3
    )
    assert len(outcomes) == 3
    for outcome in outcomes:
        assert isinstance(outcome, IllumassError), repr(outcome)
        assert "closed while the call was in flight" in str(outcome)
    assert loop_threads() == before
    with pytest.raises(IllumassError, match="closed"):
        client.auth.search_api_keys()


@pytest.mark.parametrize("with_callback", [False, True], ids=["no callback", "on_result"])
def test_close_during_create_api_keys_revokes_what_was_not_delivered(
    threaded_server: FakeIllumass, with_callback: bool
) -> None:
    client = new_client(threaded_server)
    threaded_server.faults.add("delay", "createApiKey", times=1000, delay=0.05)
    running = threading.Event()
    delivered: list[str] = []

    def specs() -> Iterator[str]:
        for i in range(200):
            if i == 4:  # read on the loop thread: two workers have each finished a create
                running.set()
            yield f"key {i}"

    def on_result(result: ProvisionResult) -> None:
        if result.api_key is not None:
            delivered.append(result.api_key.id)

    def bulk() -> object:
        callback = on_result if with_callback else None
        return client.auth.create_api_keys(specs(), concurrency=2, on_result=callback)

    [outcome] = close_during(client, bulk, running.is_set)
    assert isinstance(outcome, IllumassError), repr(outcome)
    assert threaded_server.stats.requests["createApiKey"] >= 4  # keys were made, then...
    assert set(threaded_server.api_keys) == set(delivered)  # ...only the delivered ones remain
    requests = threaded_server.stats.requests  # creates are shielded: each one made a key
    assert requests["createApiKey"] - requests["deleteApiKey"] == len(delivered)


def test_close_during_provision_revokes_what_was_not_delivered(threaded_server: FakeIllumass) -> None:
    client = new_client(threaded_server)
    threaded_server.faults.add("delay", "createApiKey", times=1000, delay=0.05)
    received: list[str] = []

    def consume() -> None:
        with client.auth.provision((f"key {i}" for i in range(200)), concurrency=4) as results:
            for result in results:
                assert result.api_key is not None
                received.append(result.api_key.id)

    [outcome] = close_during(client, consume, lambda: bool(received))
    assert isinstance(outcome, IllumassError), repr(outcome)
    assert set(threaded_server.api_keys) == set(received)
    assert threaded_server.stats.requests["createApiKey"] > len(received)  # some were revoked


def test_close_inside_a_provision_block(threaded_server: FakeIllumass) -> None:
    client = new_client(threaded_server)
    with client.auth.provision((f"key {i}" for i in range(200)), concurrency=4) as results:
        first = next(results)
        client.close()
        with pytest.raises(IllumassError, match="closed"):
            next(results)
    assert first.api_key is not None and list(threaded_server.api_keys) == [first.api_key.id]
    assert threaded_server.stats.requests["createApiKey"] > 1  # the others were revoked


def test_close_from_a_callback_is_a_clear_error_and_leaks_nothing(threaded_server: FakeIllumass) -> None:
    before = loop_threads()
    client = new_client(threaded_server)
    errors: list[BaseException] = []

    def close_here(_: ProvisionResult) -> None:
        try:
            client.close()
        except BaseException as exc:
            errors.append(exc)

    results = client.auth.create_api_keys(["a"], on_result=close_here)
    assert results[0].ok
    assert isinstance(errors[0], IllumassError)
    assert "close the client after the call returns" in str(errors[0])
    assert client.auth.search_api_keys().total == 1  # still open and usable
    client.close()
    assert loop_threads() == before


def test_a_client_whose_loop_thread_died_raises_clear_errors(threaded_server: FakeIllumass) -> None:
    before = loop_threads()
    client = new_client(threaded_server)

    def exit_here(_: ProvisionResult) -> None:
        raise SystemExit(3)  # raised on the loop thread: it ends the loop

    with pytest.raises(IllumassError, match="SystemExit"):
        client.auth.create_api_keys(["a"], on_result=exit_here)
    with pytest.raises(IllumassError, match="event-loop thread stopped"):
        client.auth.search_api_keys()
    client.close()
    assert loop_threads() == before


def close_during(
    client: Illumass, call: Callable[[], object], until: Callable[[], bool], threads: int = 1
) -> list[object]:
    """Run ``call`` on ``threads`` threads, close ``client`` once ``until()`` holds, and return
    what each call returned or raised (any BaseException: the test checks which)."""
    outcomes: list[object] = []

    def run() -> None:
        try:
            outcomes.append(call())
        except BaseException as exc:
            outcomes.append(exc)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    wait_for(until)
    client.close()
    for worker in workers:
        worker.join()
    return outcomes


def wait_for(condition: Callable[[], bool]) -> None:
    """Block until ``condition()`` holds (a synchronisation point, not a timed assertion)."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.005)
