"""What one logical call sends, built once, and what its attempts did."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from ._secret import Secret

__all__ = ["Request", "Trace"]


@attrs.frozen(slots=False)  # a frozen dict class is built a third faster (attrs fills __dict__)
class Request:
    """One API request, described once and sent as many times as the retry loop decides.

    ``replay_safe``: sending it again after an attempt that may have reached the server cannot
    do harm (reads, deletes, and creates that carry an id). ``retry_server_errors``: a 500 may
    be retried (creates: Elasticsearch's own 429 reaches clients as a 500).
    """

    method: str
    path: str
    """Escaped, relative to the base URL."""
    params: Mapping[str, str] | None = None
    body: bytes | None = None
    """The JSON body, encoded once."""
    replay_safe: bool = False
    authenticated: bool = True
    retry_server_errors: bool = False
    token: Secret | None = attrs.field(default=None, repr=False)
    """An explicit bearer (logout's), used as is: never renewed."""


@attrs.define
class Trace:
    """What the attempts of one logical call did (one Trace may span several requests)."""

    attempts: int = 0
    """Requests sent (or tried)."""
    maybe_reached: bool = False
    """An attempt may have reached the server although its response did not reach us."""
    proven: bool = False
    """The server said it succeeded (a 2xx) although the response could not be read."""
    retries_left: int | None = None
    """The retry budget shared by every request of the call; None: each request's own."""

    def spend(self) -> bool:
        """Take one unit of the shared budget; False when it is used up (or there is none)."""
        if self.retries_left is None or self.retries_left <= 0:
            return False
        self.retries_left -= 1
        return True
