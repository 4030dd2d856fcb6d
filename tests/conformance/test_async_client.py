"""AsyncIllumass against the real Kuzzle 2.56: every operation, with the server's state checked raw."""

from __future__ import annotations

import time
from datetime import timedelta

import anyio
import pytest

from illumass import (
    AsyncIllumass,
    AuthenticationError,
    ConflictError,
    InvalidCredentialsError,
    NotFoundError,
    PermissionDeniedError,
    fingerprint,
)

from .conftest import Account, Kuzzle, grew

pytestmark = [pytest.mark.kuzzle, pytest.mark.anyio]


async def test_login_token_logout(kuzzle: Kuzzle, account: Account) -> None:
    async with AsyncIllumass(kuzzle.url, email=account.email, password=account.password) as client:
        assert client.auth.token is None
        token = await client.auth.login(expires_in="10m")
        assert client.auth.token == token
        assert token.user_id == account.email
        assert token.ttl is not None and token.ttl.total_seconds() == 600
        jwt = token.jwt.get_secret_value()
        assert jwt.startswith("kauth-")
        me = kuzzle.me(jwt)
        assert me.status == 200 and me.body["result"]["_id"] == account.email
        await client.auth.logout()
        assert client.auth.token is None
    refused = kuzzle.me(jwt)
    assert refused.status == 401
    assert refused.body["error"]["id"] == "security.token.invalid"


async def test_wrong_password_is_invalid_credentials(kuzzle: Kuzzle, account: Account) -> None:
    before = kuzzle.stats()
    async with AsyncIllumass(kuzzle.url, email=account.email, password="not-" + account.password) as client:
        with pytest.raises(InvalidCredentialsError) as caught:
            await client.auth.search_api_keys()
    assert caught.value.status == 401
    assert account.password not in str(caught.value)
    assert grew(before, kuzzle.stats())["login"] == 1  # bad credentials are never retried


async def test_create_search_find_check_delete(kuzzle: Kuzzle, account: Account) -> None:
    admin_view = kuzzle.login(*account)
    async with AsyncIllumass(kuzzle.url, email=account.email, password=account.password) as client:
        key = await client.auth.create_api_key("conformance key", expires_in="30d", key_id="conf-key-1")
        assert key.id == "conf-key-1"
        assert key.user_id == account.email
        assert key.token is not None
        token = key.token.get_secret_value()
        assert token.startswith("kapikey-")
        assert key.fingerprint == fingerprint(token)
        # never longer than asked; a caller's id costs under a second (its ttl is tagged)
        month = timedelta(days=30)
        assert key.ttl is not None and month - timedelta(seconds=1) < key.ttl <= month

        listed = kuzzle.keys(admin_view)
        assert [hit["_id"] for hit in listed] == ["conf-key-1"]
        assert listed[0]["_source"]["fingerprint"] == key.fingerprint
        assert "token" not in listed[0]["_source"]
        assert kuzzle.me(token).body["result"]["_id"] == account.email  # the key authenticates

        page = await client.auth.search_api_keys()
        assert [k.id for k in page.hits] == ["conf-key-1"]
        assert page.total == 1
        assert page.hits[0].token is None
        matched = await client.auth.search_api_keys({"match": {"description": "conformance"}})
        assert [k.id for k in matched.hits] == ["conf-key-1"]
        assert [k.id async for k in client.auth.iter_api_keys()] == ["conf-key-1"]

        found = await client.auth.find_api_key(key.token)
        assert found is not None and found.id == "conf-key-1"
        info = await client.auth.check_token(key.token)
        assert info.valid and info.user_id == account.email
        mine = await client.auth.check_token()  # the client's own session token
        assert mine.valid and mine.user_id == account.email

        with pytest.raises(ConflictError):
            await client.auth.create_api_key("same id", key_id="conf-key-1")
        assert kuzzle.key_ids(admin_view) == {"conf-key-1"}  # the conflict made and removed nothing

        await client.auth.delete_api_key("conf-key-1")
        assert kuzzle.key_ids(admin_view) == set()  # gone from the listing at once
        assert not kuzzle.accepts(token)  # and refused
        assert not (await client.auth.check_token(key.token)).valid
        assert await client.auth.find_api_key(key.token) is None
        with pytest.raises(NotFoundError):
            await client.auth.delete_api_key("conf-key-1")


async def test_paging_and_iteration(
    kuzzle: Kuzzle, uncapped_account: Account, kuzzle_uncapped: Kuzzle
) -> None:
    server, account = kuzzle_uncapped, uncapped_account
    async with AsyncIllumass(server.url, email=account.email, password=account.password) as client:
        made = [await client.auth.create_api_key(f"page {i}", key_id=f"page-{i}") for i in range(5)]
        first = await client.auth.search_api_keys(from_=0, size=2)
        second = await client.auth.search_api_keys(from_=2, size=2)
        third = await client.auth.search_api_keys(from_=4, size=2)
        assert (first.total, second.total, third.total) == (2, 2, 1)  # total counts the page, as Kuzzle does
        paged = [k.id for k in first.hits + second.hits + third.hits]
        assert sorted(paged) == sorted(k.id for k in made)
        assert [k.id async for k in client.auth.iter_api_keys(page_size=2)] == paged
        assert {hit["_id"] for hit in server.keys(server.login(*account))} == set(paged)


