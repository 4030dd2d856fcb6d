"""parse_duration follows the npm `ms` 2.1.3 grammar exactly; expires_in checks are Kuzzle's."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from illumass import parse_duration
from illumass._duration import expires_in_param, parse_ms

# An independent transcription of ms@2.1.3's parse(): regex exec, parseFloat, unit switch.
_MS_REGEX = re.compile(
    r"^(-?(?:\d+)?\.?\d+) *(milliseconds?|msecs?|ms|seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h"
    r"|days?|d|weeks?|w|years?|yrs?|y)?$",
    re.I,
)
_FACTORS = {"y": 31557600000.0, "w": 604800000.0, "d": 86400000.0, "h": 3600000.0, "m": 60000.0}


def reference_ms(text: str) -> float | None:
    if len(text) > 100 or not text.isascii() or text.endswith("\n"):
        return None
    match = _MS_REGEX.match(text)
    if not match:
        return None
    n = float(match.group(1))
    unit = (match.group(2) or "ms").lower()
    if unit.startswith(("ms", "msec", "milli")):
        return n
    if unit.startswith("s"):
        return n * 1000.0
    if unit.startswith("m") and unit not in ("ms",):
        return n * _FACTORS["m"]
    return n * _FACTORS[unit[0]]


UNITS = [
    "",
    "ms",
    "msec",
    "msecs",
    "millisecond",
    "milliseconds",
    "s",
    "sec",
    "secs",
    "second",
    "seconds",
    "m",
    "min",
    "mins",
    "minute",
    "minutes",
    "h",
    "hr",
    "hrs",
    "hour",
    "hours",
    "d",
    "day",
    "days",
    "w",
    "week",
    "weeks",
    "y",
    "yr",
    "yrs",
    "year",
    "years",
]
numbers = st.from_regex(r"\A-?[0-9]{0,6}\.?[0-9]{1,6}\Z")
spellings = st.builds(
    lambda unit, flips: "".join(c.upper() if f else c for c, f in zip(unit, flips, strict=False)),
    st.sampled_from(UNITS),
    st.lists(st.booleans(), min_size=12, max_size=12),
)


@given(numbers, st.integers(0, 3), spellings)
def test_grammar_matches_ms(number: str, spaces: int, unit: str) -> None:
    text = number + " " * spaces + unit
    assert parse_ms(text) == reference_ms(text)
    assert parse_ms(text) is not None


@given(st.text(max_size=120))
@example("1h\n")
@example(" 1h")
@example("1h30m")
@example("1e3")
@example("1.")
@example("٣h")  # a non-ASCII digit
@example("1ſ")  # a non-ASCII letter that folds to 's'
@example("1" * 101)
def test_any_text_matches_ms_or_is_rejected(text: str) -> None:
    expected = reference_ms(text)
    assert parse_ms(text) == expected
    if expected is None:
        with pytest.raises(ValueError):
            parse_duration(text)


@pytest.mark.parametrize(
    ("text", "millis"),
    [
        ("1h", 3_600_000),
        ("1H", 3_600_000),
        ("1 hour", 3_600_000),
        ("1.5h", 5_400_000),
        ("2 days", 172_800_000),
        ("10y", 315_576_000_000),
        ("5 ms", 5),
        ("3600000", 3_600_000),
        ("-1", -1),
        ("-5m", -300_000),
        (".5s", 500),
        ("1" * 100, float("1" * 100)),
    ],
)
def test_known_values(text: str, millis: float) -> None:
    assert parse_ms(text) == millis


def test_parse_duration_returns_timedelta() -> None:
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration(1500) == timedelta(milliseconds=1500)
    assert parse_duration(timedelta(hours=2)) == timedelta(hours=2)


@pytest.mark.parametrize("bad", ["", "abc", "1h30m", " 1h", "1e3", "0x10"])
def test_parse_duration_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize("bad", [None, True, [1], b"1h"])
def test_parse_duration_rejects_types(bad: object) -> None:
    with pytest.raises(TypeError):
        parse_duration(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "wire"),
    [("1h", "1h"), ("30 days", "30 days"), (timedelta(minutes=2), "120000"), (5000, "5000"), (1.5e3, "1500")],
)
def test_expires_in_param(value: object, wire: str) -> None:
    assert expires_in_param(value, allow_never=False) == wire  # type: ignore[arg-type]


def test_never_only_where_allowed() -> None:
    assert expires_in_param("-1", allow_never=True) == "-1"
    assert expires_in_param(-1, allow_never=True) == "-1"
    with pytest.raises(ValueError, match="never"):
        expires_in_param(-1, allow_never=False)


@pytest.mark.parametrize("bad", ["0", 0, "-5m", -2, "500ms", 999, timedelta(0), float("nan"), float("inf")])
def test_expires_in_rejects_zero_negative_and_subsecond(bad: object) -> None:
    with pytest.raises(ValueError):
        expires_in_param(bad, allow_never=True)  # type: ignore[arg-type]
