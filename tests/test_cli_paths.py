"""The `illumass` command's less travelled paths: sessions, prompts, option errors, provisioning edges."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from illumass.cli import (
    ResetFilter,
    _count_lines,
    app,
    parse_cap,
    parse_fault,
    read_specs,
    resume_command,
)
from illumass.testing import FakeIllumass

from .test_cli import cli, env, illumass_server, one_line_error, requests

__all__ = ["env", "illumass_server"]  # fixtures shared with test_cli.py


class TtyRunner(CliRunner):
    """A CliRunner whose stdin says it is a terminal, so the CLI prompts instead of failing."""

    @contextlib.contextmanager
    def isolation(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        with super().isolation(*args, **kwargs) as streams:
            sys.stdin.isatty = lambda: True  # type: ignore[method-assign]
            yield streams


def tty_cli(*args: str, stdin: str) -> Result:
    return TtyRunner().invoke(app, list(args), input=stdin, catch_exceptions=False)


def cache_of(env: dict[str, str]) -> Path:
    return Path(env["ILLUMASS_CONFIG_DIR"]) / "session.json"


# -- credentials and the session cache ---------------------------------------------------------


def test_empty_api_key_file_fails_before_any_request(
    env: dict[str, str], illumass_server: FakeIllumass, tmp_path: Path
) -> None:
    empty = tmp_path / "key"
    empty.write_text("  \n")
    line = one_line_error(cli("--api-key-file", str(empty), "api-keys", "list"), 1)
    assert line == f"error: --api-key-file {empty} is empty"
    assert requests(illumass_server) == 0


@pytest.mark.parametrize(
    "session",
    [
        {"email": "someone-else@example.com", "expires_at": None},  # another account's login
        {"email": "demo@illumass.test", "expires_at": 1.0},  # expired long ago
    ],
)
def test_unusable_cached_session_is_ignored(
    env: dict[str, str], illumass_server: FakeIllumass, session: dict[str, Any]
) -> None:
    cache = cache_of(env)
    cache.parent.mkdir(parents=True)
    cache.write_text(json.dumps({"base_url": env["ILLUMASS_BASE_URL"], "jwt": "stale-jwt", **session}))
    result = cli("api-keys", "list", "--json")
    assert result.exit_code == 0, result.output
    assert illumass_server.stats.logins == 1  # logged in with the password, not the cached token


def test_revoked_cached_session_is_forgotten(
    env: dict[str, str], illumass_server: FakeIllumass, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("login").exit_code == 0
    monkeypatch.delenv("ILLUMASS_PASSWORD")
    cache = cache_of(env)
    assert cache.exists()
    session = json.loads(cache.read_text())
    session["jwt"] = session["jwt"][:-4] + "AAAA"  # a token the server never issued (or revoked)
    cache.write_text(json.dumps(session))
    line = one_line_error(cli("api-keys", "list"), 1)
    assert line == "error: your session has expired or was revoked: run `illumass login`"
    assert not cache.exists()


def test_rejected_api_key_is_one_line_without_the_key(
    env: dict[str, str], illumass_server: FakeIllumass, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ILLUMASS_API_KEY", "kapikey-not-a-real-token")
    result = cli("api-keys", "list")
    line = one_line_error(result, 1)
    assert "kapikey-not-a-real-token" not in result.output
    assert "session has expired" not in line
    assert illumass_server.stats.logins == 0


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        (
            "ILLUMASS_PASSWORD",
            "no password: set ILLUMASS_PASSWORD, pass --password-stdin, or run in a terminal",
        ),
        ("ILLUMASS_EMAIL", "no email: pass --email or set ILLUMASS_EMAIL"),
    ],
)
def test_no_credential_without_a_terminal(
    env: dict[str, str],
    illumass_server: FakeIllumass,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    message: str,
) -> None:
    monkeypatch.delenv(variable)
    line = one_line_error(cli("api-keys", "list"), 1)
    assert line == f"error: {message}"
    assert requests(illumass_server) == 0


def test_email_and_password_prompted_on_a_terminal(
    env: dict[str, str], illumass_server: FakeIllumass, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ILLUMASS_EMAIL")
    monkeypatch.delenv("ILLUMASS_PASSWORD")
    stdin = f"{illumass_server.email}\n{illumass_server.password}\n"
    result = tty_cli("api-keys", "create", "prompted", "--id", "prompted", stdin=stdin)
    assert result.exit_code == 0, result.output
    assert "Email:" in result.output and "Password:" in result.output
    assert illumass_server.password not in result.output  # the password prompt hides the input
    assert illumass_server.stats.logins == 1
    assert set(illumass_server.api_keys) == {"prompted"}


def test_end_of_input_at_a_prompt_is_an_interrupt(
    env: dict[str, str], illumass_server: FakeIllumass, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ILLUMASS_PASSWORD")
    result = tty_cli("api-keys", "list", stdin="")
    assert result.exit_code == 130
    assert result.stderr.splitlines()[-1] == "interrupted"
    assert requests(illumass_server) == 0


def test_login_refuses_an_api_key(
    env: dict[str, str], illumass_server: FakeIllumass, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ILLUMASS_API_KEY", "kapikey-anything")
    line = one_line_error(cli("login"), 1)
    assert "login uses email and password" in line and "kapikey-anything" not in line
    assert requests(illumass_server) == 0
    assert not cache_of(env).exists()


def test_logout_when_not_logged_in(env: dict[str, str], illumass_server: FakeIllumass) -> None:
    result = cli("logout")
    assert result.exit_code == 0
    assert result.stderr.strip() == "Not logged in."
    assert requests(illumass_server) == 0


def test_not_standalone_returns_to_the_caller(env: dict[str, str], illumass_server: FakeIllumass) -> None:
    # standalone_mode=False: click's own behaviour, errors propagate as exceptions to the caller.
    with pytest.raises(click.UsageError):
        app.main(["api-keys", "nope"], standalone_mode=False)
    result = CliRunner().invoke(app, ["api-keys", "create", "embedded", "--id", "emb"], standalone_mode=False)
    assert result.exception is None and result.exit_code == 0, result.output
    assert set(illumass_server.api_keys) == {"emb"}


def test_create_help_describes_the_lifetime(env: dict[str, str]) -> None:
    result = cli("api-keys", "create", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "ms grammar" not in text
    assert "'30d'" in text and "'1h'" in text and "-1 never expires" in text


@pytest.mark.parametrize("lifetime", ["30d", "1h", "-1"])
def test_create_accepts_the_documented_lifetimes(
    env: dict[str, str], illumass_server: FakeIllumass, lifetime: str
) -> None:
    result = cli("api-keys", "create", "k", "--id", "k", "--expires-in", lifetime, "--json")
    assert result.exit_code == 0, result.output
    expected = {"30d": 30 * 86_400_000, "1h": 3_600_000, "-1": -1}[lifetime]
    ttl = illumass_server.api_keys["k"].ttl
    assert ttl == expected or 0 < expected - ttl <= 2000


@pytest.mark.parametrize("lifetime", ["3600", "30", "soon"])
def test_create_refuses_lifetimes_without_a_unit(
    env: dict[str, str], illumass_server: FakeIllumass, lifetime: str
) -> None:
    result = cli("api-keys", "create", "k", "--expires-in", lifetime)
    assert result.exit_code == 2
    assert "--expires-in" in result.stderr
    assert illumass_server.api_keys == {}


# -- serve: option parsing ---------------------------------------------------------------------


def test_parse_fault_forms() -> None:
    assert parse_fault("status") == {"kind": "status", "action": "*"}
    assert parse_fault("drop_after:*:x3") == {"kind": "drop_after", "action": "*", "times": 3}
    assert parse_fault("status:login:0.25") == {"kind": "status", "action": "login", "probability": 0.25}
    assert parse_fault("delay:createApiKey") == {"kind": "delay", "action": "createApiKey", "delay": 1.0}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("explode", "unknown kind 'explode'"),
        ("status:login:1.5", "'1.5': expected xN (N times) or a probability in [0, 1]"),
        ("status:login:often", "'often': expected xN"),
        ("status:login:xmany", "'xmany': expected xN"),
    ],
)
def test_parse_fault_refuses(value: str, message: str) -> None:
    with pytest.raises(click.BadParameter) as caught:
        parse_fault(value)
    assert message in caught.value.format_message()
    assert caught.value.param_hint == "--fault"


def test_parse_cap() -> None:
    assert parse_cap("none") is None and parse_cap("NONE") is None
    assert parse_cap("0") == 0 and parse_cap("25") == 25
    for bad in ("-3", "ten"):
        with pytest.raises(click.BadParameter, match="expected a number >= 0 or 'none'"):
            parse_cap(bad)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "no-colon"], "Invalid value for --user: expected EMAIL:PASSWORD"),
        (["--fault", "explode"], "Invalid value for --fault: unknown kind 'explode'"),
        (["--api-key-cap", "-3"], "Invalid value for --api-key-cap"),
        (["--max-ttl", "-1"], "Invalid value for --max-ttl"),
        (["--api-key-max-ttl", "3600"], "Invalid value for --api-key-max-ttl"),
    ],
)
def test_serve_refuses_bad_options(args: list[str], message: str) -> None:
    result = cli("serve", "--port", "0", *args)
    line = one_line_error(result, 2)
    assert message in line and line.endswith("serve --help)")


def test_serve_on_a_busy_port_is_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("serve", "--port", str(port))
    assert result.exit_code == 1 and "Traceback" not in result.output
    banner, line = result.stderr.splitlines()
    assert banner.startswith("FakeIllumass: api-key cap 10")
    assert line.startswith(f"error: cannot serve on 127.0.0.1:{port}: ")
    assert "Errno" not in line


def record(message: str, error: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(error), error, None) if error is not None else None
    return logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, message, None, exc_info)


def test_reset_filter_drops_only_vanished_clients() -> None:
    keep = ResetFilter().filter
    assert not keep(record("Error handling request", ConnectionResetError("reset by peer")))
    assert not keep(record("Error handling request", asyncio_cancelled()))
    assert not keep(record("Connection reset by peer"))
    assert not keep(record("Connection lost while reading"))
    assert keep(record("Error handling request", ValueError("a real bug")))
    assert keep(record("Server started"))


def asyncio_cancelled() -> BaseException:
    import asyncio

    return asyncio.CancelledError()


# -- provisioning edges ------------------------------------------------------------------------


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_read_specs_skips_blank_lines_and_rows() -> None:
    text = io.StringIO("a\n\n   \nb\r\n")
    assert [s.description for s in read_specs(text, is_csv=False)] == ["a", "b"]
    rows = io.StringIO("first,2d\n\n , \nsecond,,id-2\n")
    specs = list(read_specs(rows, is_csv=True))
    assert [(s.description, s.expires_in, s.key_id) for s in specs] == [
        ("first", "2d", None),
        ("second", None, "id-2"),
    ]


def test_provision_skips_blank_lines(
    env: dict[str, str], illumass_server: FakeIllumass, tmp_path: Path
) -> None:
    source, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("a\n\n  \nb\n")
    result = cli("api-keys", "provision", str(source), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "created 2, failed 0" in result.stderr
    assert sorted(k.description for k in illumass_server.api_keys.values()) == ["a", "b"]
    assert sorted(r["description"] for r in records(out)) == ["a", "b"]


def test_resume_without_out_yet_starts_afresh(
    env: dict[str, str], illumass_server: FakeIllumass, tmp_path: Path
) -> None:
    source, out = tmp_path / "in.csv", tmp_path / "out.jsonl"
    source.write_text("description\none\n\ntwo\n")
    result = cli("api-keys", "provision", str(source), "--out", str(out), "--resume")
    assert result.exit_code == 0, result.output
    assert "created 2, failed 0; results in" in result.stderr and "skipped" not in result.stderr
    assert sorted(r["description"] for r in records(out)) == ["one", "two"]


def test_resume_survives_a_line_cut_short(
    env: dict[str, str], illumass_server: FakeIllumass, tmp_path: Path
) -> None:
    source, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("a\nb\nc\n")
    assert cli("api-keys", "provision", str(source), "--out", str(out)).exit_code == 0
    done = records(out)
    assert len(done) == 3
    # A crash mid-write: the record for "c" is lost, a partial line is left in its place.
    lost = done[-1]["description"]
    out.write_text("".join(json.dumps(r) + "\n" for r in done[:-1]) + '{"index": 2, "descr')
    result = cli("api-keys", "provision", str(source), "--out", str(out), "--resume")
    assert result.exit_code == 0, result.output
    assert "created 1, failed 0, skipped 2 already in" in result.stderr
    assert len(illumass_server.api_keys) == 4  # the lost one was created again, the others not
    assert records_after_cut(out)[-1]["description"] == lost


def records_after_cut(out: Path) -> list[dict[str, Any]]:
    found = []
    for line in out.read_text().splitlines():
        with contextlib.suppress(ValueError):
            found.append(json.loads(line))
    return found


def test_resume_and_overwrite_together_are_refused(
    env: dict[str, str], illumass_server: FakeIllumass, tmp_path: Path
) -> None:
    source, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("a\n")
    line = one_line_error(
        cli("api-keys", "provision", str(source), "--out", str(out), "--resume", "--overwrite"), 2
    )
    assert line == "error: --resume keeps OUT and --overwrite replaces it: give one"
    assert not out.exists() and requests(illumass_server) == 0


def test_out_under_a_file_is_one_line(
    env: dict[str, str], illumass_server: FakeIllumass, tmp_path: Path
) -> None:
    source, blocker = tmp_path / "in.txt", tmp_path / "a-file"
    source.write_text("a\n")
    blocker.write_text("")
    line = one_line_error(cli("api-keys", "provision", str(source), "--out", str(blocker / "o.jsonl")), 1)
    assert line.startswith(f"error: cannot use --out {blocker / 'o.jsonl'}: Not a directory")
    assert requests(illumass_server) == 0


def test_count_lines_of_an_unseekable_source() -> None:
    class Unseekable(io.StringIO):
        def tell(self) -> int:
            raise io.UnsupportedOperation("not seekable")

    assert _count_lines(Unseekable("a\nb\n")) is None
    assert _count_lines(io.StringIO("a\n\nb\n")) == 2


PROVISION = ["illumass", "api-keys", "provision", "in"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--out", "o"], "--out o --resume"),
        (["--resume", "--out", "my o"], "--resume --out 'my o'"),
        (["--overwrite", "--out", "o"], "--out o --resume"),
    ],
)
def test_resume_command(monkeypatch: pytest.MonkeyPatch, args: Sequence[str], expected: str) -> None:
    monkeypatch.setattr(sys, "argv", [*PROVISION, *args])
    assert resume_command() == "illumass api-keys provision in " + expected


def test_failed_provision_exits_2(env: dict[str, str], illumass_server: FakeIllumass, tmp_path: Path) -> None:
    source, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("a\n")
    illumass_server.faults.add(
        "status", "createApiKey", status=400, error_id="api.assert.invalid_argument", times=1
    )
    result = cli("api-keys", "provision", str(source), "--out", str(out))
    assert result.exit_code == 2, result.output
    assert "created 0, failed 1" in result.stderr
    assert "error" in records(out)[0] and illumass_server.api_keys == {}
