"""The ``api-keys`` collection as Kuzzle 2.56 stores it in Elasticsearch: near-real-time search.

Documents are real-time for GET by id (duplicate ``_id`` checks, deleting, loading a key) but reach
searches only at the next index refresh, as in Elasticsearch: one tick every ``refresh_interval``
seconds. A write made with ``refresh=wait_for`` returns at that tick. Ticks are computed, not
scheduled: each write records the tick that will publish it, and every search first applies the
writes whose tick has passed. An index not searched for 30 s is "search idle" and refreshes on the
next search, as in Elasticsearch and the harness's emulator.
"""

from __future__ import annotations

import collections
import itertools
import math
import time
from collections.abc import Callable, Hashable

import attrs

from ._search import Predicate

__all__ = ["ApiKeyIndex", "StoredApiKey"]

_SEARCH_IDLE_AFTER = 30.0
_CACHED_QUERIES = 64


@attrs.define(eq=False)
class StoredApiKey:
    """An API key as the server stores it (the token is kept here only so tests can check it)."""

    id: str
    user_id: str
    description: str
    token: str
    fingerprint: str
    expires_at: float
    """Epoch milliseconds, or -1 for never."""
    ttl: float
    """Milliseconds, or -1 for never."""
    created_at: int


class ApiKeyIndex:
    """Real-time documents plus the searchable view as of the last refresh."""

    def __init__(self, refresh_interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.refresh_interval = refresh_interval
        self.docs: dict[str, StoredApiKey] = {}
        """Every stored key by id, as GET by id sees them (insertion order)."""
        self._clock = clock
        self._epoch = clock()
        self._last_search = self._epoch
        # (tick, key, added) in write order; ticks never decrease.
        self._pending: collections.deque[tuple[float, StoredApiKey, bool]] = collections.deque()
        self._visible: dict[str, dict[str, StoredApiKey]] = {}  # user -> id -> key, in index order
        self._by_fingerprint: dict[str, dict[str, StoredApiKey]] = {}  # visible keys only
        self._generation: collections.Counter[str] = collections.Counter()  # per user
        self._cache: collections.OrderedDict[Hashable, tuple[int, list[StoredApiKey]]] = (
            collections.OrderedDict()
        )

    # -- writes ----------------------------------------------------------------------------------

    def add(self, key: StoredApiKey) -> float:
        """Store ``key`` now; returns the monotonic time of the refresh that makes it searchable."""
        self.docs[key.id] = key
        return self._publish(key, added=True)

    def remove(self, key_id: str) -> float:
        """Delete a key now; returns the monotonic time of the refresh that hides it from searches."""
        key = self.docs.pop(key_id)
        return self._publish(key, added=False)

    def refresh(self) -> None:
        """Refresh now (Elasticsearch's ``POST _refresh``): every write becomes searchable."""
        while self._pending:
            self._apply(*self._pending.popleft()[1:])

    def next_tick(self, now: float) -> float:
        """The first refresh strictly after ``now``."""
        interval = self.refresh_interval
        return self._epoch + (math.floor((now - self._epoch) / interval) + 1) * interval

    def _publish(self, key: StoredApiKey, *, added: bool) -> float:
        now = self._clock()
        if self.refresh_interval <= 0:
            self._apply(key, added)
            return now
        tick = self.next_tick(now)
        self._pending.append((tick, key, added))
        return tick

    def _apply(self, key: StoredApiKey, added: bool) -> None:
        mine = self._visible.setdefault(key.user_id, {})
        twins = self._by_fingerprint.setdefault(key.fingerprint, {})
        if added:
            mine[key.id] = key
            twins[key.id] = key
        else:
            mine.pop(key.id, None)
            twins.pop(key.id, None)
            if not twins:
                del self._by_fingerprint[key.fingerprint]
        self._generation[key.user_id] += 1

    # -- searches --------------------------------------------------------------------------------

    def _before_search(self) -> None:
        now = self._clock()
        if self._pending and now - self._last_search > _SEARCH_IDLE_AFTER:
            self.refresh()
        while self._pending and self._pending[0][0] <= now:
            self._apply(*self._pending.popleft()[1:])
        self._last_search = now

    def search(self, user_id: str, predicate: Predicate, cache_key: Hashable) -> list[StoredApiKey]:
        """Every searchable key of ``user_id`` matching ``predicate``, in index order.

        The result is cached under ``cache_key`` until the user's searchable keys change, so paging
        through one query costs one scan, not one per page.
        """
        self._before_search()
        generation = self._generation[user_id]
        full_key = (user_id, cache_key)
        cached = self._cache.get(full_key)
        if cached is not None and cached[0] == generation:
            self._cache.move_to_end(full_key)
            return cached[1]
        hits = [k for k in self._visible.get(user_id, {}).values() if predicate(k)]
        self._cache[full_key] = (generation, hits)
        if len(self._cache) > _CACHED_QUERIES:
            self._cache.popitem(last=False)
        return hits

    def find(self, user_id: str, fingerprint: str, cap: int | None) -> StoredApiKey | None:
        """The key Kuzzle's verification finds for a token: among the user's first ``cap``
        searchable keys (all of them when None), the first with this fingerprint."""
        self._before_search()
        if cap is None:
            twins = self._by_fingerprint.get(fingerprint, {})
            return next((k for k in twins.values() if k.user_id == user_id), None)
        first = itertools.islice(self._visible.get(user_id, {}).values(), cap)
        return next((k for k in first if k.fingerprint == fingerprint), None)
