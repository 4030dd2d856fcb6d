"""Test support: :class:`FakeIllumass`, a local Illumass-compatible server, and its pytest fixture.

>>> from illumass.testing import FakeIllumass
>>> with FakeIllumass() as server:              # background thread; or `async with` on your loop
...     client = Illumass(server.url, email=server.email, password=server.password)

By default the server behaves like Kuzzle 2.56 (see :class:`FakeIllumass` for the switches).
"""

from ._errors import KuzzleError
from ._faults import Fault, FaultKind, Faults
from ._server import DEFAULT_USERS, FakeIllumass, SeenRequest, Stats
from ._store import StoredApiKey

__all__ = [
    "DEFAULT_USERS",
    "FakeIllumass",
    "Fault",
    "FaultKind",
    "Faults",
    "KuzzleError",
    "SeenRequest",
    "Stats",
    "StoredApiKey",
]
