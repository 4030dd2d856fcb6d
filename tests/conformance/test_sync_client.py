"""The blocking Illumass against the real Kuzzle 2.56: the same operations, the server checked raw."""

from __future__ import annotations

import pytest

from illumass import (
    AuthenticationError,
    ConflictError,
    Illumass,
    InvalidCredentialsError,
    NotFoundError,
    fingerprint,
)

from .conftest import Account, Kuzzle, grew

pytestmark = pytest.mark.kuzzle


def test_sync_lifecycle(kuzzle: Kuzzle, account: Account) -> None:
    view = kuzzle.login(*account)
    with Illumass(kuzzle.url, email=account.email, password=account.password) as client:
        assert client.auth.token is None
        session = client.auth.login(expires_in="20m")
        assert client.auth.token == session
        jwt = session.jwt.get_secret_value()
        assert kuzzle.me(jwt).body["result"]["_id"] == account.email

        key = client.auth.create_api_key("sync key", expires_in="1d", key_id="sync-1")
        assert key.token is not None
        token = key.token.get_secret_value()
        assert key.fingerprint == fingerprint(token)
        assert kuzzle.key_ids(view) == {"sync-1"}
        assert kuzzle.me(token).body["result"]["_id"] == account.email

        assert [k.id for k in client.auth.search_api_keys().hits] == ["sync-1"]
        assert [k.id for k in client.auth.iter_api_keys(page_size=1)] == ["sync-1"]
        found = client.auth.find_api_key(token)
        assert found is not None and found.id == "sync-1"
        assert client.auth.check_token(token).valid
        assert client.auth.check_token().valid
        assert client.request("GET", "/_me")["_id"] == account.email
        with pytest.raises(ConflictError):
            client.auth.create_api_key("again", key_id="sync-1")

        client.auth.delete_api_key("sync-1")
        assert kuzzle.key_ids(view) == set()
        assert not kuzzle.accepts(token)
        assert not client.auth.check_token(token).valid
        with pytest.raises(NotFoundError):
            client.auth.delete_api_key("sync-1")

        client.auth.logout()
        assert client.auth.token is None
    assert not kuzzle.accepts(jwt)


def test_sync_wrong_password(kuzzle: Kuzzle, account: Account) -> None:
    with (
        Illumass(kuzzle.url, email=account.email, password="wrong") as client,
        pytest.raises(InvalidCredentialsError),
    ):
        client.auth.login()


def test_sync_session_revoked_elsewhere(kuzzle: Kuzzle, account: Account) -> None:
    with Illumass(kuzzle.url, email=account.email, password=account.password) as client:
        jwt = client.auth.login().jwt.get_secret_value()
        assert kuzzle.raw("POST", "/logout", token=jwt, body={}).status == 200
        before = kuzzle.stats()
        assert client.request("GET", "/_me")["_id"] == account.email
        counted = grew(before, kuzzle.stats())
    assert (counted["login"], counted["/_me"]) == (1, 2)


def test_sync_api_key_mode(kuzzle: Kuzzle, account: Account) -> None:
    with Illumass(kuzzle.url, email=account.email, password=account.password) as client:
        key = client.auth.create_api_key("bot")
        assert key.token is not None
        with Illumass(kuzzle.url, api_key=key.token) as bot:
            assert bot.auth.token is None
            assert bot.request("GET", "/_me")["_id"] == account.email
            assert [k.id for k in bot.auth.search_api_keys().hits] == [key.id]
            client.auth.delete_api_key(key.id)
            with pytest.raises(AuthenticationError):
                bot.auth.search_api_keys()


def test_sync_bulk(kuzzle_uncapped: Kuzzle, uncapped_account: Account) -> None:
    """create_api_keys and provision through the blocking facade: every delivered key distinct and usable."""
    server, account = kuzzle_uncapped, uncapped_account
    view = server.login(*account)
    with Illumass(server.url, email=account.email, password=account.password) as client:
        listed = client.auth.create_api_keys([f"sync bulk {i}" for i in range(6)], concurrency=3)
        with client.auth.provision([f"sync stream {i}" for i in range(6)], concurrency=3) as stream:
            streamed = list(stream)
    results = listed + streamed
    assert [r.index for r in listed] == list(range(6))
    assert sorted(r.index for r in streamed) == list(range(6))
    assert all(r.ok for r in results), [str(r.error) for r in results if not r.ok]
    keys = [r.api_key for r in results if r.api_key is not None]
    tokens = [k.token.get_secret_value() for k in keys if k.token is not None]
    assert len(tokens) == 12
    assert server.key_ids(view) == {k.id for k in keys}
    shared = len(tokens) - len(set(tokens))
    assert shared == 0, f"{shared} of {len(tokens)} delivered keys share a token with another"
    assert [k.id for k, t in zip(keys, tokens, strict=True) if not server.accepts(t)] == []
