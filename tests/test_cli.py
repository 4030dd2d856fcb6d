"""The `illumass` command against FakeIllumass: sessions, keys, provisioning, errors, demo."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from illumass.cli import ResetFilter, app, parse_fault, resume_command
from illumass.testing import FakeIllumass

from .conftest import http, served


@pytest.fixture
def illumass_server() -> Iterator[FakeIllumass]:
    """Most CLI tests are not about Kuzzle's API-key cap or refresh delay: a fast server."""
    with FakeIllumass(api_key_cap=None, refresh_interval=0) as server:
        yield server


@pytest.fixture
def env(illumass_server: FakeIllumass, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "ILLUMASS_BASE_URL": illumass_server.url,
        "ILLUMASS_EMAIL": illumass_server.email,
        "ILLUMASS_PASSWORD": illumass_server.password,
        "ILLUMASS_CONFIG_DIR": str(tmp_path / "config"),
    }
    monkeypatch.delenv("ILLUMASS_API_KEY", raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def cli(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=stdin, catch_exceptions=False)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_login_caches_a_private_session(
    env: dict[str, str], illumass_server: FakeIllumass, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = cli("login", "--expires-in", "2h")
    assert result.exit_code == 0, result.output
    cache = Path(env["ILLUMASS_CONFIG_DIR"]) / "session.json"
    assert mode(cache) == 0o600
    monkeypatch.delenv("ILLUMASS_PASSWORD")
    for _ in range(3):
        assert cli("api-keys", "list").exit_code == 0
    assert illumass_server.stats.logins == 1  # later commands reuse the cached token
    jwt = json.loads(cache.read_text())["jwt"]
    assert jwt not in result.output
    assert cli("logout").exit_code == 0
    assert not cache.exists()
    assert jwt not in illumass_server.sessions


def test_password_from_stdin(
    env: dict[str, str], illumass_server: FakeIllumass, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ILLUMASS_PASSWORD")
    result = cli("--password-stdin", "api-keys", "list", stdin=illumass_server.password + "\n")
    assert result.exit_code == 0, result.output


def test_create_list_delete(env: dict[str, str], illumass_server: FakeIllumass) -> None:
    result = cli("api-keys", "create", "CI runner", "--expires-in", "30d", "--id", "ci-1")
    assert result.exit_code == 0, result.output
    token = illumass_server.api_keys["ci-1"].token
    assert token in result.output
    assert "shown once" in result.output
    result = cli("api-keys", "create", "bot", "--json")
    created = json.loads(result.stdout)
    assert created["token"] == illumass_server.api_keys[created["id"]].token
    listed = [json.loads(line) for line in cli("api-keys", "list", "--json").stdout.splitlines()]
    assert [k["id"] for k in listed] == ["ci-1", created["id"]]
    assert all("token" not in k for k in listed)
    result = cli("api-keys", "list", "--query", '{"match": {"description": "bot"}}', "--json")
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [created["id"]]
    result = cli("api-keys", "delete", "ci-1", created["id"])
    assert result.exit_code == 0 and "revoked 2, failed 0" in result.stderr
    assert illumass_server.api_keys == {}


@pytest.mark.parametrize(
    "args",
    [
        ["api-keys", "create", "x", "--expires-in", "soon"],
        ["api-keys", "create", ""],
        ["api-keys", "create", "x", "--id", "a/b"],
        ["api-keys", "list", "--query", "[1]"],
        ["api-keys", "provision", "/does/not/exist", "--out", "o.jsonl"],
        ["api-keys", "provision", "-", "--out", "o.jsonl", "--concurrency", "0"],
        ["login", "--expires-in", "-1"],
    ],
)
def test_bad_arguments_fail_before_any_request(
    env: dict[str, str], illumass_server: FakeIllumass, args: list[str]
) -> None:
    result = cli(*args)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert sum(illumass_server.stats.requests.values()) == 0


def test_wrong_password_is_one_line_without_the_password(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ILLUMASS_PASSWORD", "hunter2-wrong")
    result = cli("api-keys", "list")
    assert result.exit_code == 1
    assert result.output.strip() == "error: login rejected: wrong email or password"
    assert "hunter2-wrong" not in result.output


def test_unreachable_server(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ILLUMASS_BASE_URL", "http://127.0.0.1:9/v4")
    result = cli("api-keys", "list")
    assert (
        result.exit_code == 1 and result.output.startswith("error: ") and len(result.output.splitlines()) == 1
    )


def test_provision_text_and_resume(
    env: dict[str, str], illumass_server: FakeIllumass, tmp_path: Path
) -> None:
    source = tmp_path / "devices.txt"
    source.write_text("".join(f"device {i}\n" for i in range(30)))
    out = tmp_path / "keys.jsonl"
    illumass_server.faults.add(
        "status", "createApiKey", status=400, error_id="api.assert.invalid_argument", times=2
    )
    result = cli("api-keys", "provision", str(source), "--out", str(out), "--concurrency", "4")
    assert result.exit_code == 2, result.output
    assert "created 28, failed 2" in result.output
    assert mode(out) == 0o600
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["index"] for r in records) == list(range(30))
    for r in records:
        if "error" not in r:
            assert r["token"] == illumass_server.api_keys[r["id"]].token
            assert r["description"] == f"device {r['index']}"
    result = cli("api-keys", "provision", str(source), "--out", str(out), "--resume")
    assert result.exit_code == 0, result.output
    assert "created 2, failed 0, skipped 28" in result.output
    assert len(illumass_server.api_keys) == 30
    retried = [json.loads(line) for line in out.read_text().splitlines()][30:]
    failed_first = sorted(r["index"] for r in records if "error" in r)
    assert sorted(r["index"] for r in retried) == failed_first


def test_provision_csv_from_stdin(env: dict[str, str], illumass_server: FakeIllumass, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    csv_text = 'description,expires_in,id\nalpha,2d,key-a\nbeta,,\n"gamma, with comma",-1,\n'
    result = cli("api-keys", "provision", "-", "--csv", "--out", str(out), stdin=csv_text)
    assert result.exit_code == 0, result.output
    assert 172_799_000 < illumass_server.api_keys["key-a"].ttl <= 172_800_000  # tagged: a caller id
    by_description = {k.description: k for k in illumass_server.api_keys.values()}
    assert set(by_description) == {"alpha", "beta", "gamma, with comma"}
    assert by_description["gamma, with comma"].ttl == -1
    assert by_description["beta"].ttl == 3_600_000


def test_demo_runs_offline() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "illumass.cli", "demo", "--keys", "25"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ILLUMASS_BASE_URL": "https://unused.invalid/v4", "FORCE_COLOR": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert "Provisioned 25/25 keys" in done.stdout
    assert "Revoked 26/26 keys concurrently; 0 remain on the server" in done.stdout
    assert "kapikey-" not in done.stdout + done.stderr
    assert "keys/s" in done.stderr and "100%" in done.stderr  # the progress bar, as on a terminal


def test_serve_command() -> None:
    with served("illumass.cli", "serve", "--port", "0", "--user", "a@b.c:pw") as url:
        assert http("POST", url + "/login", {"email": "a@b.c", "password": "pw"})[0] == 200


def one_line_error(result: Result, code: int) -> str:
    """The single stderr line of a failed command (no traceback, no usage block)."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def requests(server: FakeIllumass) -> int:
    return sum(server.stats.requests.values())


def make_key(server: FakeIllumass, tmp_path: Path) -> str:
    from illumass import Illumass

    with Illumass(server.url, email=server.email, password=server.password) as client:
        key = client.auth.create_api_key("for the cli", expires_in="1h")
    assert key.token is not None
    return key.token.get_secret_value()


def test_api_key_never_from_argv(
    env: dict[str, str], illumass_server: FakeIllumass, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = make_key(illumass_server, tmp_path)
    before = requests(illumass_server)
    line = one_line_error(cli("--api-key", token, "api-keys", "list"), 2)
    assert "ILLUMASS_API_KEY" in line and "--api-key-file" in line and token not in line
    assert requests(illumass_server) == before
    monkeypatch.delenv("ILLUMASS_PASSWORD")
    logins = illumass_server.stats.logins
    monkeypatch.setenv("ILLUMASS_API_KEY", token)
    assert cli("api-keys", "list", "--format", "json").exit_code == 0
    monkeypatch.delenv("ILLUMASS_API_KEY")
    key_file = tmp_path / "key"
    key_file.write_text(token + "\n")
    assert cli("--api-key-file", str(key_file), "api-keys", "list").exit_code == 0
    assert cli("--api-key-file", "-", "api-keys", "list", stdin=token + "\n").exit_code == 0
    assert illumass_server.stats.logins == logins  # all three used the key, not a login
    line = one_line_error(cli("--api-key-file", str(tmp_path / "none"), "api-keys", "list"), 1)
    assert "No such file" in line


@pytest.mark.parametrize(
    "args",
    [
        ["--password-stdin", "api-keys", "provision", "-", "--out", "o.jsonl"],
        ["--api-key-file", "-", "api-keys", "provision", "-", "--out", "o.jsonl"],
        ["--api-key-file", "-", "api-keys", "delete", "--from-file", "-"],
        ["--password-stdin", "api-keys", "delete", "--from-file", "-"],
    ],
)
def test_two_readers_of_stdin_are_refused(
    env: dict[str, str],
    illumass_server: FakeIllumass,
    tmp_path: Path,
    args: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ILLUMASS_PASSWORD")
    line = one_line_error(cli(*args, stdin="pw\na\nb\n"), 2)
    assert "both read stdin" in line
    assert requests(illumass_server) == 0
    assert not (tmp_path / "o.jsonl").exists()


def test_provision_refuses_a_used_out(
    env: dict[str, str], illumass_server: FakeIllumass, tmp_path: Path
) -> None:
    source, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("a\nb\n")
    assert cli("api-keys", "provision", str(source), "--out", str(out)).exit_code == 0
    line = one_line_error(cli("api-keys", "provision", str(source), "--out", str(out)), 2)
    assert "--resume" in line and "--overwrite" in line
    assert len(illumass_server.api_keys) == 2 and len(out.read_text().splitlines()) == 2
    assert cli("api-keys", "provision", str(source), "--out", str(out), "--resume").exit_code == 0
    assert len(illumass_server.api_keys) == 2
    result = cli("api-keys", "provision", str(source), "--out", str(out), "--overwrite")
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 2 and mode(out) == 0o600
    assert len(illumass_server.api_keys) == 4


def test_os_errors_are_one_line(env: dict[str, str], illumass_server: FakeIllumass, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("a\n")
    line = one_line_error(
        cli("api-keys", "provision", str(source), "--out", str(tmp_path / "no/dir/o.jsonl")), 1
    )
    assert "No such file or directory" in line and "Errno" not in line
    one_line_error(
        cli("api-keys", "provision", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")), 1
    )
    one_line_error(cli("api-keys", "provision", str(tmp_path), "--out", str(tmp_path / "o")), 1)
    one_line_error(cli("api-keys", "delete", "--from-file", str(tmp_path / "missing")), 1)
    assert requests(illumass_server) == 0
    blocker = tmp_path / "config-is-a-file"
    blocker.write_text("")
    os.environ["ILLUMASS_CONFIG_DIR"] = str(blocker / "sub")  # restored by monkeypatch in env
    one_line_error(cli("login"), 1)
    one_line_error(cli("api-keys", "nope"), 2)
    one_line_error(cli("--frobnicate"), 2)


def test_ids_are_never_cut(env: dict[str, str], illumass_server: FakeIllumass) -> None:
    for i in range(3):
        cli("api-keys", "create", f"a rather long description of device number {i} " * 2)
    ids = list(illumass_server.api_keys)
    assert all(len(i) >= 20 for i in ids)
    table = cli("api-keys", "list", "--format", "table")  # CliRunner: 80 columns, not a terminal
    assert table.exit_code == 0
    for key_id in ids:
        assert any(key_id in line for line in table.stdout.splitlines()), table.stdout
    piped = cli("api-keys", "list")  # not a terminal: TSV by default
    rows = [line.split("\t") for line in piped.stdout.splitlines()]
    assert rows[0] == ["id", "description", "expires_at", "fingerprint"]
    assert [r[0] for r in rows[1:]] == ids
    assert piped.stderr.strip() == "3 API keys"
    cli("api-keys", "delete", ids[0], ids[1])
    assert cli("api-keys", "list").stderr.strip() == "1 API key"


def test_delete_many_reports_each_failure(
    env: dict[str, str], illumass_server: FakeIllumass, tmp_path: Path
) -> None:
    for i in range(5):
        assert cli("api-keys", "create", f"k{i}", "--id", f"k{i}").exit_code == 0
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("k0\nk1\n\nmissing-1\n")
    result = cli("api-keys", "delete", "k2", "missing-2", "--from-file", str(ids_file), "--concurrency", "3")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert sorted(line.split(":")[0] for line in lines[:-1]) == ["failed missing-1", "failed missing-2"]
    assert lines[-1] == "revoked 3, failed 2"
    assert set(illumass_server.api_keys) == {"k3", "k4"}
    result = cli("api-keys", "delete", "--from-file", "-", stdin="k3\n")
    assert result.exit_code == 0 and set(illumass_server.api_keys) == {"k4"}
    one_line_error(cli("api-keys", "delete"), 2)
    one_line_error(cli("api-keys", "delete", "k4", "--expired"), 2)
    one_line_error(cli("api-keys", "delete", "a/b"), 2)


@pytest.mark.parametrize("command", [["prune"], ["delete", "--expired"]])
def test_prune_revokes_expired_keys(
    env: dict[str, str], illumass_server: FakeIllumass, command: list[str]
) -> None:
    illumass_server.clock_offset = -7200  # keys created now expire, by the server's clock, 2 h ago
    assert cli("api-keys", "create", "old", "--id", "old", "--expires-in", "1h").exit_code == 0
    illumass_server.clock_offset = 0
    assert cli("api-keys", "create", "new", "--id", "new", "--expires-in", "1h").exit_code == 0
    assert cli("api-keys", "create", "forever", "--id", "forever", "--expires-in", "-1").exit_code == 0
    result = cli("api-keys", *command, "--concurrency", "2")
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == "revoked 1, failed 0"
    assert set(illumass_server.api_keys) == {"new", "forever"}


def test_refused_keys_explained_once(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeIllumass(refresh_interval=0) as capped:  # Kuzzle's cap of 10 keys per user
        monkeypatch.setenv("ILLUMASS_BASE_URL", capped.url)
        source, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
        source.write_text("".join(f"d{i}\n" for i in range(25)))
        result = cli("api-keys", "provision", str(source), "--out", str(out), "--concurrency", "1")
    assert result.exit_code == 2
    assert result.stderr.count("verifies only a user's first 10 API keys") == 1, result.stderr
    assert "created 10, failed 15 (15 refused by the server's API-key cap" in result.stderr


def test_serve_exposes_knobs_and_ignores_resets(tmp_path: Path) -> None:
    log = tmp_path / "stderr"
    with log.open("w") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "illumass.cli", "serve", "--port", "0", "--user", "a@b.c:pw",
         "--fault", "status:login:x1", "--api-key-cap", "none", "--refresh-interval", "0", "--seed", "3"],
        stdout=subprocess.PIPE, stderr=errors, text=True,
        )  # fmt: skip
    assert proc.stdout is not None
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v4")
        assert "a@b.c / pw" in proc.stdout.readline() + proc.stdout.readline()
        assert http("POST", url + "/login", {"email": "a@b.c", "password": "pw"})[0] == 503  # the fault
        host, port = url.split("//")[1].split("/")[0].split(":")
        for _ in range(3):  # clients that vanish mid-request, with a TCP reset
            with socket.create_connection((host, int(port))) as sock:
                sock.sendall(b"POST /v4/_login HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert http("POST", url + "/login", {"email": "a@b.c", "password": "pw"})[0] == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
        proc.stdout.close()
    assert proc.returncode == 0
    text = log.read_text()
    assert "Traceback" not in text and "Error" not in text, text
    assert "1 fault rule" in text


def test_ctrl_c_during_provision_says_how_to_resume(tmp_path: Path) -> None:
    source, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("".join(f"device {i}\n" for i in range(400)))
    with FakeIllumass(api_key_cap=None, refresh_interval=0, latency=0.02) as server:
        env = {
            **os.environ,
            "ILLUMASS_BASE_URL": server.url,
            "ILLUMASS_EMAIL": server.email,
            "ILLUMASS_PASSWORD": server.password,
            "ILLUMASS_CONFIG_DIR": str(tmp_path / "config"),
        }
        args = ["api-keys", "provision", str(source), "--out", str(out), "--concurrency", "2"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "illumass.cli", *args], stderr=subprocess.PIPE, text=True, env=env
        )
        deadline = time.monotonic() + 60
        while (not out.exists() or out.stat().st_size < 200) and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 130, stderr
        assert "Traceback" not in stderr
        written = len(out.read_text().splitlines())
        assert 0 < written < 400
        assert f"interrupted: {written} results written to {out}" in stderr.replace("\n", " ")
        command = stderr.splitlines()[-1]
        assert command == f"illumass {' '.join(args)} --resume"
        resumed = CliRunner(env=env).invoke(app, command.split()[1:], catch_exceptions=False)
        assert resumed.exit_code == 0, resumed.output
        assert f"skipped {written}" in resumed.stderr


def test_logout_and_pipes_without_tracebacks(
    env: dict[str, str], illumass_server: FakeIllumass, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    bad = {**os.environ, **env, "ILLUMASS_CONFIG_DIR": str(blocker / "sub")}
    done = subprocess.run(
        [sys.executable, "-m", "illumass.cli", "logout"], capture_output=True, text=True, env=bad, timeout=60
    )
    assert done.returncode == 1 and done.stderr.startswith("error: cannot delete the session cache")
    assert len(done.stderr.splitlines()) == 1
    assert cli("api-keys", "create", "k", "--id", "key-1").exit_code == 0
    read_end, write_end = os.pipe()
    os.close(read_end)  # a reader that has already gone, as `| head` does: the first write fails
    try:
        done = subprocess.run(
            [sys.executable, "-m", "illumass.cli", "api-keys", "list", "--format", "json"],
            stdout=write_end, stderr=subprocess.PIPE, text=True, env={**os.environ, **env}, timeout=60,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_credentials_missing_or_unusable(
    env: dict[str, str], illumass_server: FakeIllumass, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-key"
    empty.write_text("\n")
    assert "is empty" in one_line_error(cli("--api-key-file", str(empty), "api-keys", "list"), 1)
    monkeypatch.setenv("ILLUMASS_API_KEY", "kapikey-x.y.z")
    assert "login uses email and password" in one_line_error(cli("login"), 1)
    assert requests(illumass_server) == 0  # a missing email or password: test_cli_paths.py


def test_a_cached_session_is_used_only_for_its_email_and_while_valid(
    env: dict[str, str], illumass_server: FakeIllumass
) -> None:
    assert cli("login").exit_code == 0
    cache = Path(env["ILLUMASS_CONFIG_DIR"]) / "session.json"
    assert cli("--email", "other@example.com", "api-keys", "list").exit_code == 1  # not theirs
    assert illumass_server.stats.requests["login"] == 2  # it tried its own login: no reuse
    session = json.loads(cache.read_text())
    session["expires_at"] = time.time() + 5  # about to expire: log in afresh
    cache.write_text(json.dumps(session))
    assert cli("api-keys", "list").exit_code == 0
    assert illumass_server.stats.requests["login"] == 3


def test_logout_when_not_logged_in(env: dict[str, str], illumass_server: FakeIllumass) -> None:
    result = cli("logout")
    assert result.exit_code == 0 and "Not logged in." in result.output
    assert requests(illumass_server) == 0


def test_serve_refuses_bad_options_and_a_busy_port() -> None:
    for args, message in [
        (["--fault", "bogus"], "unknown kind 'bogus'"),
        (["--fault", "status:*:x"], "expected xN"),
        (["--fault", "status:*:1.5"], "expected xN"),
        (["--api-key-cap", "lots"], "expected a number >= 0 or 'none'"),
        (["--api-key-cap", "-3"], "expected a number >= 0 or 'none'"),
        (["--user", "no-password"], "expected EMAIL:PASSWORD"),
        (["--max-ttl", "3600"], "no unit"),
    ]:
        assert message in one_line_error(cli("serve", "--port", "0", *args), 2), args
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("serve", "--port", str(port))
        assert result.exit_code == 1
        assert result.stderr.splitlines()[-1].startswith(f"error: cannot serve on 127.0.0.1:{port}: ")


def test_fault_rules_of_serve() -> None:
    assert parse_fault("delay") == {"kind": "delay", "action": "*", "delay": 1.0}
    assert parse_fault("drop_after:createApiKey:x3") == {
        "kind": "drop_after",
        "action": "createApiKey",
        "times": 3,
    }
    assert parse_fault("status::0.25") == {"kind": "status", "action": "*", "probability": 0.25}


def test_reset_filter_drops_only_client_resets() -> None:
    def record(message: str, error: BaseException | None = None) -> logging.LogRecord:
        exc_info = (type(error), error, None) if error is not None else None
        return logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, message, (), exc_info)

    reset = ResetFilter()
    assert not reset.filter(record("Error handling request", ConnectionResetError()))
    assert not reset.filter(record("Connection reset by peer"))
    assert not reset.filter(record("Connection lost"))
    assert reset.filter(record("Error handling request", ValueError("a real bug")))


def test_provision_options_that_contradict_or_cannot_work(
    env: dict[str, str], illumass_server: FakeIllumass, tmp_path: Path
) -> None:
    source = tmp_path / "in.txt"
    source.write_text("a\n\n   \nb\n")  # blank lines are skipped
    out = tmp_path / "o.jsonl"
    both = cli("api-keys", "provision", str(source), "--out", str(out), "--resume", "--overwrite")
    assert "give one" in one_line_error(both, 2)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert "cannot use --out" in one_line_error(
        cli("api-keys", "provision", str(source), "--out", str(blocker / "o.jsonl")), 1
    )
    assert requests(illumass_server) == 0
    # --resume with no OUT yet simply starts; a line cut short by a crash is not a result.
    assert cli("api-keys", "provision", str(source), "--out", str(out), "--resume").exit_code == 0
    assert len(illumass_server.api_keys) == 2
    with out.open("a") as file:
        file.write('{"index": 9, "descr')
    result = cli("api-keys", "provision", str(source), "--out", str(out), "--resume")
    assert result.exit_code == 0 and "skipped 2" in result.output
    assert len(illumass_server.api_keys) == 2


def test_provision_csv_skips_blank_rows(
    env: dict[str, str], illumass_server: FakeIllumass, tmp_path: Path
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("alpha,1h\n,\n\nbeta\n")
    assert cli("api-keys", "provision", str(source), "--out", str(tmp_path / "o.jsonl")).exit_code == 0
    assert sorted(k.description for k in illumass_server.api_keys.values()) == ["alpha", "beta"]


def test_resume_command_keeps_one_resume(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["illumass", "api-keys", "provision", "in", "--out", "o", "--overwrite"])
    assert resume_command() == "illumass api-keys provision in --out o --resume"
    monkeypatch.setattr(sys, "argv", ["illumass", "api-keys", "provision", "in", "--out", "o", "--resume"])
    assert resume_command() == "illumass api-keys provision in --out o --resume"
