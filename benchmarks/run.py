"""Benchmarks: the SDK against what a user would write instead, in the same run.

FakeIllumass runs in separate processes, so the client's own CPU time (getrusage of this process)
is what is measured. Every comparison interleaves its contenders round by round and reports
medians. Results go to OUT/results.json and, for full runs, to benchmarks/RESULTS.md.

    python benchmarks/run.py            # full run (about 15 minutes)
    python benchmarks/run.py --quick    # smoke run: tiny sizes, numbers not meaningful
    python benchmarks/run.py --real-server http://127.0.0.1:7600/v4 --before-python VENV/bin/python
        # adds the real-server table (an uncapped Kuzzle harness) and release 0.1.0 baselines
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import httpx
import requests

import illumass
from illumass import AsyncIllumass, Illumass
from illumass.testing import FakeIllumass

HERE = Path(__file__).parent
SOAK_HEADING = "## Soak under faults"
FINDINGS_HEADING = "## Findings"
KEPT_HEADINGS = (FINDINGS_HEADING, SOAK_HEADING)  # written by hand or by the soak test: kept as they are
EMAIL, PASSWORD = "bench@illumass.test", "bench-password"
LONG = "30d"  # lifetime for throughput runs: enough distinct whole-second lifetimes (see unique_tokens)
FAST_REFRESH = 0.05  # seconds between index refreshes of the fake in throughput runs


# -- harness --------------------------------------------------------------------------------------


# Client and server on separate cores, so neither's load shows up in the other's figures.
_ALL_CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
CLIENT_CPUS = set(_ALL_CPUS[:1])
SERVER_CPUS = set(_ALL_CPUS[1:]) or CLIENT_CPUS


def pin(cpus: set[int]) -> None:
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Server:
    """FakeIllumass in its own process (benchmarks/_fake.py): uncapped, faults on request."""

    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc, self.url = proc, url

    def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())  # type: ignore[no-any-return]


@contextlib.contextmanager
def fake_server(latency_ms: float = 0.0, refresh: float = 0.0, *fault: str) -> Iterator[Server]:
    """Yields a running server. ``refresh``: seconds between index refreshes (0: at once)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "_fake.py"),
            "--user",
            f"{EMAIL}:{PASSWORD}",
            "--latency",
            str(latency_ms),
            "--refresh-interval",
            str(refresh),
            *fault,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: pin(SERVER_CPUS),
    )
    try:
        assert proc.stdout is not None
        yield Server(proc, proc.stdout.readline().strip())
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.write("quit\n")  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(10)
        if proc.stdout:
            proc.stdout.close()


def login_jwt(url: str) -> str:
    response = requests.post(f"{url}/login", json={"email": EMAIL, "password": PASSWORD}, timeout=30)
    return str(response.json()["result"]["jwt"])


@dataclass
class Measure:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, wall: float, cpu_time: float) -> None:
        self.wall.append(wall)
        self.cpu.append(cpu_time)

    def median(self) -> tuple[float, float]:
        return statistics.median(self.wall), statistics.median(self.cpu)


def on_loop(factory: Callable[[], Awaitable[None]]) -> Callable[[], None]:
    return lambda: asyncio.run(factory())  # type: ignore[arg-type]


def params(expires_in: str = "1h", *, refresh: bool = True) -> dict[str, str]:
    """The query a hand-written loop sends: the SDK's own (an id per create, a lifetime)."""
    query = {"expiresIn": expires_in, "_id": str(uuid.uuid4())}
    if not refresh:
        query["refresh"] = "false"
    return query


# -- contenders: one key at a time ----------------------------------------------------------------


def sdk_sequential(url: str, n: int, *, trust_env: bool = True) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        async with AsyncIllumass(url, email=EMAIL, password=PASSWORD, trust_env=trust_env) as client:
            await client.auth.login()
            wall0, cpu0 = time.perf_counter(), cpu()
            for i in range(n):
                await client.auth.create_api_key(f"sdk {i}")
            _record(wall0, cpu0)

    return run


def raw_aiohttp_sequential(url: str, jwt: str, n: int) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        headers = {"Authorization": f"Bearer {jwt}"}
        async with aiohttp.ClientSession() as session:
            wall0, cpu0 = time.perf_counter(), cpu()
            for i in range(n):
                async with session.post(
                    f"{url}/api-keys/_create",
                    params=params(),
                    json={"description": f"raw {i}"},
                    headers=headers,
                ) as response:
                    body = await response.json()
                    assert body["result"]["_source"]["token"]
            _record(wall0, cpu0)

    return run


def httpx_sequential(url: str, jwt: str, n: int) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {jwt}"}) as client:
            wall0, cpu0 = time.perf_counter(), cpu()
            for i in range(n):
                response = await client.post(
                    f"{url}/api-keys/_create", params=params(), json={"description": f"httpx {i}"}
                )
                assert response.json()["result"]["_source"]["token"]
            _record(wall0, cpu0)

    return run


def requests_sequential(url: str, jwt: str, n: int) -> Callable[[], None]:
    def run() -> None:
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {jwt}"
            wall0, cpu0 = time.perf_counter(), cpu()
            for i in range(n):
                response = session.post(
                    f"{url}/api-keys/_create", params=params(), json={"description": f"requests {i}"}
                )
                assert response.json()["result"]["_source"]["token"]
            _record(wall0, cpu0)

    return run


