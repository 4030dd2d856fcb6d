"""One ``create_api_keys`` run in a process of its own, so any installed illumass can be timed.

    python benchmarks/_bulk_child.py URL EMAIL PASSWORD KEYS CONCURRENCY EXPIRES_IN

Uses only what release 0.1.0 and the current SDK both offer. Prints one JSON line: wall and CPU
seconds of the call, the version, failures by error class, and the delivered keys as
``[id, token]`` pairs (the caller checks and deletes them; the tokens are not stored anywhere).
"""

from __future__ import annotations

import asyncio
import collections
import json
import resource
import sys
import time


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def main(url: str, email: str, password: str, n: int, concurrency: int, expires_in: str) -> None:
    import illumass
    from illumass import AsyncIllumass

    async with AsyncIllumass(url, email=email, password=password) as client:
        await client.auth.login()
        wall0, cpu0 = time.perf_counter(), cpu()
        results = await client.auth.create_api_keys(
            [f"bench {i}" for i in range(n)], concurrency=concurrency, expires_in=expires_in
        )
        wall, cpu_time = time.perf_counter() - wall0, cpu() - cpu0
    keys = [[r.api_key.id, r.api_key.token.get_secret_value()] for r in results if r.ok]
    errors = collections.Counter(type(r.error).__name__ for r in results if not r.ok)
    print(
        json.dumps(
            {
                "version": illumass.__version__,
                "wall_s": wall,
                "cpu_s": cpu_time,
                "ok": len(keys),
                "errors": dict(errors),
                "keys": keys,
            }
        )
    )


if __name__ == "__main__":
    url, email, password, n, concurrency, expires_in = sys.argv[1:7]
    asyncio.run(main(url, email, password, int(n), int(concurrency), expires_in))
