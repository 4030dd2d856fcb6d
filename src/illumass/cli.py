"""The ``illumass`` command: log in, manage and provision API keys, run FakeIllumass, run the demo."""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import os
import sys
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

try:
    import click
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.table import Table
    from rich.text import Text
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
    raise SystemExit(
        f"the illumass command needs its extra: pip install 'illumass[cli]' ({exc.name} missing)"
    ) from None

import anyio

from . import _args
from ._client import AsyncIllumass
from ._config import DEFAULT_BASE_URL
from ._duration import expires_in_param
from .errors import AuthenticationError, IllumassError, InvalidCredentialsError
from .models import ApiKey, ApiKeySpec, ProvisionResult

T = TypeVar("T")

stderr = Console(stderr=True, highlight=False)
stdout = Console(highlight=False)

TOKEN_WARNING = "This token is shown once and cannot be retrieved again: store it now."


# -- plumbing ------------------------------------------------------------------------------------


class Settings:
    """Global options, and the session cache they lead to."""

    def __init__(self, base_url: str, email: str | None, api_key: str | None, password_stdin: bool) -> None:
        self.base_url = base_url.rstrip("/")
        self.email = email
        self.api_key = api_key
        self.password_stdin = password_stdin

    @property
    def cache(self) -> Path:
        root = os.environ.get("ILLUMASS_CONFIG_DIR") or click.get_app_dir("illumass")
        return Path(root) / "session.json"

    def cached_session(self) -> dict[str, Any] | None:
        """The cached login for this base URL (and email), if it has not expired."""
        try:
            data = json.loads(self.cache.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("base_url") != self.base_url:
            return None
        if self.email and data.get("email") != self.email:
            return None
        expires = data.get("expires_at")
        if isinstance(expires, int | float) and expires < time.time() + 10:
            return None
        return data

    def password(self) -> str:
        env = os.environ.get("ILLUMASS_PASSWORD")
        if env:
            return env
        if self.password_stdin:
            return sys.stdin.readline().rstrip("\r\n")
        if not sys.stdin.isatty():
            fail("no password: set ILLUMASS_PASSWORD, pass --password-stdin, or run in a terminal")
        return str(click.prompt("Password", hide_input=True))

    def client(self, *, use_cache: bool = True) -> AsyncIllumass:
        """A client: API key, else the cached session, else email and password."""
        if self.api_key:
            return AsyncIllumass(self.base_url, api_key=self.api_key)
        session = self.cached_session() if use_cache else None
        if session is not None:
            return AsyncIllumass(self.base_url, session_token=str(session["jwt"]))
        if not self.email:
            if not sys.stdin.isatty():
                fail("no email: pass --email or set ILLUMASS_EMAIL")
            self.email = str(click.prompt("Email"))
        return AsyncIllumass(self.base_url, email=self.email, password=self.password())


def fail(message: str) -> NoReturn:
    """Print one line on stderr and exit 1."""
    stderr.print(f"[red]error:[/] {escape(message)}", markup=True, soft_wrap=True)
    raise SystemExit(1)


def run(settings: Settings, job: Callable[[AsyncIllumass], Awaitable[T]], *, use_cache: bool = True) -> T:
    """Run ``job`` with a client, turning every failure into one line on stderr."""

    async def main() -> T:
        async with settings.client(use_cache=use_cache) as client:
            return await job(client)

    try:
        return anyio.run(main)
    except InvalidCredentialsError:
        fail("login rejected: wrong email or password")
    except AuthenticationError as exc:
        if not settings.api_key and settings.cached_session() is not None:
            settings.cache.unlink(missing_ok=True)
            fail("your session has expired or was revoked: run `illumass login`")
        fail(str(exc))
    except (IllumassError, ValueError, TypeError, OSError) as exc:
        fail(str(exc))


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)


def open_private_append(path: Path) -> IO[str]:
    """Open ``path`` for appending, created 0600 (and made 0600 if it existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "a", encoding="utf-8")


def key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "description": key.description,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "fingerprint": key.fingerprint,
        **({"token": key.token.get_secret_value()} if key.token else {}),
    }


def checked_expires_in(value: str | None, *, allow_never: bool = True) -> str | None:
    if value is None:
        return None
    try:
        return expires_in_param(value, allow_never=allow_never)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--expires-in") from None


def keys_table(keys: list[ApiKey]) -> Table:
    table = Table("id", "description", "expires at", "fingerprint")
    for key in keys:
        expires = key.expires_at.strftime("%Y-%m-%d %H:%M UTC") if key.expires_at else "never"
        table.add_row(key.id, key.description, expires, key.fingerprint[:16] + "…")
    return table


class RateColumn(ProgressColumn):
    """Keys per second, once there is a rate to show."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.0f} keys/s" if task.speed else "")