def blocking_sequential(url: str, n: int) -> Callable[[], None]:
    def run() -> None:
        with Illumass(url, email=EMAIL, password=PASSWORD) as client:
            client.auth.login()
            wall0, cpu0 = time.perf_counter(), cpu()
            for i in range(n):
                client.auth.create_api_key(f"sync {i}")
            _record(wall0, cpu0)

    return run


_last: list[tuple[float, float]] = []


def _record(wall0: float, cpu0: float) -> None:
    """Time only the loop itself, not session setup and teardown."""
    _last.append((time.perf_counter() - wall0, cpu() - cpu0))


Contender = Callable[[str, str], Callable[[], None]]  # (url, jwt) -> one timed run


def interleave_loops(
    contenders: dict[str, Contender],
    rounds: int,
    latency_ms: float = 0.0,
    *,
    refresh: float = 0.0,
    shared: bool = False,
) -> dict[str, Measure]:
    """Run each contender once per round, in turn.

    ``shared``: all against one server, for short runs compared call for call; otherwise each run
    gets a fresh server, so the keys stored by one run do not slow the next.
    """
    results = {name: Measure() for name in contenders}
    with contextlib.ExitStack() as stack:
        common = stack.enter_context(fake_server(latency_ms, refresh)) if shared else None
        for _ in range(rounds):
            for name, contender in contenders.items():
                with contextlib.nullcontext(common) if common else fake_server(latency_ms, refresh) as server:
                    assert server is not None
                    contender(server.url, login_jwt(server.url))()
                results[name].add(*_last.pop())
    return results


# -- contenders: many keys at once ----------------------------------------------------------------


def sdk_bulk(url: str, n: int, concurrency: int, expires_in: str = LONG) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        async with AsyncIllumass(url, email=EMAIL, password=PASSWORD) as client:
            await client.auth.login()
            wall0, cpu0 = time.perf_counter(), cpu()
            results = await client.auth.create_api_keys(
                (f"bulk {i}" for i in range(n)), concurrency=concurrency, expires_in=expires_in
            )
            _record(wall0, cpu0)
            failed = [r for r in results if not r.ok]
            assert not failed, f"{len(failed)} failed, e.g. {failed[0].error}"

    return run


def raw_aiohttp_bulk(url: str, jwt: str, n: int, concurrency: int) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        headers = {"Authorization": f"Bearer {jwt}"}
        gate = asyncio.Semaphore(concurrency)
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(i: int) -> None:
                async with (
                    gate,
                    session.post(
                        f"{url}/api-keys/_create",
                        params=params(LONG, refresh=False),
                        json={"description": f"raw {i}"},
                        headers=headers,
                    ) as response,
                ):
                    assert (await response.json())["result"]["_source"]["token"]

            wall0, cpu0 = time.perf_counter(), cpu()
            await asyncio.gather(*(one(i) for i in range(n)))
            _record(wall0, cpu0)

    return run


def httpx_bulk(url: str, jwt: str, n: int, concurrency: int) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        gate = asyncio.Semaphore(concurrency)
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {jwt}"}, limits=limits) as client:

            async def one(i: int) -> None:
                async with gate:
                    response = await client.post(
                        f"{url}/api-keys/_create",
                        params=params(LONG, refresh=False),
                        json={"description": f"httpx {i}"},
                    )
                    assert response.json()["result"]["_source"]["token"]

            wall0, cpu0 = time.perf_counter(), cpu()
            await asyncio.gather(*(one(i) for i in range(n)))
            _record(wall0, cpu0)

    return run


def requests_bulk(url: str, jwt: str, n: int, concurrency: int) -> Callable[[], None]:
    def run() -> None:
        with requests.Session() as session:
            adapter = requests.adapters.HTTPAdapter(pool_connections=concurrency, pool_maxsize=concurrency)
            session.mount("http://", adapter)
            session.headers["Authorization"] = f"Bearer {jwt}"

            def one(i: int) -> None:
                response = session.post(
                    f"{url}/api-keys/_create",
                    params=params(LONG, refresh=False),
                    json={"description": f"requests {i}"},
                )
                assert response.json()["result"]["_source"]["token"]

            wall0, cpu0 = time.perf_counter(), cpu()
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(one, range(n)))
            _record(wall0, cpu0)

    return run


# -- scenarios -------------------------------------------------------------------------------------


def sequential(quick: bool) -> dict[str, Any]:
    n, rounds = (30, 2) if quick else (200, 15)
    m = interleave_loops(
        {
            "sdk": lambda url, jwt: on_loop(sdk_sequential(url, n)),
            "sdk, trust_env=False": lambda url, jwt: on_loop(sdk_sequential(url, n, trust_env=False)),
            "raw aiohttp": lambda url, jwt: on_loop(raw_aiohttp_sequential(url, jwt, n)),
            "httpx": lambda url, jwt: on_loop(httpx_sequential(url, jwt, n)),
            "requests": lambda url, jwt: requests_sequential(url, jwt, n),
            "sdk blocking": lambda url, jwt: blocking_sequential(url, n),
        },
        rounds,
        shared=True,
    )
    per_call = {
        k: {"wall_us": v.median()[0] / n * 1e6, "cpu_us": v.median()[1] / n * 1e6} for k, v in m.items()
    }
    raw = per_call["raw aiohttp"]
    sdk = per_call["sdk"]
    ratios = [s / r for s, r in zip(m["sdk"].cpu, m["raw aiohttp"].cpu, strict=True)]
    return {
        "calls": n,
        "rounds": rounds,
        "per_call": per_call,
        "sdk_cpu_vs_raw_aiohttp": sdk["cpu_us"] / raw["cpu_us"],
        "sdk_cpu_vs_raw_per_round": {"min": min(ratios), "max": max(ratios)},
        "blocking_wall_vs_async": per_call["sdk blocking"]["wall_us"] / sdk["wall_us"],
        "blocking_cpu_vs_async": per_call["sdk blocking"]["cpu_us"] / sdk["cpu_us"],
    }


