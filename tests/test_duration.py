"""parse_duration follows the npm `ms` 2.1.3 grammar exactly; expires_in arguments take only unambiguous,
sendable lifetimes (no bare numbers: the server reads them as milliseconds)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from illumass import parse_duration
from illumass._duration import ExpiresIn, _parse, expires_in_param, parse_ms

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
    [
        ("1h", "1h"),
        ("30 days", "30 days"),
        ("3600s", "3600s"),
        ("1000ms", "1000ms"),
        ("1000y", "1000y"),
        (timedelta(minutes=2), "120000"),
        (timedelta(seconds=1), "1000"),
    ],
)
def test_expires_in_param(value: ExpiresIn, wire: str) -> None:
    assert expires_in_param(value, allow_never=False) == wire


@pytest.mark.parametrize("never", [-1, -1.0, "-1", "-1.0", "-1ms"])
def test_never_only_where_allowed(never: ExpiresIn) -> None:
    assert expires_in_param(never, allow_never=True) == "-1"
    with pytest.raises(ValueError, match="never"):
        expires_in_param(never, allow_never=False)


@pytest.mark.parametrize(
    "bad", ["0", 0, "-5m", -2, "500ms", "0.5s", timedelta(0), timedelta(milliseconds=999)]
)
def test_expires_in_rejects_zero_negative_and_subsecond(bad: object) -> None:
    with pytest.raises(ValueError):
        expires_in_param(bad, allow_never=True)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad", [3600, 3600.0, 1.5e3, "3600", "86400000", "1.5", 10**15, float("nan"), float("inf")]
)
def test_bare_numbers_are_refused_with_a_way_out(bad: object) -> None:
    # The trap: the server reads these as milliseconds, so 3600 would be a 3.6 s key.
    with pytest.raises(ValueError) as info:
        expires_in_param(bad, allow_never=True)  # type: ignore[arg-type]
    message = str(info.value)
    assert "timedelta" in message
    assert "unit" in message
    assert "-1 for never" in message


def test_bare_number_message_names_the_argument_and_what_the_server_would_do() -> None:
    with pytest.raises(ValueError) as info:
        expires_in_param(3600, allow_never=False, name="login_expires_in")  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith("login_expires_in=3600 ")
    assert "3.6 s" in message
    assert "'3600s'" in message
    assert "never" not in message  # -1 is no way out for a login


@pytest.mark.parametrize("bad", ["300000y", "1001y", "52300 weeks", timedelta(days=400_000), timedelta.max])
def test_lifetimes_beyond_1000_years_are_refused(bad: ExpiresIn) -> None:
    # The server accepts them, but their expiry (past year 9999 for some) cannot become a datetime.
    with pytest.raises(ValueError, match="1000 years"):
        expires_in_param(bad, allow_never=True)


@pytest.mark.parametrize("bad", [None, True, [1], b"1h"])
def test_expires_in_rejects_types(bad: object) -> None:
    with pytest.raises(TypeError):
        expires_in_param(bad, allow_never=True)  # type: ignore[arg-type]


def _assert_sendable(wire: str) -> None:
    """What the server receives is a lifetime of 1 s to 1000 y with a unit, or exactly never."""
    if wire == "-1":
        return
    parsed = _parse(wire)
    assert parsed is not None
    millis, unit = parsed
    assert unit is not None or wire.isdigit()  # timedeltas go out as whole milliseconds
    assert 1000 <= millis <= 1000 * 365.25 * 86_400_000
    datetime.now(timezone.utc) + parse_duration(wire)  # the expiry is a date


@given(st.text(max_size=120))
@example("3600")
@example("-1")
@example("300000y")
@example("1000y")
def test_any_text_is_sent_sanely_or_refused(text: str) -> None:
    try:
        wire = expires_in_param(text, allow_never=True)
    except ValueError:
        parsed = _parse(text)
        assert parsed is None or parsed[1] is None or not 1000 <= parsed[0] <= 1000 * 365.25 * 86_400_000
        return
    assert wire == text or wire == "-1"
    _assert_sendable(wire)


@given(numbers, st.integers(0, 3), spellings)
def test_grammar_strings_are_accepted_exactly_when_unambiguous_and_in_range(
    number: str, spaces: int, unit: str
) -> None:
    text = number + " " * spaces + unit
    millis = reference_ms(text)
    assert millis is not None
    expected = millis == -1 or (bool(unit) and 1000 <= millis <= 1000 * 365.25 * 86_400_000)
    try:
        wire = expires_in_param(text, allow_never=True)
    except ValueError:
        assert not expected
    else:
        assert expected
        _assert_sendable(wire)


@given(st.one_of(st.integers(), st.floats()))
@example(3600)
@example(-1)
@example(0)
def test_numbers_are_refused_except_never(value: float) -> None:
    if value == -1:
        assert expires_in_param(value, allow_never=True) == "-1"  # type: ignore[arg-type]
        return
    with pytest.raises(ValueError, match="timedelta"):
        expires_in_param(value, allow_never=True)  # type: ignore[arg-type]


@given(st.timedeltas())
@example(timedelta(seconds=1))
@example(timedelta(milliseconds=999))
@example(timedelta(days=365_250))
@example(timedelta(days=365_251))
def test_timedeltas_are_accepted_within_range(value: timedelta) -> None:
    millis = value // timedelta(milliseconds=1)
    in_range = 1000 <= millis <= 1000 * 365.25 * 86_400_000
    try:
        wire = expires_in_param(value, allow_never=True)
    except ValueError:
        assert not in_range
    else:
        assert in_range
        assert wire == str(millis)
        _assert_sendable(wire)


def test_parse_duration_still_reads_numbers_as_the_server_does() -> None:
    # parse_duration describes the server; only arguments refuse the ambiguous forms.
    assert parse_duration("3600") == timedelta(seconds=3.6)
    assert parse_duration(3600) == timedelta(seconds=3.6)
    assert parse_duration("300000y") == timedelta(days=300000 * 365.25)
