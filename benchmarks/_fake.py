"""FakeIllumass in a process of its own, for benchmarks: faults, and the request rate it sees.

    python benchmarks/_fake.py --user EMAIL:PASSWORD [--latency MS] [--refresh-interval S]
        [--fault-status 503 --fault-probability 0.03 [--error-id ID] [--retry-after S]]

Prints its base URL on the first line. Each line read on stdin is a command, answered with one
JSON line: ``stats`` (requests per action, faults fired, peak request rates since the start),
``quit``. The server is uncapped (``api_key_cap=None``): throughput runs create far more than a
user's first 10 keys.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from illumass.testing import FakeIllumass

SAMPLE = 0.02  # seconds between samples of the request counters


def peak_rate(samples: list[tuple[float, int]], window: float) -> float:
    """The most requests per second over any ``window`` seconds of the samples (t, total)."""
    best = 0.0
    j = 0
    for i, (t, total) in enumerate(samples):
        while samples[j][0] < t - window:
            j += 1
        # samples[j] is the first at or after t - window: the count since then, scaled to 1 s
        if i > j:
            best = max(best, (total - samples[j][1]) / window)
    return best


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--user", required=True)
    parser.add_argument("--latency", type=float, default=0.0, help="milliseconds")
    parser.add_argument("--refresh-interval", type=float, default=0.0)
    parser.add_argument("--fault-status", type=int)
    parser.add_argument("--fault-probability", type=float, default=0.0)
    parser.add_argument("--error-id", default="api.process.overloaded")
    parser.add_argument("--retry-after")
    args = parser.parse_args()
    email, _, password = args.user.partition(":")
    server = FakeIllumass(
        {email: password},
        latency=args.latency / 1000,
        api_key_cap=None,
        refresh_interval=args.refresh_interval,
        seed=1,
    )
    if args.fault_status:
        server.faults.add(
            "status",
            "createApiKey",
            probability=args.fault_probability,
            status=args.fault_status,
            error_id=args.error_id,
            retry_after=args.retry_after,
        )
    await server.start()
    samples: list[tuple[float, int]] = [(time.monotonic(), 0)]

    async def sample() -> None:
        while True:
            await asyncio.sleep(SAMPLE)
            samples.append((time.monotonic(), sum(server.stats.requests.values())))

    sampler = asyncio.create_task(sample())
    print(server.url, flush=True)
    loop = asyncio.get_running_loop()
    while True:
        command = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if command == "stats":
            samples.append((time.monotonic(), sum(server.stats.requests.values())))
            answer: dict[str, Any] = {
                "requests": dict(server.stats.requests),
                "faults_fired": server.faults.fired(),
                "keys_stored": len(server.api_keys),
                "peak_rps_100ms": peak_rate(samples, 0.1),
                "peak_rps_1s": peak_rate(samples, 1.0),
            }
            print(json.dumps(answer), flush=True)
        else:  # "quit", or stdin closed
            break
    sampler.cancel()
    await server.stop()


if __name__ == "__main__":
    asyncio.run(main())