def facade_with_latency(quick: bool) -> dict[str, Any]:
    """The blocking facade against a server that takes 5 ms, closer to a real network."""
    n, rounds, latency = (20, 1, 5.0) if quick else (100, 7, 5.0)
    m = interleave_loops(
        {
            "sdk": lambda url, jwt: on_loop(sdk_sequential(url, n)),
            "sdk blocking": lambda url, jwt: blocking_sequential(url, n),
        },
        rounds,
        latency,
        shared=True,
    )
    async_wall, async_cpu = m["sdk"].median()
    sync_wall, sync_cpu = m["sdk blocking"].median()
    return {
        "calls": n,
        "latency_ms": latency,
        "async_wall_us": async_wall / n * 1e6,
        "blocking_wall_us": sync_wall / n * 1e6,
        "blocking_wall_vs_async": sync_wall / async_wall,
        "blocking_cpu_vs_async": sync_cpu / async_cpu,
    }


def bulk(quick: bool, *, n: int, latency_ms: float, concurrency: int, rounds: int) -> dict[str, Any]:
    if quick:
        n, rounds = min(n, 200), 1
    m = interleave_loops(
        {
            "sdk": lambda url, jwt: on_loop(sdk_bulk(url, n, concurrency)),
            "raw aiohttp": lambda url, jwt: on_loop(raw_aiohttp_bulk(url, jwt, n, concurrency)),
            "httpx": lambda url, jwt: on_loop(httpx_bulk(url, jwt, n, concurrency)),
            "requests+threads": lambda url, jwt: requests_bulk(url, jwt, n, concurrency),
        },
        rounds,
        latency_ms,
        refresh=FAST_REFRESH,
    )
    out: dict[str, Any] = {
        "keys": n,
        "latency_ms": latency_ms,
        "concurrency": concurrency,
        "rounds": rounds,
        "refresh_s": FAST_REFRESH,
    }
    ideal = n * latency_ms / 1000 / concurrency
    out["contenders"] = {
        k: {
            "wall_s": v.median()[0],
            "cpu_s": v.median()[1],
            "keys_per_s": n / v.median()[0],
            "cpu_us_per_key": v.median()[1] / n * 1e6,
        }
        for k, v in m.items()
    }
    if ideal:
        out["ideal_wall_s"] = ideal
        out["sdk_wall_vs_ideal"] = out["contenders"]["sdk"]["wall_s"] / ideal
    return out


def barrier(quick: bool) -> list[dict[str, Any]]:
    """The visibility barrier's fixed latency: SDK bulk against several refresh intervals."""
    n, latency, concurrency = (100, 50.0, 50) if quick else (2000, 50.0, 50)
    rows = []
    for refresh in (FAST_REFRESH, 1.0) if quick else (0.0, FAST_REFRESH, 0.2, 1.0):
        with fake_server(latency, refresh) as server:
            on_loop(sdk_bulk(server.url, n, concurrency))()
            wall, _ = _last.pop()
        rows.append(
            {
                "keys": n,
                "latency_ms": latency,
                "concurrency": concurrency,
                "refresh_s": refresh,
                "wall_s": wall,
            }
        )
    return rows


def unique_tokens(quick: bool) -> list[dict[str, Any]]:
    """Bulk creates with Illumass's default 1 h lifetime vs 30 d, on a fast server.

    A key's token is (user, iat in seconds, exp): the SDK gives keys of the same second distinct
    whole-second lifetimes, at most max(lifetime / 10, 60 s) shorter than asked, so one client can
    make only so many distinct 1 h tokens per second.
    """
    n, concurrency = (300, 32) if quick else (1000, 32)
    rows = []
    for expires_in in ("1h", LONG):

        async def run(url: str, expires_in: str = expires_in) -> dict[str, Any]:
            async with AsyncIllumass(url, email=EMAIL, password=PASSWORD) as client:
                await client.auth.login()
                wall0 = time.perf_counter()
                results = await client.auth.create_api_keys(
                    (f"u {i}" for i in range(n)), concurrency=concurrency, expires_in=expires_in
                )
                wall = time.perf_counter() - wall0
                ok = [r.api_key for r in results if r.ok and r.api_key is not None]
                tokens = {k.token.get_secret_value() for k in ok if k.token is not None}
                errors = collections.Counter(_error_kind(r.error) for r in results if not r.ok)
                return {"wall_s": wall, "ok": len(ok), "distinct_tokens": len(tokens), "errors": dict(errors)}

        with fake_server(0.0, FAST_REFRESH) as server:
            row = anyio.run(run, server.url)
            stats = server.stats()
        row.update(
            keys=n,
            concurrency=concurrency,
            expires_in=expires_in,
            creates=stats["requests"].get("createApiKey", 0),
            deletes=stats["requests"].get("deleteApiKey", 0),
        )
        rows.append(row)
    return rows


