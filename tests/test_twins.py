"""A token another key of this client already has (a server clock gone back) is never delivered."""

from __future__ import annotations

import time

import anyio
import pytest

from illumass import AsyncIllumass, IllumassError
from illumass._jwt import claims
from illumass._keys import Lifetimes
from illumass.models import ApiKey
from illumass.testing import FakeIllumass

from .conftest import FAST

pytestmark = pytest.mark.anyio


async def rewind(server: FakeIllumass, key: ApiKey) -> None:
    """Let this client's memory of ``key``'s second lapse, then put the server back in that second."""
    assert key.token is not None
    iat = (claims(key.token.get_secret_value()) or {})["iat"]
    await anyio.sleep(1.1)
    server.clock_offset = iat + 0.3 - time.time()


async def test_a_twin_is_revoked_and_made_again(client: AsyncIllumass, server: FakeIllumass) -> None:
    first = await client.auth.create_api_key("one", expires_in="1h")
    await rewind(server, first)
    second = await client.auth.create_api_key("two", expires_in="1h")
    assert second.token is not None and first.token is not None
    assert second.token.get_secret_value() != first.token.get_secret_value()
    assert server.stats.requests["createApiKey"] == 3  # the twin, then a distinct key
    assert server.stats.requests["deleteApiKey"] == 1  # the twin revoked
    assert {k.id: k.token for k in server.api_keys.values()} == {
        first.id: first.token.get_secret_value(),
        second.id: second.token.get_secret_value(),
    }


async def test_no_budget_to_replace_a_twin_keeps_nothing(server: FakeIllumass) -> None:
    async with AsyncIllumass(
        server.url, email=server.email, password=server.password, max_retries=0, **FAST
    ) as client:
        first = await client.auth.create_api_key("one", expires_in="1h")
        await rewind(server, first)
        with pytest.raises(IllumassError, match="another key already has"):
            await client.auth.create_api_key("two", expires_in="1h")
    assert list(server.api_keys) == [first.id]
    assert server.stats.requests["deleteApiKey"] == 1


def test_a_reservation_that_must_wait_spends_no_tag() -> None:
    lifetimes = Lifetimes()
    assert lifetimes.take(2000.0, tagged=True) is not None  # a 2 s key: one lifetime only
    tag = lifetimes._tag
    assert lifetimes.take(2000.0, tagged=True) is None  # taken: this would have to wait
    assert lifetimes._tag == tag
