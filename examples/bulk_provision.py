"""Provision one key per device, saving each token as soon as it exists."""

import json
import os

import anyio

from illumass import ApiKeySpec, AsyncIllumass


def devices(count: int):  # a generator: specs are read lazily, a million is fine
    for serial in range(count):
        yield ApiKeySpec(f"sensor TIP{serial:06d}", expires_in="365d", key_id=f"tip{serial:06d}")


async def main() -> None:
    written, failed = 0, 0
    out = os.open("device-keys.jsonl", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    async with AsyncIllumass() as client:
        with os.fdopen(out, "w") as sink:
            async with client.auth.provision(devices(500), concurrency=32) as results:
                async for r in results:  # completion order
                    if r.ok and r.api_key and r.api_key.token:
                        line = {"id": r.api_key.id, "token": r.api_key.token.get_secret_value()}
                        sink.write(json.dumps(line) + "\n")
                        written += 1
                    else:
                        failed += 1
                        if failed == 1:  # e.g. ApiKeyRejectedError on a server that caps keys per user
                            print(f"{r.spec.description}: {r.error}")
    print(f"{written} keys written to device-keys.jsonl (mode 0600), {failed} failed")


if __name__ == "__main__":
    anyio.run(main)
