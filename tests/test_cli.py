"""The `illumass` command against FakeIllumass: sessions, keys, provisioning, errors, demo."""

from __future__ import annotations

import json
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

from illumass.cli import app
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
    assert illumass_server.api_keys["key-a"].ttl == 172_800_000
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
