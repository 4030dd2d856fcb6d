"""``python -m illumass.testing``: run FakeIllumass until interrupted."""

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


async def serve(server: FakeIllumass) -> None:
    """Run ``server`` until cancelled, announcing its URL on stdout (first line) for scripts."""
    await server.start()
    print(server.url, flush=True)
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
    args = parser.parse_args(argv)
    server = FakeIllumass(
        dict(args.user) if args.user else None,
        host=args.host,
        port=args.port,
        latency=args.latency / 1000.0,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(server))
    sys.exit(0)


if __name__ == "__main__":
    main()