async def test_request_any_route(kuzzle: Kuzzle, account: Account) -> None:
    async with AsyncIllumass(kuzzle.url, email=account.email, password=account.password) as client:
        me = await client.request("GET", "/_me")
        assert me["_id"] == account.email
        assert "now" in await client.request("GET", "/_now")
        created = await client.request(
            "POST", "/api-keys/_create", params={"expiresIn": "1h"}, json={"description": "via request"}
        )
        assert kuzzle.accepts(created["_source"]["token"])
        with pytest.raises(NotFoundError) as caught:
            await client.request("GET", "/no/such/route/here")
        assert caught.value.error_id == "network.http.url_not_found"
        with pytest.raises(PermissionDeniedError) as denied:  # document:get, outside the account profile
            await client.request("GET", "/index/collection/document")
        assert denied.value.error_id == "security.rights.forbidden"


async def test_renewal_by_real_expiry(kuzzle: Kuzzle, account: Account) -> None:
    """3 s sessions across 10 s of calls: renewed ahead of expiry, never a failed call."""
    before = kuzzle.stats()
    calls = errors = 0
    async with AsyncIllumass(
        kuzzle.url, email=account.email, password=account.password, login_expires_in="3s"
    ) as client:
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                await client.request("GET", "/_me")
            except Exception:
                errors += 1
            calls += 1
            await anyio.sleep(0.1)
    counted = grew(before, kuzzle.stats())
    assert errors == 0
    assert counted["/_me"] == calls  # no call needed a replay: renewed before the server refused
    assert 4 <= counted["login"] <= 12  # renewed about every 1.5 s, without a storm


async def test_session_revoked_elsewhere(kuzzle: Kuzzle, account: Account) -> None:
    async with AsyncIllumass(kuzzle.url, email=account.email, password=account.password) as client:
        token = (await client.auth.login()).jwt.get_secret_value()
        assert kuzzle.raw("POST", "/logout", token=token, body={}).status == 200
        assert not kuzzle.accepts(token)
        before = kuzzle.stats()
        page = await client.auth.search_api_keys()
        counted = grew(before, kuzzle.stats())
        renewed = client.auth.token
    assert page.hits == []
    assert counted["login"] == 1  # one re-login
    assert counted["search"] == 2  # the refused request, replayed once
    assert renewed is not None and kuzzle.accepts(renewed.jwt.get_secret_value())


@pytest.mark.parametrize(
    ("key_id", "lost"),
    [pytest.param(None, 1, id="sdk-id-lost-once"), pytest.param("mine-1", 2, id="own-id-lost-twice")],
)
async def test_lost_create_response_gives_exactly_one_key(
    kuzzle: Kuzzle, account: Account, key_id: str | None, lost: int
) -> None:
    """The front drops create responses after Kuzzle acted: still one key, with a working token."""
    view = kuzzle.login(*account)
    async with AsyncIllumass(kuzzle.url, email=account.email, password=account.password) as client:
        await client.auth.login()
        kuzzle.fault(kind="drop_after", action="create", times=lost)
        before = kuzzle.stats()
        key = await client.auth.create_api_key("lost", key_id=key_id, expires_in="2h")
        counted = grew(before, kuzzle.stats())
    assert counted["fault:drop_after:create"] == lost  # the responses were really lost
    assert key_id is None or key.id == key_id
    listed = kuzzle.keys(view)
    assert [hit["_id"] for hit in listed] == [key.id]
    assert listed[0]["_source"]["fingerprint"] == key.fingerprint
    assert key.token is not None and kuzzle.accepts(key.token.get_secret_value())


async def test_expired_key_is_refused(kuzzle: Kuzzle, account: Account) -> None:
    async with AsyncIllumass(kuzzle.url, email=account.email, password=account.password) as client:
        key = await client.auth.create_api_key("short", expires_in="2s")
    assert key.token is not None
    token = key.token.get_secret_value()
    for _ in range(40):  # its JWT `exp` is in whole seconds: dead within 2 s
        if not kuzzle.accepts(token):
            break
        await anyio.sleep(0.25)
    refused = kuzzle.me(token).body["error"]
    assert refused["id"] == "security.token.invalid"  # Kuzzle >= 2.34 says invalid, not expired
    async with AsyncIllumass(kuzzle.url, api_key=token) as bot:
        with pytest.raises(AuthenticationError) as caught:
            await bot.auth.search_api_keys()
        assert caught.value.status == 401
        info = await bot.auth.check_token(token)
    assert not info.valid
    assert token not in str(caught.value)


async def test_revoked_key_is_refused(kuzzle: Kuzzle, account: Account) -> None:
    async with AsyncIllumass(kuzzle.url, email=account.email, password=account.password) as client:
        key = await client.auth.create_api_key("revoked")
        assert key.token is not None
        async with AsyncIllumass(kuzzle.url, api_key=key.token) as bot:
            assert (await bot.request("GET", "/_me"))["_id"] == account.email
            await client.auth.delete_api_key(key.id)
            before = kuzzle.stats()
            with pytest.raises(AuthenticationError) as caught:
                await bot.request("GET", "/_me")
            assert grew(before, kuzzle.stats())["login"] == 0  # an API key is never re-logged in
    assert caught.value.error_id == "security.token.invalid"


async def test_expired_session_token_as_api_key(kuzzle: Kuzzle, account: Account) -> None:
    """A session token revoked by logout, given as session_token: refused, never renewed."""
    token = kuzzle.login(*account)
    assert kuzzle.raw("POST", "/logout", token=token, body={}).status == 200
    async with AsyncIllumass(kuzzle.url, session_token=token) as bot:
        with pytest.raises(AuthenticationError) as caught:
            await bot.auth.search_api_keys()
    assert isinstance(caught.value, AuthenticationError)
    assert caught.value.error_id in ("security.token.invalid", "security.token.expired")
