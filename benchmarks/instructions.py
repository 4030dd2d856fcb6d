"""Where a ``create_api_key`` spends its CPU, counted rather than timed: needs valgrind.

    python benchmarks/instructions.py

CPU time on a shared machine varies by +-3% between runs; the instructions a loop executes do
not. Each contender (the SDK, a hand-written aiohttp loop) runs 200 and then 600 sequential creates
in a child process under ``valgrind --tool=cachegrind`` against FakeIllumass (its own process,
not counted); the difference over 400 creates is the cost of one, start-up excluded. Each count is
the least of three runs: now and then a run counts a few percent more (once 4% for the same
code; the cause, something timing-dependent, was not found). Also counted,
without valgrind: event-loop iterations per create (each costs tens of thousands of
instructions). Under valgrind the client runs about 50 times slower, so what depends on the clock
(lifetimes kept per server second) may take other paths than in timed runs. The report is for
the hand-kept *Findings* of RESULTS.md.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import run  # benchmarks/run.py: the same harness and contenders

HERE = Path(__file__).parent
SMALL, LARGE = 200, 600
RUNS = 3  # per count, the least is kept
CONTENDERS = ("sdk", "raw aiohttp")


def sequential(contender: str, n: int, url: str) -> Any:
    """The coroutine of one contender's loop of ``n`` creates (run.py's own)."""
    if contender == "sdk":
        return run.sdk_sequential(url, n)()
    return run.raw_aiohttp_sequential(url, run.login_jwt(url), n)()


def child(contender: str, n: int, url: str) -> None:
    """One contender's loop; run under valgrind by ``count``."""
    asyncio.run(sequential(contender, n, url))


def count(contender: str, n: int, url: str) -> tuple[int, int]:
    """(instructions, first-level instruction-cache misses) of a whole child process."""
    out = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=yes",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--child",
            contender,
            str(n),
            url,
        ],
        env={**os.environ, "PYTHONHASHSEED": "0", "PYTHONMALLOC": "malloc"},
        capture_output=True,
        text=True,
        check=True,
    )
    refs = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
    misses = re.search(r"I1\s+misses:\s+([\d,]+)", out.stderr)
    if refs is None or misses is None:
        raise RuntimeError(f"no cachegrind summary:\n{out.stderr[-2000:]}")
    return int(refs[1].replace(",", "")), int(misses[1].replace(",", ""))


class _CountingLoop(asyncio.SelectorEventLoop):
    iterations = 0

    def _run_once(self) -> None:
        self.iterations += 1
        super()._run_once()  # type: ignore[misc]


def iterations(contender: str, url: str) -> float:
    """Event-loop iterations per create, the difference between two loop lengths."""
    counts = []
    for n in (SMALL, LARGE):
        loop = _CountingLoop()
        try:
            loop.run_until_complete(sequential(contender, n, url))
        finally:
            loop.close()
        run._last.clear()
        counts.append(loop.iterations)
    return (counts[1] - counts[0]) / (LARGE - SMALL)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    rows = {}
    with run.fake_server() as server:
        for contender in CONTENDERS:
            (small, small_misses), (large, large_misses) = (
                min(count(contender, n, server.url) for _ in range(RUNS)) for n in (SMALL, LARGE)
            )
            per = LARGE - SMALL
            rows[contender] = (
                (large - small) / per,
                (large_misses - small_misses) / per,
                iterations(contender, server.url),
            )
    raw = rows["raw aiohttp"][0]
    print(f"Python {sys.version.split()[0]}, {SMALL} and {LARGE} sequential creates, per create:\n")
    print("| client | instructions | vs raw aiohttp | I1 misses | event-loop iterations |")
    print("|---|---|---|---|---|")
    for name, (instructions, misses, turns) in rows.items():
        cells = (
            f"{instructions / 1000:.0f}k",
            f"{instructions / raw:.2f}x",
            f"{misses / 1000:.1f}k",
            f"{turns:.1f}",
        )
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
