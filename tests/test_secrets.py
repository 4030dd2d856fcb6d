"""Secrets (password, JWTs, API-key tokens) never reach logs, reprs or exception texts."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import illumass
from illumass import AsyncIllumass, Illumass, IllumassError
from illumass.testing import FakeIllumass

from .conftest import FAST

pytestmark = pytest.mark.anyio

PASSWORD = "correct-horse-battery-staple"


def secrets_of(server: FakeIllumass) -> set[str]:
    """Every secret the server handed out, plus each JWT's signature segment."""
    found = {PASSWORD}
    for token in [*server.sessions, *(k.token for k in server.api_keys.values())]:
        found.add(token)
        found.add(token.rsplit(".", 1)[-1])
    return found


def assert_clean(texts: list[str], secrets: set[str]) -> None:
    blob = "\n".join(texts)
    for secret in secrets:
        assert secret not in blob, f"a secret leaked: ...{secret[-6:]}"


async def test_async_lifecycle_leaks_nothing(debug_log: pytest.LogCaptureFixture) -> None:
    texts: list[str] = []
    seen_tokens: set[str] = set()
    async with FakeIllumass({"ops@example.com": PASSWORD}) as server:
        async with AsyncIllumass(server.url, email="ops@example.com", password=PASSWORD, **FAST) as client:
            texts.append(repr(client))
            token = await client.auth.login()
            seen_tokens.add(token.jwt.get_secret_value())
            texts += [repr(token), str(token), repr(client.auth.token)]
            key = await client.auth.create_api_key("leak test", expires_in="1d")
            texts += [repr(key), str(key)]
            server.faults.add("drop_after", "createApiKey")
            key2 = await client.auth.create_api_key("lost once")
            texts.append(repr(key2))
            texts.append(repr(await client.auth.search_api_keys()))
            assert key.token is not None
            texts.append(repr(await client.auth.find_api_key(key.token)))
            texts.append(repr(await client.auth.check_token(key.token)))
            results = await client.auth.create_api_keys(["a", "b", ""])
            texts.append(repr(results))
            for k in [key, key2, *(r.api_key for r in results if r.api_key)]:
                assert k.token is not None
                seen_tokens.add(k.token.get_secret_value())
            server.forget_sessions()
            await client.auth.search_api_keys()  # 401, re-login, replay
            for fault, action in [("status", "searchApiKeys"), ("html_502", "searchApiKeys")]:
                server.faults.add(fault, action, times=5)  # type: ignore[arg-type]
                with pytest.raises(IllumassError) as info:
                    await client.auth.search_api_keys()
                texts += [str(info.value), repr(info.value)]
            async with AsyncIllumass(server.url, api_key=key.token) as bot:
                await client.auth.delete_api_key(key.id)
                with pytest.raises(IllumassError) as info:
                    await bot.auth.search_api_keys()
                texts += [str(info.value), repr(info.value), repr(bot)]
            with pytest.raises(IllumassError) as info:
                await client.auth.login("ops@example.com", PASSWORD + "x")
            texts += [str(info.value), repr(info.value)]
            await client.auth.logout()
        secrets = secrets_of(server) | seen_tokens | {PASSWORD + "x"}
    texts += [r.getMessage() for r in debug_log.records]
    texts.append(debug_log.text)
    assert any(r.name == "illumass" for r in debug_log.records)
    assert_clean(texts, secrets)


def test_sync_lifecycle_leaks_nothing(debug_log: pytest.LogCaptureFixture) -> None:
    texts: list[str] = []
    with FakeIllumass({"ops@example.com": PASSWORD}) as server:
        with Illumass(server.url, email="ops@example.com", password=PASSWORD) as client:
            texts.append(repr(client))
            key = client.auth.create_api_key("sync leak test")
            texts.append(repr(key))
            with client.auth.provision(["x", "y"]) as results:
                texts += [repr(r) for r in results]
            with pytest.raises(IllumassError) as info:
                client.auth.login("ops@example.com", "wrong-" + PASSWORD)
            texts += [str(info.value), repr(info.value)]
        secrets = secrets_of(server) | {"wrong-" + PASSWORD}
    texts += [r.getMessage() for r in debug_log.records]
    assert_clean(texts, secrets)


