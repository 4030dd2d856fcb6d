"""Where the client's CPU goes in ``create_api_key``: cProfile of a sequential loop, SDK vs raw.

    python benchmarks/profile_create.py [CALLS]

FakeIllumass runs in its own process (benchmarks/_fake.py, index refreshed at once), so the
profile is the client's alone. Prints the top functions by own time for the SDK loop and for a
hand-written aiohttp loop sending the same requests; the SDK also with ``trust_env=False``
(aiohttp then skips its per-request netrc and proxy look-ups in a thread).
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import sys

import aiohttp
import run  # benchmarks/run.py: the same harness and contenders

from illumass import AsyncIllumass


async def sdk(url: str, n: int, profile: cProfile.Profile, trust_env: bool = True) -> None:
    async with AsyncIllumass(url, email=run.EMAIL, password=run.PASSWORD, trust_env=trust_env) as client:
        await client.auth.login()
        for i in range(20):  # warm-up: connections, first-call imports
            await client.auth.create_api_key(f"warm {i}")
        profile.enable()
        for i in range(n):
            await client.auth.create_api_key(f"sdk {i}")
        profile.disable()


async def sdk_no_env(url: str, n: int, profile: cProfile.Profile) -> None:
    await sdk(url, n, profile, trust_env=False)


async def raw(url: str, n: int, profile: cProfile.Profile) -> None:
    jwt = run.login_jwt(url)
    headers = {"Authorization": f"Bearer {jwt}"}
    async with aiohttp.ClientSession() as session:
        for i in range(n + 20):
            if i == 20:
                profile.enable()
            async with session.post(
                f"{url}/api-keys/_create",
                params=run.params(),
                json={"description": f"raw {i}"},
                headers=headers,
            ) as response:
                assert (await response.json())["result"]["_source"]["token"]
        profile.disable()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    run.pin(run.CLIENT_CPUS)
    contenders = (("sdk", sdk), ("sdk, trust_env=False", sdk_no_env), ("raw aiohttp", raw))
    for name, contender in contenders:
        profile = cProfile.Profile()
        with run.fake_server() as server:
            asyncio.run(contender(server.url, n, profile))
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out)
        total = stats.total_tt  # type: ignore[attr-defined]
        print(f"== {name}: {n} creates, {total / n * 1e6:.0f} us profiled CPU per create (under cProfile)")
        stats.sort_stats("tottime").print_stats(25)
        print(out.getvalue())
        if name.startswith("sdk"):
            out = io.StringIO()
            stats = pstats.Stats(profile, stream=out)
            stats.sort_stats("cumulative").print_stats("illumass", 30)
            print(out.getvalue())


if __name__ == "__main__":
    main()