def _error_kind(error: BaseException | None) -> str:
    text = str(error)
    return (
        f"{type(error).__name__}: {text.split(': ', 1)[-1]}" if "API key " in text else type(error).__name__
    )


FAULTS = {
    "clean": [],
    "3% 503": ["--fault-status", "503", "--fault-probability", "0.03"],
    "3% 429, Retry-After 1": [
        "--fault-status",
        "429",
        "--fault-probability",
        "0.03",
        "--error-id",
        "api.process.too_many_requests",
        "--retry-after",
        "1",
    ],
}


def backpressure(quick: bool, before_python: str | None) -> dict[str, Any]:
    """1,000 keys at concurrency 32: clean, 3% of creates 503, 3% 429 with Retry-After 1."""
    n, concurrency, rounds = (300, 32, 1) if quick else (1000, 32, 3)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in FAULTS}
    before: dict[str, dict[str, Any]] = {}
    for _ in range(rounds):
        for name, fault in FAULTS.items():
            with fake_server(0.0, FAST_REFRESH, *fault) as server:
                on_loop(sdk_bulk(server.url, n, concurrency))()
                wall, cpu_time = _last.pop()
                stats = server.stats()
            runs[name].append({"wall_s": wall, "cpu_s": cpu_time, **stats})
    if before_python:
        for name, fault in FAULTS.items():
            with fake_server(0.0, FAST_REFRESH, *fault) as server:
                child = bulk_child(before_python, server.url, EMAIL, PASSWORD, n, concurrency, LONG)
                stats = server.stats()
            before[name] = {"wall_s": child["wall_s"], "ok": child["ok"], **stats}
    rows = {}
    for name, measures in runs.items():
        rows[name] = {
            "wall_s": statistics.median(m["wall_s"] for m in measures),
            "peak_rps_100ms": max(m["peak_rps_100ms"] for m in measures),
            "peak_rps_1s": max(m["peak_rps_1s"] for m in measures),
            "faults_fired": statistics.median(m["faults_fired"] for m in measures),
            "requests": statistics.median(sum(m["requests"].values()) for m in measures),
            "walls": [m["wall_s"] for m in measures],
        }
    clean = rows["clean"]
    for row in rows.values():
        row["wall_vs_clean"] = row["wall_s"] / clean["wall_s"]
        row["peak_vs_clean"] = row["peak_rps_100ms"] / clean["peak_rps_100ms"]
    return {
        "keys": n,
        "concurrency": concurrency,
        "rounds": rounds,
        "refresh_s": FAST_REFRESH,
        "rows": rows,
        "before": before,
    }


def bulk_revoke(quick: bool) -> dict[str, Any]:
    """``delete_api_keys(ids, concurrency=50)`` vs a ``delete_api_key`` loop, 50 ms latency."""
    n, latency, concurrency = (20, 50.0, 50) if quick else (2000, 50.0, 50)
    slow_n = 20 if quick else 200  # keys revoked concurrently against Kuzzle's 1 s refresh

    async def revoke(url: str, count: int, how: str) -> float:
        async with AsyncIllumass(url, email=EMAIL, password=PASSWORD) as client:
            made = await client.auth.create_api_keys(
                (f"r {i}" for i in range(count)), concurrency=64, expires_in=LONG
            )
            ids = [r.api_key.id for r in made if r.api_key is not None]
            assert len(ids) == count
            wall0 = time.perf_counter()
            if how == "one by one":
                for key_id in ids:
                    await client.auth.delete_api_key(key_id)
            else:
                results = await client.auth.delete_api_keys(ids, concurrency=concurrency)
                assert all(r.ok for r in results)
            wall = time.perf_counter() - wall0
            assert not (await client.auth.search_api_keys()).hits
            return wall

    rows = []
    for refresh, count, how in (
        (FAST_REFRESH, n, "delete_api_keys"),
        (FAST_REFRESH, n, "one by one"),
        (1.0, slow_n, "delete_api_keys"),
    ):
        with fake_server(latency, refresh) as server:
            wall = anyio.run(revoke, server.url, count, how)
        rows.append(
            {"how": how, "keys": count, "refresh_s": refresh, "wall_s": wall, "keys_per_s": count / wall}
        )
    return {
        "latency_ms": latency,
        "concurrency": concurrency,
        "rows": rows,
        "speedup": rows[1]["wall_s"] / rows[0]["wall_s"],
    }


def login_storm(quick: bool) -> dict[str, Any]:
    calls = 100 if quick else 1000

    async def run() -> dict[str, Any]:
        async with (
            FakeIllumass({EMAIL: PASSWORD}, api_key_cap=None, refresh_interval=0) as server,
            AsyncIllumass(server.url, email=EMAIL, password=PASSWORD) as client,
        ):
            await client.auth.search_api_keys()
            server.forget_sessions()  # every session token is now rejected
            before = server.stats.logins
            async with anyio.create_task_group() as tg:
                for _ in range(calls):
                    tg.start_soon(client.auth.search_api_keys)
            return {"calls": calls, "logins": server.stats.logins - before}

    return anyio.run(run)