def progress_bar(total: int | None) -> Progress:
    """A progress bar on stderr with rate and ETA; silent when stderr is not a terminal."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        disable=not stderr.is_terminal,
    )


# -- commands ------------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--base-url", envvar="ILLUMASS_BASE_URL", default=DEFAULT_BASE_URL, show_default=True)
@click.option("--email", envvar="ILLUMASS_EMAIL", help="Login email (or ILLUMASS_EMAIL).")
@click.option("--api-key", envvar="ILLUMASS_API_KEY", help="Use an API key instead of logging in.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.version_option(package_name="illumass")
@click.pass_context
def app(
    ctx: click.Context, base_url: str, email: str | None, api_key: str | None, password_stdin: bool
) -> None:
    """Illumass v4 API: sessions and API keys. The password comes from ILLUMASS_PASSWORD,
    --password-stdin, or a prompt; never from a flag."""
    ctx.obj = Settings(base_url, email, api_key, password_stdin)


@app.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8800, show_default=True, help="0 picks a free port.")
@click.option("--user", "users", multiple=True, help="EMAIL:PASSWORD (repeatable).")
@click.option("--latency", default=0.0, help="Milliseconds added to every request.")
def serve(host: str, port: int, users: tuple[str, ...], latency: float) -> None:
    """Run FakeIllumass, a local Illumass-compatible server, until Ctrl-C."""
    from .testing import FakeIllumass
    from .testing.__main__ import parse_user
    from .testing.__main__ import serve as serve_forever

    try:
        accounts = dict(parse_user(u) for u in users) or None
    except Exception as exc:
        raise click.BadParameter(str(exc), param_hint="--user") from None
    server = FakeIllumass(accounts, host=host, port=port, latency=latency / 1000)
    stderr.print(f"FakeIllumass users: {', '.join(server.users)} (Ctrl-C stops it)")
    try:
        anyio.run(serve_forever, server)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        fail(f"cannot serve on {host}:{port}: {exc.strerror}")


@app.command()
@click.option("--expires-in", default="1h", show_default=True, help="Session lifetime (ms grammar).")
@click.pass_obj
def login(settings: Settings, expires_in: str) -> None:
    """Log in and cache the session token (0600) for later commands."""
    wire = checked_expires_in(expires_in, allow_never=False)

    async def job(client: AsyncIllumass) -> None:
        token = await client.auth.login(expires_in=wire)
        email = settings.email
        session = {
            "base_url": settings.base_url,
            "email": email,
            "jwt": token.jwt.get_secret_value(),
            "expires_at": token.expires_at.timestamp() if token.expires_at else None,
        }
        write_private(settings.cache, json.dumps(session))
        until = token.expires_at.strftime("%Y-%m-%d %H:%M UTC") if token.expires_at else "never"
        stderr.print(f"Logged in as {email}; session cached until {until}.")

    if settings.api_key:
        fail("login uses email and password; unset --api-key / ILLUMASS_API_KEY")
    run(settings, job, use_cache=False)


@app.command()
@click.pass_obj
def logout(settings: Settings) -> None:
    """Revoke the cached session token and delete the cache."""
    session = settings.cached_session()
    if session is None:
        settings.cache.unlink(missing_ok=True)
        stderr.print("Not logged in.")
        return

    async def job(client: AsyncIllumass) -> None:
        with contextlib.suppress(AuthenticationError):  # already expired or revoked
            await client.request("POST", "/logout")

    run(settings, job)
    settings.cache.unlink(missing_ok=True)
    stderr.print("Logged out.")


@app.group("api-keys")
def api_keys() -> None:
    """Create, list, delete and provision API keys."""


@api_keys.command("create")
@click.argument("description")
@click.option("--expires-in", help="Lifetime in the ms grammar ('30d'); -1 never expires. Default 1h.")
@click.option("--id", "key_id", help="The key's id (generated when omitted).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def create(
    settings: Settings, description: str, expires_in: str | None, key_id: str | None, as_json: bool
) -> None:
    """Create an API key and print its token (shown this once)."""
    try:
        _args.description(description)
        if key_id is not None:
            _args.key_id(key_id)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    wire = checked_expires_in(expires_in)
    key = run(settings, lambda c: c.auth.create_api_key(description, expires_in=wire, key_id=key_id))
    if as_json:
        stdout.print_json(json.dumps(key_json(key)))
    else:
        assert key.token is not None
        stdout.print(keys_table([key]))
        stdout.print(key.token.get_secret_value(), soft_wrap=True, markup=False)
    stderr.print(TOKEN_WARNING)


@api_keys.command("list")
@click.option("--query", help='Elasticsearch query as JSON, e.g. \'{"match": {"description": "ci"}}\'.')
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@click.pass_obj
def list_keys(settings: Settings, query: str | None, as_json: bool) -> None:
    """List API keys (tokens are never shown again)."""
    try:
        parsed = json.loads(query) if query else None
        _args.query(parsed)
    except (ValueError, TypeError) as exc:
        raise click.BadParameter(f"not a JSON object: {exc}", param_hint="--query") from None

    async def job(client: AsyncIllumass) -> list[ApiKey]:
        return [k async for k in client.auth.iter_api_keys(parsed)]

    keys = run(settings, job)
    if as_json:
        for key in keys:
            click.echo(json.dumps(key_json(key)))
    else:
        stdout.print(keys_table(keys))
        stderr.print(f"{len(keys)} API keys")


@api_keys.command("delete")
@click.argument("key_ids", metavar="ID...", nargs=-1, required=True)
@click.pass_obj
def delete(settings: Settings, key_ids: tuple[str, ...]) -> None:
    """Revoke API keys."""
    try:
        for key_id in key_ids:
            _args.key_id(key_id)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None

    async def job(client: AsyncIllumass) -> None:
        for key_id in key_ids:
            await client.auth.delete_api_key(key_id)
            stderr.print(f"Revoked {key_id}")

    run(settings, job)


def read_specs(source: IO[str], is_csv: bool) -> Iterator[ApiKeySpec]:
    """Specs from text (one description a line) or CSV (description[,expires_in][,id])."""
    if not is_csv:
        for line in source:
            text = line.rstrip("\r\n")
            if text.strip():
                yield ApiKeySpec(text)
        return
    for number, row in enumerate(csv.reader(source)):
        if not row or not any(cell.strip() for cell in row):
            continue
        if number == 0 and row[0].strip().lower() == "description":
            continue  # header
        description = row[0]
        expires_in = row[1].strip() if len(row) > 1 and row[1].strip() else None
        key_id = row[2].strip() if len(row) > 2 and row[2].strip() else None
        yield ApiKeySpec(description, expires_in, key_id)


def already_done(out: Path) -> Counter[str]:
    """Descriptions with a successful line in ``out`` (counted, for duplicates)."""
    done: Counter[str] = Counter()
    try:
        with out.open(encoding="utf-8") as file:
            for line in file:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash
                if isinstance(record, dict) and record.get("id") and "error" not in record:
                    done[str(record.get("description"))] += 1
    except FileNotFoundError:
        pass
    return done


@api_keys.command("provision")
@click.argument("source", metavar="INPUT", type=click.File("r", encoding="utf-8"))
@click.option(
    "--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="JSON Lines output."
)
@click.option("--expires-in", help="Default lifetime for keys without their own. Default 1h.")
@click.option("--concurrency", default=16, show_default=True, type=click.IntRange(1, 1000))
@click.option("--resume", is_flag=True, help="Skip descriptions that OUT already holds.")
@click.option("--csv", "force_csv", is_flag=True, help="Read INPUT as CSV (default: by .csv extension).")
@click.pass_obj
def provision(
    settings: Settings,
    source: IO[str],
    out: Path,
    expires_in: str | None,
    concurrency: int,
    resume: bool,
    force_csv: bool,
) -> None:
    """Create one key per line of INPUT ('-' for stdin), writing each result to OUT as it arrives.

    Each line of OUT is JSON: index, description, id, token, expires_at, fingerprint (or error).
    OUT is created 0600 and flushed line by line, so an interrupted run can --resume.
    """
    wire = checked_expires_in(expires_in)
    is_csv = force_csv or source.name.endswith(".csv")
    done = already_done(out) if resume else Counter()
    lines = _count_lines(source) if source is not sys.stdin and not is_csv else None
    total = None if lines is None else max(0, lines - sum(done.values()))
    origin = array("q")  # input line number of each spec sent, so indices survive --resume
    skipped = 0

    def specs() -> Iterator[ApiKeySpec]:
        nonlocal skipped
        for index, spec in enumerate(read_specs(source, is_csv)):
            if done[spec.description] > 0:
                done[spec.description] -= 1
                skipped += 1
                continue
            origin.append(index)
            yield spec

    counts = Counter[str]()
    with open_private_append(out) as sink, progress_bar(total) as bar:
        task = bar.add_task("provisioning", total=total)

        def on_result(result: ProvisionResult) -> None:
            record: dict[str, Any] = {"index": origin[result.index], "description": result.spec.description}
            if result.api_key is not None:
                record.update(key_json(result.api_key))
                counts["ok"] += 1
            else:
                record["error"] = str(result.error)
                counts["failed"] += 1
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            bar.advance(task)

        async def job(client: AsyncIllumass) -> None:
            await client.auth.create_api_keys(
                specs(), expires_in=wire, concurrency=concurrency, on_result=on_result
            )

        run(settings, job)
    summary = f"created {counts['ok']}, failed {counts['failed']}"
    if skipped:
        summary += f", skipped {skipped} already in {out}"
    stderr.print(f"{summary}; results in {out}")
    if counts["failed"]:
        raise SystemExit(2)


def _count_lines(source: IO[str]) -> int | None:
    try:
        position = source.tell()
        count = sum(1 for line in source if line.strip())
        source.seek(position)
    except (OSError, io.UnsupportedOperation):
        return None
    return count


@app.command()
@click.option(
    "--keys", default=200, show_default=True, type=click.IntRange(1, 100_000), help="Keys in the bulk step."
)
def demo(keys: int) -> None:
    """Run the whole lifecycle against an embedded FakeIllumass: no account or network needed."""
    from .testing import FakeIllumass

    say = functools.partial(stdout.print, highlight=False)

    async def main() -> None:
        async with FakeIllumass(latency=0.002) as server:
            say(f"[bold]1.[/] Started FakeIllumass at {server.url} (user {server.email})")
            async with AsyncIllumass(server.url, email=server.email, password=server.password) as client:
                token = await client.auth.login(expires_in="1h")
                say(f"[bold]2.[/] Logged in as {token.user_id}; the JWT lasts {token.ttl}, renewed as needed")
                key = await client.auth.create_api_key("demo: CI runner", expires_in="30d")
                assert key.token is not None
                say(f"[bold]3.[/] Created API key {key.id} (token shown once, kept as {key.token!r})")
                async with AsyncIllumass(server.url, api_key=key.token) as bot:
                    info = await bot.auth.check_token(key.token)
                    say(f"    The key authenticates on its own: valid={info.valid}")
                with progress_bar(keys) as bar:
                    task = bar.add_task("provisioning", total=keys)
                    results = await client.auth.create_api_keys(
                        (f"demo: device {i:05d}" for i in range(keys)),
                        concurrency=32,
                        on_result=lambda _: bar.advance(task),
                    )
                ok = sum(r.ok for r in results)
                say(f"[bold]4.[/] Provisioned {ok}/{keys} keys concurrently (each exactly once)")
                listed = [k async for k in client.auth.iter_api_keys()]
                stdout.print(keys_table(listed[:5]))
                say(f"[bold]5.[/] Listed {len(listed)} keys page by page (first 5 above)")
                for result in results:
                    if result.api_key is not None:
                        await client.auth.delete_api_key(result.api_key.id)
                await client.auth.delete_api_key(key.id)
                remaining = (await client.auth.search_api_keys()).total
                say(f"[bold]6.[/] Revoked every key; {remaining} remain on the server")
                await client.auth.logout()
                say("[bold]7.[/] Logged out; the session token is revoked")
            stats = server.stats
            say(f"Done: {sum(stats.requests.values())} requests, {stats.logins} login. See README.md.")

    try:
        anyio.run(main)
    except (IllumassError, OSError) as exc:
        fail(str(exc))


def main() -> None:
    """Console entry point."""
    app(prog_name="illumass")


if __name__ == "__main__":
    main()
