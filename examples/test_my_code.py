"""Testing your own code with FakeIllumass: the `illumass_server` fixture comes with the package."""

from illumass import Illumass
from illumass.testing import FakeIllumass


def rotate(client: Illumass, description: str) -> str:
    """The code under test: replace every key with this description by a fresh one."""
    for key in list(client.auth.iter_api_keys({"match": {"description": description}})):
        client.auth.delete_api_key(key.id)
    return client.auth.create_api_key(description, expires_in="30d").id


def test_rotate_leaves_one_key(illumass_server: FakeIllumass) -> None:
    with Illumass(illumass_server.url, email=illumass_server.email, password=illumass_server.password) as c:
        rotate(c, "gateway")
        new_id = rotate(c, "gateway")
    assert list(illumass_server.api_keys) == [new_id]


def test_survives_a_flaky_server(illumass_server: FakeIllumass) -> None:
    illumass_server.faults.add("drop_after", "createApiKey")  # the response of the create is lost
    with Illumass(illumass_server.url, email=illumass_server.email, password=illumass_server.password) as c:
        rotate(c, "gateway")
    assert len(illumass_server.api_keys) == 1  # still exactly one key
