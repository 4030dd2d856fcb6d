"""FakeIllumass's api-keys index and query compiler, on a clock the test moves."""

from __future__ import annotations

import hashlib
import math

import pytest

from illumass.testing import KuzzleError, StoredApiKey
from illumass.testing._search import compile_query, parse_js_integer
from illumass.testing._store import ApiKeyIndex


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def key(key_id: str, user: str = "u1", token: str | None = None, expires_at: float = 5) -> StoredApiKey:
    token = token or f"kapikey-{key_id}"
    fingerprint = hashlib.sha256(token.encode()).hexdigest()
    return StoredApiKey(key_id, user, f"key {key_id}", token, fingerprint, expires_at, 1000, 0)


def visible(index: ApiKeyIndex, user: str = "u1") -> list[str]:
    return [k.id for k in index.search(user, compile_query({}), b"{}")]


def test_writes_are_published_by_the_next_tick() -> None:
    clock = Clock()
    index = ApiKeyIndex(1.0, clock)
    clock.now += 0.25
    assert index.add(key("a")) == 101.0  # the first tick after the write
    assert "a" in index.docs and visible(index) == []
    clock.now = 100.99
    assert visible(index) == []
    clock.now = 101.0
    assert visible(index) == ["a"]
    assert index.remove("a") == 102.0
    assert "a" not in index.docs and visible(index) == ["a"]  # deletes wait for the tick too
    clock.now = 102.5
    assert visible(index) == []


def test_manual_refresh_and_instant_mode() -> None:
    clock = Clock()
    index = ApiKeyIndex(1.0, clock)
    index.add(key("a"))
    index.refresh()
    assert visible(index) == ["a"]
    index.refresh_interval = 0
    index.add(key("b"))
    assert visible(index) == ["a", "b"]


def test_an_idle_index_refreshes_on_search() -> None:
    # Elasticsearch's search-idle shards: not searched for 30 s, they refresh on the next search.
    clock = Clock()
    index = ApiKeyIndex(1.0, clock)
    clock.now += 31
    index.add(key("a"))
    assert visible(index) == ["a"]
    index.add(key("b"))
    assert visible(index) == ["a"]  # searched just now: not idle any more


def test_results_are_cached_until_the_users_keys_change() -> None:
    clock = Clock()
    index = ApiKeyIndex(0, clock)
    calls = 0

    def predicate(stored: StoredApiKey) -> bool:
        nonlocal calls
        calls += 1
        return True

    index.add(key("a"))
    index.add(key("x", user="u2"))
    assert [k.id for k in index.search("u1", predicate, "q")] == ["a"]
    assert [k.id for k in index.search("u1", predicate, "q")] == ["a"]
    assert calls == 1  # one scan for two pages
    index.add(key("y", user="u2"))  # another user's key changes nothing here
    index.search("u1", predicate, "q")
    assert calls == 1
    index.add(key("b"))
    assert [k.id for k in index.search("u1", predicate, "q")] == ["a", "b"]
    assert calls == 3


def test_find_looks_at_the_first_keys_only() -> None:
    index = ApiKeyIndex(0, Clock())
    for i in range(12):
        index.add(key(f"k{i}"))
    twin = key("twin", token="kapikey-k0")  # same token as k0
    index.add(twin)
    fp = {k.id: k.fingerprint for k in index.docs.values()}
    assert index.find("u1", fp["k9"], 10) is index.docs["k9"]
    assert index.find("u1", fp["k10"], 10) is None
    assert index.find("u1", fp["k10"], None) is index.docs["k10"]
    assert index.find("u2", fp["k1"], None) is None
    index.remove("k0")
    assert index.find("u1", fp["k0"], 10) is None  # the twin is 12th
    assert index.find("u1", fp["k0"], None) is twin
    assert index.find("u1", fp["k10"], 10) is index.docs["k10"]


@pytest.mark.parametrize(
    ("raw", "value"),
    [("10", 10), (" 7", 7), ("2abc", 2), ("1e3", 1000), ("1.5", 1.5), ("-3", -3), (".5", 0.5)],
)
def test_parse_js_integer(raw: str, value: float) -> None:
    assert parse_js_integer(raw) == value


@pytest.mark.parametrize("raw", ["", "abc", "e5", "-"])
def test_parse_js_integer_nan(raw: str) -> None:
    assert math.isnan(parse_js_integer(raw))


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"term": "x"}, "[term] query malformed, no start_object after query name"),
        ({"term": {"a": 1, "b": 2}}, "[term] query doesn't support multiple fields, found [a] and [b]"),
        ({"range": {"ttl": 5}}, "[range] query does not support [ttl]"),
        ("match_all", "[_na] query malformed, must start with start_object"),
        ({"regexp": {"description": "("}}, None),
    ],
)
def test_malformed_queries(query: object, message: str | None) -> None:
    with pytest.raises(KuzzleError) as raised:
        compile_query(query)
    assert (raised.value.status, raised.value.error_id) == (400, "services.storage.unexpected_bad_request")
    if message is not None:
        assert raised.value.message == message


def test_query_kinds_on_unmapped_fields_match_nothing() -> None:
    stored = key("a")
    for kind in ("term", "match", "prefix", "wildcard", "regexp", "range"):
        value: object = {"gte": ""} if kind == "range" else stored.fingerprint
        assert compile_query({kind: {"fingerprint": value}})(stored) is False
    assert compile_query({"wildcard": {"_id": "a*"}})(stored) is True
    assert compile_query({"regexp": {"userId": "u[0-9]"}})(stored) is True
    assert compile_query({"query_string": {"query": "key"}})(stored) is True
    assert compile_query({"bool": {"should": [], "minimum_should_match": "50%"}})(stored) is True
