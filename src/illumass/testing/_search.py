"""The Elasticsearch query DSL over API keys, as Kuzzle 2.56 and its Elasticsearch see them.

Kuzzle's ``api-keys`` mapping is ``dynamic: false`` with only ``userId`` (keyword), ``hash``
(keyword), ``description`` (text), ``expiresAt`` (long), ``ttl`` (keyword) and ``token`` (keyword)
mapped, so ``fingerprint`` and ``_kuzzle_info`` are stored but never match. A query is compiled
once into a predicate, so paging through one query costs one pass per page, not one parse per key.

Semantics follow the ES emulator the real-server harness runs (every hit scores 1.0, so hits come
in insertion order; text is split on ``\\w+`` and lowercased; a term on text matches one token).
Where the emulator crashes (a 500 on ``{"term": "x"}``) this answers with Elasticsearch's 400
parsing error instead, and unmapped fields never match, whatever the query type.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from ._errors import bad_request

if TYPE_CHECKING:
    from ._store import StoredApiKey

__all__ = ["Predicate", "compile_query", "parse_js_integer"]

Predicate = Callable[["StoredApiKey"], bool]

_TOKEN = re.compile(r"\w+", re.UNICODE)
_MALFORMED = "[_na] query malformed, must start with start_object"


def _tokens(value: Any) -> list[str]:
    return [t.lower() for t in _TOKEN.findall(str(value))]


def _norm(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    return value


def _field(name: Any) -> tuple[str, Callable[[StoredApiKey], list[Any]]] | None:
    """(mapping type, values getter) of a searchable field; None when it is not mapped."""
    return _FIELDS.get(name) if isinstance(name, str) else None


_FIELDS: dict[str, tuple[str, Callable[[StoredApiKey], list[Any]]]] = {
    "_id": ("keyword", lambda k: [k.id]),
    "userId": ("keyword", lambda k: [k.user_id]),
    "description": ("text", lambda k: [k.description]),
    "expiresAt": ("long", lambda k: [k.expires_at]),
    "ttl": ("keyword", lambda k: [k.ttl]),
    "hash": ("keyword", lambda k: []),
    "token": ("keyword", lambda k: []),
}


def _never(key: StoredApiKey) -> bool:
    return False


def _always(key: StoredApiKey) -> bool:
    return True


def _single_field(kind: str, body: Any) -> tuple[Any, Any]:
    """The one ``field: value`` pair of a term-level query body."""
    if not isinstance(body, dict):
        raise bad_request(f"[{kind}] query malformed, no start_object after query name")
    items = [(k, v) for k, v in body.items() if k != "boost"] if kind == "terms" else list(body.items())
    if len(items) != 1:
        if not items:
            raise bad_request(f"[{kind}] query malformed, no field")
        raise bad_request(
            f"[{kind}] query doesn't support multiple fields, found [{items[0][0]}] and [{items[1][0]}]"
        )
    return items[0]


def _term_test(ftype: str, wanted: Any) -> Callable[[Any], bool]:
    """Does one stored value equal ``wanted`` as a term query compares them?"""
    if ftype == "text":
        text = str(wanted)
        return lambda v: text in _tokens(v) or text == str(v)
    norm, text = _norm(wanted), str(wanted)

    def test(v: Any) -> bool:
        return (
            _norm(v) == norm
            or (isinstance(v, str) and text == v)
            or (isinstance(v, bool) and text.lower() == str(v).lower())
        )

    return test


def _any_value(getter: Callable[[StoredApiKey], list[Any]], test: Callable[[Any], bool]) -> Predicate:
    return lambda key: any(test(v) for v in getter(key))


def _range_test(cond: dict[str, Any]) -> Callable[[Any], bool]:
    ops = [(op, ref) for op, ref in cond.items() if op in ("gt", "gte", "lt", "lte")]
    numeric_refs = not isinstance(next(iter(cond.values()), None), str)

    def test(v: Any) -> bool:
        if isinstance(v, str) and numeric_refs:
            with contextlib.suppress(ValueError):
                v = float(v)
        try:
            for op, ref in ops:
                if op == "gt" and not v > ref:
                    return False
                if op == "gte" and not v >= ref:
                    return False
                if op == "lt" and not v < ref:
                    return False
                if op == "lte" and not v <= ref:
                    return False
        except TypeError:
            return False
        return True

    return test


def _as_list(clauses: Any) -> list[Any]:
    if clauses is None:
        return []
    return clauses if isinstance(clauses, list) else [clauses]


def _minimum_should_match(raw: Any, should: int, must: int) -> int:
    if raw is None:
        return 1 if should and not must else 0
    text = str(raw)
    try:
        if text.endswith("%"):
            return int(should * int(text.rstrip("%")) / 100)
        return int(text)
    except ValueError:
        raise bad_request(f"cannot parse minimum_should_match [{text}]") from None


def _source_text(key: StoredApiKey) -> str:
    return orjson.dumps(
        {
            "description": key.description,
            "expiresAt": key.expires_at,
            "fingerprint": key.fingerprint,
            "ttl": key.ttl,
            "userId": key.user_id,
        }
    ).decode()


def compile_query(query: Any) -> Predicate:
    """A predicate for one query clause; raises :class:`KuzzleError` (400) where ES refuses it."""
    if query is None or query == {}:
        return _always
    if not isinstance(query, dict) or len(query) != 1:
        raise bad_request(_MALFORMED)
    ((kind, body),) = query.items()
    if kind == "match_all":
        return _always
    if kind == "match_none":
        return _never
    if kind == "ids":
        values = body.get("values", []) if isinstance(body, dict) else None
        if not isinstance(values, list):
            raise bad_request("[ids] query malformed, no start_object after query name")
        wanted = {str(v) for v in values}
        return lambda key: key.id in wanted
    if kind in ("term", "terms"):
        name, value = _single_field(kind, body)
        if kind == "term" and isinstance(value, dict):
            value = value.get("value")
        if kind == "terms" and not isinstance(value, list):
            raise bad_request(f"[terms] query does not support [{name}]")
        field = _field(name)
        if field is None:
            return _never
        ftype, getter = field
        tests = [_term_test(ftype, v) for v in (value if kind == "terms" else [value])]
        return _any_value(getter, lambda v: any(t(v) for t in tests))
    if kind in ("match", "match_phrase"):
        name, value = _single_field(kind, body)
        operator = "or"
        if isinstance(value, dict):
            operator = str(value.get("operator", "or")).lower()
            value = value.get("query")
        field = _field(name)
        if field is None:
            return _never
        ftype, getter = field
        if ftype != "text":
            return _any_value(getter, _term_test(ftype, value))
        words = _tokens(value)
        if not words:
            return _never
        every = operator == "and" or kind == "match_phrase"

        def match(key: StoredApiKey) -> bool:
            have = {t for v in getter(key) for t in _tokens(v)}
            return all(t in have for t in words) if every else any(t in have for t in words)

        return match
    if kind == "exists":
        field = _field(body.get("field") if isinstance(body, dict) else None)
        if field is None:
            return _never
        getter = field[1]
        return lambda key: bool(getter(key))
    if kind == "range":
        name, cond = _single_field(kind, body)
        if not isinstance(cond, dict):
            raise bad_request(f"[range] query does not support [{name}]")
        field = _field(name)
        if field is None:
            return _never
        return _any_value(field[1], _range_test(cond))
    if kind in ("prefix", "wildcard", "regexp"):
        name, value = _single_field(kind, body)
        if isinstance(value, dict):
            value = value.get("value", value.get("wildcard") if kind == "wildcard" else None)
        field = _field(name)
        if field is None or not isinstance(value, str):
            return _never
        pattern = value
        if kind == "prefix":
            test: Callable[[Any], bool] = lambda v: isinstance(v, str) and v.startswith(pattern)  # noqa: E731
        elif kind == "wildcard":
            test = lambda v: isinstance(v, str) and fnmatch.fnmatchcase(v, pattern)  # noqa: E731
        else:
            try:
                regex = re.compile(pattern)
            except re.error as error:
                raise bad_request(f"failed to parse regexp [{pattern}]: {error}") from None
            test = lambda v: isinstance(v, str) and regex.fullmatch(v) is not None  # noqa: E731
        return _any_value(field[1], test)
    if kind == "bool":
        if not isinstance(body, dict):
            raise bad_request("[bool] query malformed, no start_object after query name")
        must = [compile_query(c) for c in _as_list(body.get("must")) + _as_list(body.get("filter"))]
        must_not = [compile_query(c) for c in _as_list(body.get("must_not"))]
        should = [compile_query(c) for c in _as_list(body.get("should"))]
        least = _minimum_should_match(body.get("minimum_should_match"), len(should), len(must))

        def boolean(key: StoredApiKey) -> bool:
            if not all(p(key) for p in must) or any(p(key) for p in must_not):
                return False
            if should and least > 0:
                return sum(1 for p in should if p(key)) >= least
            return True

        return boolean
    if kind == "constant_score":
        return compile_query(body.get("filter") if isinstance(body, dict) else body)
    if kind == "nested":
        return compile_query(body.get("query") if isinstance(body, dict) else body)
    if kind in ("query_string", "simple_query_string"):
        text = str(body.get("query", "") if isinstance(body, dict) else "").lower()
        if text in ("*", ""):
            return _always
        words = _tokens(text)
        return lambda key: any(w in _source_text(key).lower() for w in words)
    raise bad_request(f"unknown query [{kind}]")


def parse_js_integer(raw: str) -> float:
    """``Number.parseFloat`` as Kuzzle applies it to ``from``/``size`` (NaN when unparsable)."""
    match = _JS_FLOAT.match(raw)
    if match is None:
        return float("nan")
    text = match.group(0).strip()
    if text.lstrip("+-") == "Infinity":
        return float("-inf") if text.startswith("-") else float("inf")
    return float(text)


_JS_FLOAT = re.compile(r"\s*[+-]?(Infinity|(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)")