def memory(quick: bool) -> dict[str, Any]:
    """Run in a fresh process so the peak RSS is this scenario's own."""
    n = 2000 if quick else 100_000
    done = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(n)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def memory_child(n: int) -> None:
    import psutil

    async def run() -> dict[str, Any]:
        with fake_server(0.0, FAST_REFRESH) as server:
            async with AsyncIllumass(server.url, email=EMAIL, password=PASSWORD) as client:
                await client.auth.login()
                await client.auth.create_api_key("warm-up")
                base = psutil.Process().memory_info().rss
                wall0, cpu0 = time.perf_counter(), cpu()
                count = 0
                async with client.auth.provision(
                    (f"mem {i}" for i in range(n)), concurrency=64, expires_in=LONG
                ) as results:
                    async for result in results:
                        count += result.ok
                wall, cpu_time = time.perf_counter() - wall0, cpu() - cpu0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return {
            "keys": n,
            "ok": count,
            "rss_growth_mb": (peak - base) / 2**20,
            "wall_s": wall,
            "cpu_s": cpu_time,
        }

    print(json.dumps(anyio.run(run)))


def scaling(quick: bool, memory_result: dict[str, Any]) -> list[dict[str, Any]]:
    sizes = [100, 1000] if quick else [1000, 10_000]
    rows = []
    for n in sizes:
        with fake_server(0.0, FAST_REFRESH) as server:
            on_loop(sdk_bulk(server.url, n, 64))()
            wall, cpu_time = _last.pop()
        rows.append({"keys": n, "wall_s": wall, "cpu_s": cpu_time, "cpu_us_per_key": cpu_time / n * 1e6})
    rows.append(
        {
            "keys": memory_result["keys"],
            "wall_s": memory_result["wall_s"],
            "cpu_s": memory_result["cpu_s"],
            "cpu_us_per_key": memory_result["cpu_s"] / memory_result["keys"] * 1e6,
        }
    )
    return rows


# -- the real server -------------------------------------------------------------------------------


