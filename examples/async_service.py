"""An asyncio service: log in once, create a key, use it, revoke it.

Run against FakeIllumass:  illumass serve --port 8800 &
  ILLUMASS_BASE_URL=http://127.0.0.1:8800/v4 ILLUMASS_EMAIL=demo@illumass.test \
  ILLUMASS_PASSWORD=demo-password python examples/async_service.py
"""

import anyio

from illumass import AsyncIllumass


async def main() -> None:
    async with AsyncIllumass() as client:  # base URL and credentials from ILLUMASS_* variables
        key = await client.auth.create_api_key("nightly ETL", expires_in="7d")
        assert key.token is not None
        print(f"created {key.id}, expires {key.expires_at:%Y-%m-%d}")

        async with AsyncIllumass(client.base_url, api_key=key.token) as etl:
            me = await etl.request("GET", "/_me")  # any v4 route, same token handling
            print(f"the key acts as user {me['_id']}")

        await client.auth.delete_api_key(key.id)
        print("revoked")


if __name__ == "__main__":
    anyio.run(main)
