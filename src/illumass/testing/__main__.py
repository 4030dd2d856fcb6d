"""``python -m illumass.testing``: run FakeIllumass until interrupted.

The first line of output is the base URL (for scripts); the accepted credentials follow.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from ._server import FakeIllumass


def parse_user(value: str) -> tuple[str, str]:
    """``EMAIL:PASSWORD`` -> (email, password)."""
    email, sep, password = value.partition(":")
    if not sep or not email or not password:
        raise argparse.ArgumentTypeError("expected EMAIL:PASSWORD")
    return email, password


def parse_cap(value: str) -> int | None:
    """``--api-key-cap``: a number of keys, or ``none`` for no cap."""
    if value.lower() == "none":
        return None
    try:
        cap = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number or 'none'") from None
    if cap < 0:
        raise argparse.ArgumentTypeError("expected a number >= 0 or 'none'")
    return cap


async def serve(server: FakeIllumass, *, show_credentials: bool = False) -> None:
    """Run ``server`` until cancelled, announcing its URL on stdout (first line) for scripts,
    then, with ``show_credentials``, the accounts it accepts."""
    await server.start()
    print(server.url, flush=True)
    if show_credentials:
        print("Accepted credentials (email / password):", flush=True)
        for email, password in server.users.items():
            print(f"  {email} / {password}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m illumass.testing", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--user", action="append", type=parse_user, metavar="EMAIL:PASSWORD")
    parser.add_argument("--latency", type=float, default=0.0, help="milliseconds per request")
    parser.add_argument(
        "--api-key-cap",
        type=parse_cap,
        default=10,
        help="how many of a user's API keys verification considers: 10 as Kuzzle >= 2.34, 'none'",
    )
    parser.add_argument(
        "--refresh-interval",
        type=float,
        default=1.0,
        help="seconds between index refreshes (creates wait for one); 0: immediate",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for probabilistic faults")
    args = parser.parse_args(argv)
    server = FakeIllumass(
        dict(args.user) if args.user else None,
        host=args.host,
        port=args.port,
        latency=args.latency / 1000.0,
        api_key_cap=args.api_key_cap,
        refresh_interval=args.refresh_interval,
        seed=args.seed,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(server, show_credentials=True))
    sys.exit(0)


if __name__ == "__main__":
    main()