def bulk_child(
    python: str, url: str, email: str, password: str, n: int, concurrency: int, expires_in: str
) -> dict[str, Any]:
    """benchmarks/_bulk_child.py under ``python`` (another venv: another illumass)."""
    done = subprocess.run(
        [python, str(HERE / "_bulk_child.py"), url, email, password, str(n), str(concurrency), expires_in],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",  # so that the benchmark folder's illumass checkout does not shadow the venv's
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


async def check_and_delete(url: str, email: str, password: str, keys: list[list[str]]) -> dict[str, int]:
    """How many of ``keys`` (id, token) the server accepts (``/_checkToken``), then revoke them all."""
    gate = asyncio.Semaphore(16)
    async with aiohttp.ClientSession() as session:

        async def valid(token: str) -> bool:
            async with gate, session.post(f"{url}/_checkToken", json={"token": token}) as response:
                return bool((await response.json())["result"]["valid"])

        accepted = sum(await asyncio.gather(*(valid(token) for _, token in keys)))
    async with AsyncIllumass(url, email=email, password=password) as client:
        results = await client.auth.delete_api_keys([key_id for key_id, _ in keys], concurrency=64)
        left = len((await client.auth.search_api_keys(size=1000)).hits)
    return {"authenticating": accepted, "deleted": sum(r.ok for r in results), "left_on_server": left}


async def raw_real(url: str, email: str, password: str, n: int, concurrency: int) -> dict[str, Any]:
    """The server's ceiling: a hand-written aiohttp loop with ``refresh=false`` and no checks at all."""
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/login", json={"email": email, "password": password}) as response:
            headers = {"Authorization": "Bearer " + (await response.json())["result"]["jwt"]}
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> list[str]:
            async with (
                gate,
                session.post(
                    f"{url}/api-keys/_create",
                    params=params("1h", refresh=False),
                    json={"description": f"raw {i}"},
                    headers=headers,
                ) as response,
            ):
                created = (await response.json())["result"]
                return [created["_id"], created["_source"]["token"]]

        wall0 = time.perf_counter()
        keys = await asyncio.gather(*(one(i) for i in range(n)))
        return {"wall_s": time.perf_counter() - wall0, "ok": len(keys), "errors": {}, "keys": keys}


def real_server(url: str, before_python: str | None, quick: bool) -> dict[str, Any]:
    """500 keys at concurrency 16 on the real Kuzzle harness, 0.1.0 and this SDK, interleaved."""
    email, password = "user@example.com", "user-pass"
    n, concurrency, rounds = (50, 16, 1) if quick else (500, 16, 2)
    contenders = {"after": sys.executable, "raw aiohttp, refresh=false (server ceiling)": ""}
    if before_python:
        contenders = {"before (0.1.0)": before_python, **contenders}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, python in contenders.items():
            if python:
                child = bulk_child(python, url, email, password, n, concurrency, "1h")
            else:
                child = anyio.run(raw_real, url, email, password, n, concurrency)
            keys = child.pop("keys")
            child["distinct_tokens"] = len({token for _, token in keys})
            child.update(anyio.run(check_and_delete, url, email, password, keys))
            child["keys_per_s"] = child["ok"] / child["wall_s"]
            runs[name].append(child)
            print(f"  {name}: {json.dumps(child)}", file=sys.stderr, flush=True)
    out: dict[str, Any] = {"url": url, "keys": n, "concurrency": concurrency, "rounds": rounds, "runs": runs}
    summary = {}
    for name, measures in runs.items():
        summary[name] = {
            "keys_per_s": statistics.median(m["keys_per_s"] for m in measures),
            "wall_s": statistics.median(m["wall_s"] for m in measures),
            "ok": min(m["ok"] for m in measures),
            "distinct_tokens": min(m["distinct_tokens"] for m in measures),
            "authenticating": min(m["authenticating"] for m in measures),
        }
    out["summary"] = summary
    if before_python:
        out["speedup"] = summary["after"]["keys_per_s"] / summary["before (0.1.0)"]["keys_per_s"]
    return out


# -- report ---------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {  # illumass from the code that ran, not from a possibly stale install
            "illumass": illumass.__version__,
            **{p: version(p) for p in ("aiohttp", "httpx", "requests", "anyio", "cattrs", "orjson")},
        },
    }


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def goals(r: dict[str, Any]) -> list[str]:
    seq, lat, bp = r["sequential"], r["bulk_latency"], r["backpressure"]["rows"]
    lines = [
        "| goal | measured | |",
        "|---|---|---|",
        f"| client CPU per `create_api_key` <= 1.0x raw aiohttp (issue 12) | "
        f"{seq['sdk_cpu_vs_raw_aiohttp']:.2f}x (rounds: {seq['sdk_cpu_vs_raw_per_round']['min']:.2f}-"
        f"{seq['sdk_cpu_vs_raw_per_round']['max']:.2f}x) | {verdict(seq['sdk_cpu_vs_raw_aiohttp'] <= 1.0)} |",
    ]
    real = r.get("real_server")
    if real:
        after = real["summary"]["after"]
        n = real["keys"]
        speedup = real.get("speedup")
        lines.append(
            f"| real server, {n} keys at concurrency {real['concurrency']}: >= 10x the keys/s of 0.1.0 "
            f"(issue 13) | "
            + (
                f"{speedup:.1f}x ({after['keys_per_s']:.0f} vs "
                f"{real['summary']['before (0.1.0)']['keys_per_s']:.1f} keys/s)"
                if speedup
                else "not run"
            )
            + f" | {verdict(bool(speedup) and speedup >= 10)} |"
        )
        lines.append(
            f"| real server: {n} distinct tokens, {n} keys that authenticate | "
            f"{after['distinct_tokens']} distinct, {after['authenticating']} authenticate | "
            f"{verdict(after['distinct_tokens'] == n and after['authenticating'] == n)} |"
        )
    else:
        lines.append("| real-server table (issue 13) | not run (`--real-server URL`) | **missed** |")
    lines += [
        f"| {r['backpressure']['keys']:,} keys, concurrency {r['backpressure']['concurrency']}, 3% 503: "
        f"wall <= 3x clean | {bp['3% 503']['wall_vs_clean']:.2f}x | "
        f"{verdict(bp['3% 503']['wall_vs_clean'] <= 3)} |",
        f"| same, 3% 503 / 3% 429: peak requests/s at the server <= clean | "
        f"{bp['3% 503']['peak_vs_clean']:.2f}x / {bp['3% 429, Retry-After 1']['peak_vs_clean']:.2f}x | "
        f"{verdict(max(bp[k]['peak_vs_clean'] for k in bp) <= 1.0)} |",
        f"| {lat['keys']} keys, {lat['latency_ms']:.0f} ms latency, concurrency {lat['concurrency']}: "
        f"wall <= 1.15x ideal ({lat['ideal_wall_s']:.2f} s) | {lat['sdk_wall_vs_ideal']:.3f}x "
        f"({lat['contenders']['sdk']['wall_s']:.2f} s) | {verdict(lat['sdk_wall_vs_ideal'] <= 1.15)} |",
        f"| blocking facade per call: wall <= 1.3x async | {seq['blocking_wall_vs_async']:.2f}x wall, "
        f"{seq['blocking_cpu_vs_async']:.2f}x CPU | {verdict(seq['blocking_wall_vs_async'] <= 1.3)} |",
        f"| {r['login_storm']['calls']} tasks meet an expired token: exactly 1 login | "
        f"{r['login_storm']['logins']} | {verdict(r['login_storm']['logins'] == 1)} |",
        f"| {r['memory']['keys']:,} keys through `provision`: peak RSS growth < 64 MB | "
        f"{r['memory']['rss_growth_mb']:.1f} MB | {verdict(r['memory']['rss_growth_mb'] < 64)} |",
    ]
    one_hour = next(u for u in r["unique_tokens"] if u["expires_in"] == "1h")
    lines.append(
        f"| bulk of {one_hour['keys']:,} keys with the default 1 h lifetime on a fast server: all ok | "
        f"{one_hour['ok']:,} ok | {verdict(one_hour['ok'] == one_hour['keys'])} |"
    )
    return lines


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    seq, lat, cpu_bound = r["sequential"], r["bulk_latency"], r["bulk_cpu"]
    lines = [
        "# Benchmark results",
        "",
        f"Run {r['date']} with `python benchmarks/run.py"
        + (" --real-server URL --before-python PATH" if r.get("real_server") else "")
        + f"` on {m['cpu']} ({m['cores']} cores), Python {m['python']}, {m['platform']}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + ".",
        "",
        "FakeIllumass runs in a separate process (`benchmarks/_fake.py`: no 10-key cap, faults, a",
        "request-rate sampler); CPU is this process's user+system time (getrusage), so it is the",
        "client's own. Contenders run interleaved, round by round (one-at-a-time calls against one",
        "shared server, bulk runs each against a fresh one); figures are medians. The client is",
        "pinned to one core and the server to the other (the blocking facade's two threads share the",
        "client's core). Unless a table says otherwise the fake refreshes its index every "
        f"{FAST_REFRESH * 1000:.0f} ms (Kuzzle: 1 s), so that the SDK's visibility barrier (bulk",
        "creates with `refresh=false`, then searches every 0.2 s until the keys are visible) is not",
        "what is measured; its cost at other intervals is in its own table. Throughput runs ask for",
        f"{LONG} keys, not the 1 h default: see *Unique tokens* for why.",
        "",
        "## Goals",
        "",
        *goals(r),
        "",
        f"## Sequential `create_api_key` ({seq['calls']} calls x {seq['rounds']} rounds, no server latency, "
        "index refreshed at once)",
        "",
        "| client | client CPU per call (us) | wall per call (us) | CPU vs raw aiohttp |",
        "|---|---|---|---|",
    ]
    raw_cpu = seq["per_call"]["raw aiohttp"]["cpu_us"]
    for name, v in seq["per_call"].items():
        lines.append(f"| {name} | {v['cpu_us']:.0f} | {v['wall_us']:.0f} | {v['cpu_us'] / raw_cpu:.2f}x |")
    fl = r["facade_latency"]
    lines += [
        "",
        f"With {fl['latency_ms']:.0f} ms of server latency the blocking facade costs "
        f"{fl['blocking_wall_vs_async']:.2f}x the async client's wall time per call "
        f"({fl['blocking_wall_us']:.0f} vs {fl['async_wall_us']:.0f} us) and "
        f"{fl['blocking_cpu_vs_async']:.2f}x its CPU.",
    ]
    real = r.get("real_server")
    if real:
        lines += [
            "",
            f"## Real server: {real['keys']} keys at concurrency {real['concurrency']} "
            f"({real['rounds']} rounds, interleaved)",
            "",
            "Kuzzle 2.56 harness (`shared/kuzzle`, `KZ_ES_DEFAULT_SIZE=10000`: no 10-key cap) at",
            f"{real['url']},",
            'user `user@example.com`, `create_api_keys(..., concurrency=16, expires_in="1h")` run in a',
            "subprocess per version (0.1.0 from its own venv). Every delivered token is checked with",
            "`POST /v4/_checkToken`, then every key is deleted. Figures: median keys/s, worst count.",
            "The raw aiohttp row is the server's own ceiling: creates with `refresh=false` and nothing",
            "else (no visibility wait, no twin or cap check), at the same concurrency, in this process.",
            "",
            "| SDK | wall (s) | keys/s | delivered | distinct tokens | authenticate |",
            "|---|---|---|---|---|---|",
        ]
        for name, s in real["summary"].items():
            lines.append(
                f"| {name} | {s['wall_s']:.2f} | {s['keys_per_s']:.1f} | {s['ok']} | "
                f"{s['distinct_tokens']} | {s['authenticating']} |"
            )
        if real.get("speedup"):
            lines += ["", f"Speed-up: {real['speedup']:.1f}x keys/s."]
    bp = r["backpressure"]
    lines += [
        "",
        f"## Backpressure: {bp['keys']:,} keys at concurrency {bp['concurrency']} ({bp['rounds']} rounds)",
        "",
        f"FakeIllumass, no latency, index refresh every {bp['refresh_s'] * 1000:.0f} ms (so the barrier",
        "is not the bottleneck). Faults answer a share of `createApiKey` requests without creating",
        "anything. Peak rate: the most requests (all actions) the server received in any 100 ms",
        "(and any 1 s), scaled to per second; the worst round is shown. Default backoff (0.5 s doubling).",
        "",
        "| run | wall (s) | vs clean | faults fired | requests | peak req/s (100 ms) | vs clean "
        "| peak req/s (1 s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in bp["rows"].items():
        lines.append(
            f"| {name} | {row['wall_s']:.2f} | {row['wall_vs_clean']:.2f}x | {row['faults_fired']:.0f} | "
            f"{row['requests']:.0f} | {row['peak_rps_100ms']:.0f} | {row['peak_vs_clean']:.2f}x | "
            f"{row['peak_rps_1s']:.0f} |"
        )
    if bp["before"]:
        lines += [
            "",
            "Release 0.1.0 against the same faults (one round each, in a subprocess; its creates wait",
            "for the index refresh):",
            "",
            "| run | wall (s) | vs its clean | delivered | requests | peak req/s (100 ms) |",
            "|---|---|---|---|---|---|",
        ]
        clean = bp["before"]["clean"]["wall_s"]
        for name, row in bp["before"].items():
            lines.append(
                f"| {name} | {row['wall_s']:.2f} | {row['wall_s'] / clean:.2f}x | {row['ok']} | "
                f"{sum(row['requests'].values())} | {row['peak_rps_100ms']:.0f} |"
            )
    rv = r["bulk_revoke"]
    lines += [
        "",
        f"## Bulk revoke, {rv['latency_ms']:.0f} ms latency",
        "",
        "Every delete asks for `refresh=wait_for` (so that a revoked key stops being listed at once):",
        "each one waits for the next index refresh.",
        "",
        "| how | keys | index refresh | wall (s) | keys/s |",
        "|---|---|---|---|---|",
    ]
    for row in rv["rows"]:
        how = row["how"] + (f" (concurrency {rv['concurrency']})" if row["how"] != "one by one" else "")
        lines.append(
            f"| {how} | {row['keys']:,} | {row['refresh_s'] * 1000:.0f} ms | {row['wall_s']:.2f} | "
            f"{row['keys_per_s']:.0f} |"
        )
    lines += [
        "",
        f"`delete_api_keys` is {rv['speedup']:.1f}x faster than the loop at the same refresh interval.",
    ]
    for title, b in (("latency-bound", lat), ("CPU-bound", cpu_bound)):
        lines += [
            "",
            f"## Bulk, {title}: {b['keys']:,} keys, {b['latency_ms']:.0f} ms latency, concurrency "
            f"{b['concurrency']} ({b['rounds']} rounds)",
            "",
            "| client | wall (s) | keys/s | client CPU per key (us) |",
            "|---|---|---|---|",
        ]
        for name, v in b["contenders"].items():
            lines.append(
                f"| {name} | {v['wall_s']:.2f} | {v['keys_per_s']:.0f} | {v['cpu_us_per_key']:.0f} |"
            )
    lines += [
        "",
        "The hand-written loops send `refresh=false` too but have no barrier, no twin check and no",
        "cap check: their keys may not authenticate yet when the loop ends.",
        "",
        "## Visibility barrier: SDK bulk against different index refresh intervals",
        "",
        "| keys | latency | concurrency | index refresh | wall (s) |",
        "|---|---|---|---|---|",
    ]
    for row in r["barrier"]:
        lines.append(
            f"| {row['keys']:,} | {row['latency_ms']:.0f} ms | {row['concurrency']} | "
            f"{row['refresh_s'] * 1000:.0f} ms | {row['wall_s']:.2f} |"
        )
    lines += [
        "",
        "## Unique tokens: the default 1 h lifetime vs 30 d, bulk on a fast server",
        "",
        "| lifetime | keys | concurrency | wall (s) | ok | distinct tokens | creates | deletes | failures |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for u in r["unique_tokens"]:
        failures = "; ".join(f"{v} x {k}" for k, v in u["errors"].items()) or "none"
        lines.append(
            f"| {u['expires_in']} | {u['keys']:,} | {u['concurrency']} | {u['wall_s']:.2f} | {u['ok']:,} | "
            f"{u['distinct_tokens']:,} | {u['creates']:,} | {u['deletes']:,} | {failures} |"
        )
    lines += [
        "",
        "## Scaling (SDK `create_api_keys`/`provision`, concurrency 64, no latency)",
        "",
        "| keys | wall (s) | client CPU (s) | client CPU per key (us) |",
        "|---|---|---|---|",
    ]
    for row in r["scaling"]:
        lines.append(
            f"| {row['keys']:,} | {row['wall_s']:.2f} | {row['cpu_s']:.2f} | {row['cpu_us_per_key']:.0f} |"
        )
    lines += [
        "",
        "In the CPU-bound runs the single-process FakeIllumass is the bottleneck (it signs a JWT per key),",
        "so keys/s there compares clients under the same server limit; client CPU per key is the",
        "client's own cost.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run for CI")
    parser.add_argument("--out", type=Path, default=HERE / "out", help="where results.json goes")
    parser.add_argument("--real-server", metavar="URL", help="the Kuzzle harness's /v4 URL (uncapped)")
    parser.add_argument("--before-python", metavar="PATH", help="a python with illumass 0.1.0 installed")
    parser.add_argument("--only", help="comma-separated scenarios (results not written to RESULTS.md)")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    pin(CLIENT_CPUS)
    q = args.quick
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "quick": q, "machine": machine()}
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("sequential", lambda: sequential(q)),
        ("facade_latency", lambda: facade_with_latency(q)),
        ("backpressure", lambda: backpressure(q, args.before_python)),
        ("bulk_revoke", lambda: bulk_revoke(q)),
        ("bulk_latency", lambda: bulk(q, n=2000, latency_ms=50, concurrency=50, rounds=3)),
        ("bulk_cpu", lambda: bulk(q, n=10_000, latency_ms=0, concurrency=64, rounds=3)),
        ("barrier", lambda: barrier(q)),
        ("unique_tokens", lambda: unique_tokens(q)),
        ("login_storm", lambda: login_storm(q)),
        ("memory", lambda: memory(q)),
    ]
    if args.real_server:
        steps.insert(0, ("real_server", lambda: real_server(args.real_server, args.before_python, q)))
    only = set(args.only.split(",")) if args.only else None
    for name, step in steps:
        if only is not None and name not in only:
            continue
        print(f"running {name}...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        results[name] = step()
        print(
            f"  ({time.perf_counter() - started:.0f} s) {json.dumps(results[name], indent=None)[:400]}",
            file=sys.stderr,
        )
    if only is not None:
        print(json.dumps(results, indent=2))
        return
    results["scaling"] = scaling(q, results["memory"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    report = markdown(results)
    if not q:
        previous = (HERE / "RESULTS.md").read_text() if (HERE / "RESULTS.md").exists() else ""
        kept = [previous.index(h) for h in KEPT_HEADINGS if h in previous]
        if kept:  # the findings and the soak figures do not come from this script
            report += "\n" + previous[min(kept) :]
        (HERE / "RESULTS.md").write_text(report)
        (HERE / "results.json").write_text(json.dumps(results, indent=2))
    print(report)


if __name__ == "__main__":
    main()
