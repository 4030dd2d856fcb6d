"""The documented worst case: one create sends at most ``2 * max_retries + 3`` create/delete requests."""

from __future__ import annotations

from typing import Literal

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from illumass import AsyncIllumass, IllumassError
from illumass.testing import FakeIllumass
from illumass.testing._faults import Fault

from .conftest import FAST

pytestmark = pytest.mark.anyio

Step = Literal["ok", "drop_after", "drop_before", "503", "500", "html_502"]
STEPS: tuple[Step, ...] = ("ok", "drop_after", "drop_before", "503", "500", "html_502")


def script(server: FakeIllumass, steps: list[Step]) -> list[Fault]:
    """Make the server's next createApiKey requests meet ``steps`` in order, then always lose responses."""
    faults: list[Fault] = []
    for step in steps:
        if step == "ok":
            # A zero delay keeps its place in the order: this request goes through.
            faults.append(server.faults.add("delay", "createApiKey", delay=0.0))
        elif step == "503":
            faults.append(server.faults.add("status", "createApiKey"))
        elif step == "500":
            error_id = "services.storage.unexpected_error"
            faults.append(server.faults.add("status", "createApiKey", status=500, error_id=error_id))
        else:
            faults.append(server.faults.add(step, "createApiKey"))
    faults.append(server.faults.add("drop_after", "createApiKey", times=1000))
    return faults


@example(steps=["drop_after", "ok"] * 5, max_retries=4, caller_id=False)  # lost, repaired, lost, ...
@example(steps=["drop_after", "ok"] * 5, max_retries=4, caller_id=True)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(st.sampled_from(STEPS), max_size=10),
    max_retries=st.integers(min_value=0, max_value=4),
    caller_id=st.booleans(),
)
async def test_one_create_stays_within_the_documented_bound(
    steps: list[Step], max_retries: int, caller_id: bool
) -> None:
    async with (
        FakeIllumass(seed=1, refresh_interval=0.02, api_key_cap=None) as server,
        AsyncIllumass(
            server.url, email=server.email, password=server.password, max_retries=max_retries, **FAST
        ) as client,
    ):
        await client.auth.login()
        faults = script(server, steps)
        try:
            key = await client.auth.create_api_key("bounded", key_id="k-1" if caller_id else None)
        except IllumassError:
            key = None
        sent = server.stats.requests["createApiKey"] + server.stats.requests["deleteApiKey"]
        # Deletes that revoke an undelivered key come on top of the bound (see KeyMaker.create).
        revoking = 1 if key is None else 0
        assert sent <= 2 * max_retries + 3 + revoking, (steps, sent)
        assert faults[0].fired >= 1  # the script ran
        assert sum(f.fired for f in faults) == server.stats.requests["createApiKey"]
        # Whatever happened, exactly the delivered key is on the server, or none.
        assert [k.id for k in server.api_keys.values()] == ([] if key is None else [key.id])
