"""The `illumass` command, run as a process, against the real Kuzzle 2.56."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from .conftest import Account, Cli, Kuzzle

pytestmark = pytest.mark.kuzzle


def test_cli_round_trip(cli: Cli, kuzzle: Kuzzle, account: Account, tmp_path: Path) -> None:
    """login, create, list, delete, provision, logout; the server's state checked after each."""
    view = kuzzle.login(*account)
    done = cli(
        "--email",
        account.email,
        "--password-stdin",
        "login",
        "--expires-in",
        "30m",
        stdin=account.password + "\n",
    )
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(cli.session.stat().st_mode) == 0o600
    jwt = json.loads(cli.session.read_text())["jwt"]
    assert kuzzle.me(jwt).body["result"]["_id"] == account.email
    assert jwt not in done.stdout + done.stderr

    before = kuzzle.stats().get("login", 0)
    done = cli("api-keys", "create", "cli key", "--expires-in", "7d", "--id", "cli-1", "--json")
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    assert created["id"] == "cli-1"
    assert kuzzle.me(created["token"]).body["result"]["_id"] == account.email
    assert kuzzle.key_ids(view) == {"cli-1"}

    done = cli("api-keys", "list", "--json")
    assert done.returncode == 0, done.stderr
    listed = [json.loads(line) for line in done.stdout.splitlines()]
    assert [k["id"] for k in listed] == ["cli-1"]
    assert all("token" not in k for k in listed)
    assert kuzzle.stats().get("login", 0) == before  # later commands use the cached session

    done = cli("api-keys", "delete", "cli-1")
    assert done.returncode == 0, done.stderr
    assert kuzzle.key_ids(view) == set()
    assert not kuzzle.accepts(created["token"])

    source = tmp_path / "devices.txt"
    source.write_text("sensor a\nsensor b\nsensor c\n")
    out = tmp_path / "keys.jsonl"
    done = cli("api-keys", "provision", str(source), "--out", str(out), "--concurrency", "2")
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["description"] for r in records) == ["sensor a", "sensor b", "sensor c"]
    assert all("error" not in r for r in records), records
    assert kuzzle.key_ids(view) == {r["id"] for r in records}
    assert [r["id"] for r in records if not kuzzle.accepts(r["token"])] == []

    done = cli("logout")
    assert done.returncode == 0, done.stderr
    assert not cli.session.exists()
    assert not kuzzle.accepts(jwt)
    assert kuzzle.accepts(records[0]["token"])  # logout does not touch API keys


def test_cli_provision_distinct_keys(cli: Cli, kuzzle: Kuzzle, account: Account, tmp_path: Path) -> None:
    """Provisioned keys are distinct: no two lines hold the same token, each is refused once deleted."""
    view = kuzzle.login(*account)
    source = tmp_path / "devices.csv"
    source.write_text("description,expires_in,id\ngw 1,2h,gw-1\ngw 2,,gw-2\ngw 3,2h,\ngw 4,,\n")
    out = tmp_path / "keys.jsonl"
    secret = {"ILLUMASS_PASSWORD": account.password}
    done = cli("--email", account.email, "api-keys", "provision", str(source), "--out", str(out), env=secret)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["description"] for r in records) == ["gw 1", "gw 2", "gw 3", "gw 4"]
    assert {"gw-1", "gw-2"} <= {r["id"] for r in records}
    assert kuzzle.key_ids(view) == {r["id"] for r in records}
    shared = len(records) - len({r["token"] for r in records})
    assert shared == 0, f"{shared} of {len(records)} provisioned keys share a token with another"
    done = cli("--email", account.email, "api-keys", "delete", "gw-1", env=secret)
    assert done.returncode == 0, done.stderr
    gw1 = next(r["token"] for r in records if r["id"] == "gw-1")
    assert not kuzzle.accepts(gw1)
    assert [r["id"] for r in records if r["id"] != "gw-1" and not kuzzle.accepts(r["token"])] == []


def test_cli_password_from_env_and_api_key_mode(cli: Cli, kuzzle: Kuzzle, account: Account) -> None:
    secret = {"ILLUMASS_PASSWORD": account.password}
    done = cli("--email", account.email, "api-keys", "create", "for the bot", "--json", env=secret)
    assert done.returncode == 0, done.stderr
    token = json.loads(done.stdout)["token"]
    assert not cli.session.exists()  # no login command, no cached session
    done = cli("api-keys", "list", "--json", env={"ILLUMASS_API_KEY": token})
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["description"] for line in done.stdout.splitlines()] == ["for the bot"]
    done = cli("--api-key-file", "-", "api-keys", "list", "--json", stdin=token + "\n")
    assert done.returncode == 0, done.stderr


def test_cli_wrong_password(cli: Cli, account: Account) -> None:
    done = cli("--email", account.email, "login", env={"ILLUMASS_PASSWORD": "wrong-password"})
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0, done.stderr  # one line
    assert "wrong email or password" in done.stderr
    assert "wrong-password" not in done.stderr
    assert not cli.session.exists()


def test_cli_revoked_session(cli: Cli, kuzzle: Kuzzle, account: Account) -> None:
    """A cached session revoked elsewhere: one clear line, the cache dropped."""
    done = cli("--email", account.email, "login", env={"ILLUMASS_PASSWORD": account.password})
    assert done.returncode == 0, done.stderr
    jwt = json.loads(cli.session.read_text())["jwt"]
    assert kuzzle.raw("POST", "/logout", token=jwt, body={}).status == 200
    done = cli("api-keys", "list")
    assert done.returncode == 1
    assert "illumass login" in done.stderr
    assert not cli.session.exists()


def test_cli_revoked_api_key(cli: Cli, kuzzle: Kuzzle, account: Account) -> None:
    secret = {"ILLUMASS_PASSWORD": account.password}
    done = cli("--email", account.email, "api-keys", "create", "short-lived", "--json", env=secret)
    created = json.loads(done.stdout)
    done = cli("--email", account.email, "api-keys", "delete", created["id"], env=secret)
    assert done.returncode == 0, done.stderr
    done = cli("api-keys", "list", env={"ILLUMASS_API_KEY": created["token"]})
    assert done.returncode == 1
    assert "revoked" in done.stderr or "expired" in done.stderr
    assert created["token"] not in done.stderr
