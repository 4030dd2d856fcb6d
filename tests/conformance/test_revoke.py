"""Revoking many keys against the real Kuzzle 2.56: delete_api_keys, prune_api_keys (both clients)
and the CLI's `api-keys delete --from-file/--expired` and `api-keys prune`."""

from __future__ import annotations

import json
import time

import pytest

from illumass import AsyncIllumass, Illumass, NotFoundError

from .conftest import Account, Cli, Kuzzle

pytestmark = pytest.mark.kuzzle


def wait_expired(kuzzle: Kuzzle, token: str) -> None:
    for _ in range(40):  # a "2s" key: its JWT exp is in whole seconds
        if not kuzzle.accepts(token):
            break
        time.sleep(0.25)
    else:
        raise AssertionError("the short key never expired")
    time.sleep(2.1)  # its stored expiresAt (what prune searches) may be up to 2 s later


@pytest.mark.anyio
async def test_delete_api_keys_and_prune(kuzzle: Kuzzle, account: Account) -> None:
    """Per-id results in input order (a missing id is a NotFoundError result, not a failure of
    the batch); prune revokes the expired keys and only those."""
    view = kuzzle.login(*account)
    async with AsyncIllumass(kuzzle.url, email=account.email, password=account.password) as client:
        made = [await client.auth.create_api_key(f"bulk {i}", expires_in="1h") for i in range(4)]
        results = await client.auth.delete_api_keys([made[0].id, "no-such-key", made[1].id], concurrency=2)
        assert [(r.key_id, r.ok) for r in results] == [
            (made[0].id, True),
            ("no-such-key", False),
            (made[1].id, True),
        ]
        assert isinstance(results[1].error, NotFoundError)
        assert kuzzle.key_ids(view) == {made[2].id, made[3].id}  # visible at once: no refresh lag

        short = await client.auth.create_api_key("short", expires_in="2s")
        assert short.token is not None
        wait_expired(kuzzle, short.token.get_secret_value())
        pruned = await client.auth.prune_api_keys()
    assert [(r.key_id, r.ok) for r in pruned] == [(short.id, True)]
    assert kuzzle.key_ids(view) == {made[2].id, made[3].id}
    assert all(k.token is not None and kuzzle.accepts(k.token.get_secret_value()) for k in made[2:])


def test_blocking_delete_api_keys_and_prune(kuzzle: Kuzzle, account: Account) -> None:
    view = kuzzle.login(*account)
    with Illumass(kuzzle.url, email=account.email, password=account.password) as client:
        keep = client.auth.create_api_key("keep", expires_in="1h")
        gone = client.auth.create_api_key("gone", expires_in="1h")
        short = client.auth.create_api_key("short", expires_in="2s")
        assert [r.ok for r in client.auth.delete_api_keys([gone.id])] == [True]
        assert short.token is not None
        wait_expired(kuzzle, short.token.get_secret_value())
        assert [r.key_id for r in client.auth.prune_api_keys()] == [short.id]
    assert kuzzle.key_ids(view) == {keep.id}


def test_cli_delete_from_file_expired_and_prune(cli: Cli, kuzzle: Kuzzle, account: Account) -> None:
    view = kuzzle.login(*account)
    secret = {"ILLUMASS_PASSWORD": account.password}
    base = ["--email", account.email]
    for key_id in ("f-1", "f-2", "f-3"):
        done = cli(*base, "api-keys", "create", key_id, "--id", key_id, "--expires-in", "1h", env=secret)
        assert done.returncode == 0, done.stderr
    done = cli(
        *base, "api-keys", "delete", "--from-file", "-", "--concurrency", "2", stdin="f-1\nf-2\n", env=secret
    )
    assert done.returncode == 0, done.stderr
    assert kuzzle.key_ids(view) == {"f-3"}

    done = cli(*base, "api-keys", "list", "--format", "tsv", env=secret)
    assert done.returncode == 0, done.stderr
    assert [line.split("\t")[0] for line in done.stdout.splitlines()] == ["id", "f-3"]  # whole ids

    for command in (["api-keys", "delete", "--expired"], ["api-keys", "prune"]):
        done = cli(
            *base, "api-keys", "create", "short", "--id", "short", "--expires-in", "2s", "--json", env=secret
        )
        assert done.returncode == 0, done.stderr
        wait_expired(kuzzle, json.loads(done.stdout)["token"])
        done = cli(*base, *command, env=secret)
        assert done.returncode == 0, done.stderr
        assert kuzzle.key_ids(view) == {"f-3"}, command
