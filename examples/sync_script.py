"""A synchronous script: list keys and revoke the ones that never expire."""

from illumass import Illumass

with Illumass() as client:  # base URL and credentials from ILLUMASS_* variables
    client.auth.create_api_key("legacy integration", expires_in=-1)
    for key in client.auth.iter_api_keys():
        if key.expires_at is None:
            client.auth.delete_api_key(key.id)
            print(f"revoked never-expiring key {key.id} ({key.description})")