def test_config_repr_hides_credentials() -> None:
    client = AsyncIllumass("https://api.illumass.com/v4", email="a@b.c", password=PASSWORD)
    assert PASSWORD not in repr(client._pipeline.transport.__dict__) + repr(client._pipeline.auth.__dict__)
    assert PASSWORD not in repr(illumass.Secret(PASSWORD))


def test_secrets_refuse_pickling() -> None:
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(illumass.Secret(PASSWORD))


def assert_private(path: Path) -> None:
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@pytest.fixture
def ops_server() -> Iterator[FakeIllumass]:
    with FakeIllumass({"ops@example.com": PASSWORD}) as server:
        yield server


def test_cli_leaks_nothing(
    ops_server: FakeIllumass,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    debug_log: pytest.LogCaptureFixture,
) -> None:
    from click.testing import CliRunner

    from illumass.cli import app

    illumass_server, runner = ops_server, CliRunner()
    env = {
        "ILLUMASS_BASE_URL": illumass_server.url,
        "ILLUMASS_EMAIL": "ops@example.com",
        "ILLUMASS_PASSWORD": PASSWORD,
        "ILLUMASS_CONFIG_DIR": str(tmp_path / "config"),
    }
    monkeypatch.delenv("ILLUMASS_API_KEY", raising=False)
    outputs: list[str] = []
    created = runner.invoke(app, ["api-keys", "create", "printed once"], env=env)
    shown_once = illumass_server.keys_of("ops@example.com")[0].token
    assert shown_once in created.output  # the one place a token is meant to appear
    source = tmp_path / "in.txt"
    source.write_text("a\nb\nc\n")
    out = tmp_path / "out.jsonl"
    for args in (
        ["login"],
        ["api-keys", "list"],
        ["api-keys", "list", "--json"],
        ["api-keys", "provision", str(source), "--out", str(out)],
        ["api-keys", "delete", "nope"],
        ["logout"],
    ):
        outputs.append(runner.invoke(app, args, env=env).output)
    outputs.append(
        runner.invoke(app, ["api-keys", "list"], env={**env, "ILLUMASS_PASSWORD": "x" + PASSWORD}).output
    )
    assert_private(out)
    secrets = (secrets_of(illumass_server) | {"x" + PASSWORD}) - {shown_once, shown_once.rsplit(".", 1)[-1]}
    for line in out.read_text().splitlines():  # tokens belong in the 0600 output file only
        secrets.discard(json.loads(line)["token"])
        secrets.discard(json.loads(line)["token"].rsplit(".", 1)[-1])
    assert_clean(outputs + [r.getMessage() for r in debug_log.records], secrets)


async def test_no_token_in_any_url(client: AsyncIllumass, server: FakeIllumass) -> None:
    key = await client.auth.create_api_key("k")
    assert key.token is not None
    await client.auth.find_api_key(key.token)
    await client.auth.check_token(key.token)
    await client.auth.delete_api_key(key.id)
    urls = [r.path + "?" + "&".join(f"{k}={v}" for k, v in r.query.items()) for r in server.stats.recent]
    assert_clean(urls, secrets_of(server) | {key.token.get_secret_value()})


def test_debug_log_describes_each_request(debug_log: pytest.LogCaptureFixture) -> None:
    with FakeIllumass() as server, Illumass(server.url, email=server.email, password=server.password) as c:
        c.auth.search_api_keys()
    lines = [r.getMessage() for r in debug_log.records if r.name == "illumass" and r.levelname == "DEBUG"]
    assert any(
        line.startswith("POST /api-keys/_search -> 200 [request ") and "attempt 1" in line for line in lines
    )
    infos = [r.getMessage() for r in debug_log.records if r.name == "illumass" and r.levelname == "INFO"]
    assert any("logged in as user" in line for line in infos)
