"""The real server for the conformance suite: Kuzzle 2.56.0 behind the `/v4` front, on loopback.

The harness is `shared/kuzzle/` beside this repository (`<repo>/../shared/kuzzle`). The `kuzzle`
fixture starts it once per session on free ports, with `KZ_HOME` (default `~/.cache/kuzzle-2.56`,
the harness's own, so its two-minute install happens once per machine). An instance keeps its
state in `KZ_HOME/run` and rewrites `KZ_HOME/.kuzzlerc`, so two instances must not share one
`KZ_HOME`: when that home is already serving (its `run/pids` are alive, or another test session
holds its lock), and for the second, uncapped instance, the fixture makes a private home in a
temporary directory whose `kuzzle/` is a symlink to the installed one (instant; Kuzzle writes nothing
there), and deletes it afterwards.

Environment:
  ILLUMASS_KUZZLE_URL            use this running server (its `/v4` base URL) instead of starting one
  ILLUMASS_KUZZLE_UNCAPPED_URL   likewise for the server without the 10-key cap (KZ_ES_DEFAULT_SIZE=10000)
  ILLUMASS_REQUIRE_KUZZLE=1      fail, rather than skip, when the harness is absent (CI sets it)
  KZ_HOME                        where the harness is installed (default ~/.cache/kuzzle-2.56)
  ILLUMASS_KUZZLE_ADMIN          admin credentials "email:password" (default the harness's admin)
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO.parent / "shared" / "kuzzle"
DEFAULT_HOME = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kuzzle-2.56"
ADMIN = ("admin@example.com", "admin-pass")
USER = ("user@example.com", "user-pass")
POOL = 12  # users created at once; see Kuzzle.fresh_account


class Response(NamedTuple):
    """A raw HTTP answer: status, headers (lower-case names) and the body parsed as JSON (or None)."""

    status: int
    headers: dict[str, str]
    body: Any
    raw: bytes


def raw_request(
    url: str,
    method: str,
    path: str,
    *,
    body: object = None,
    data: bytes | None = None,
    token: str | None = None,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    content_type: str | None = "application/json",
) -> Response:
    """One request with http.client: nothing added but Host and Content-Length.

    ``url`` is a base URL (`http://127.0.0.1:7600/v4`), ``path`` is appended. A JSON ``body`` (or
    raw ``data``, possibly empty) is sent with ``content_type`` (None: no Content-Type header at
    all); a request with neither has no Content-Type.
    """
    parts = urllib.parse.urlsplit(url)
    target = parts.path.rstrip("/") + path
    if params:
        target += "?" + urllib.parse.urlencode(params)
    payload = data if data is not None else (None if body is None else json.dumps(body).encode())
    sent: dict[str, str] = {}
    if payload is not None and content_type is not None:
        sent["Content-Type"] = content_type
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    sent.update(headers or {})
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        conn.request(method, target, body=payload, headers=sent)
        answer = conn.getresponse()
        content = answer.read()
        got = {k.lower(): v for k, v in answer.getheaders()}
    finally:
        conn.close()
    try:
        parsed = json.loads(content) if content else None
    except ValueError:
        parsed = None
    return Response(answer.status, got, parsed, content)


def grew(before: Mapping[str, int], after: Mapping[str, int]) -> Counter[str]:
    """What the front counted between two `Kuzzle.stats()` snapshots."""
    return Counter({k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)})


class Account(NamedTuple):
    """A user of its own (profile `account`), made for one test."""

    email: str
    password: str


class Kuzzle:
    """A running real server: its `/v4` base URL, the front's fault and stats endpoints, admin calls."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        """The base URL clients use, ending in `/v4`."""
        parts = urllib.parse.urlsplit(self.url)
        self.front = f"{parts.scheme}://{parts.netloc}"
        """The front's root, where `/__fault` and `/__stats` live."""
        self._admin: str | None = None
        self._pool: list[Account] = []
        self._handed_out: list[Account] = []
        self._pool_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Kuzzle {self.url}>"

    # -- raw calls -----------------------------------------------------------------------------

    def raw(self, method: str, path: str, **kwargs: Any) -> Response:
        """A raw request to `url + path` (see raw_request)."""
        return raw_request(self.url, method, path, **kwargs)

    def login(self, email: str, password: str, expires_in: str = "1h") -> str:
        """A fresh session token, by a raw `POST /login`."""
        answer = self.raw(
            "POST", "/login", body={"email": email, "password": password}, params={"expiresIn": expires_in}
        )
        assert answer.status == 200, answer.body
        return str(answer.body["result"]["jwt"])

    def me(self, token: str) -> Response:
        """`GET /_me` with ``token`` as the bearer: 200 when the server accepts it."""
        return self.raw("GET", "/_me", token=token)

    def accepts(self, token: str) -> bool:
        """Whether the server accepts ``token`` as a bearer (checked with `GET /_me`)."""
        answer = self.me(token)
        assert answer.status in (200, 401), answer.body  # anything else is not an answer about the token
        return answer.status == 200

    def keys(self, token: str, query: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every API key the token's user holds (raw `_search`, pages of 1,000)."""
        found: list[dict[str, Any]] = []
        while True:
            answer = self.raw(
                "POST",
                "/api-keys/_search",
                body=dict(query or {}),
                token=token,
                params={"from": str(len(found)), "size": "1000"},
            )
            assert answer.status == 200, answer.body
            hits = answer.body["result"]["hits"]
            found += hits
            if len(hits) < 1000:
                return found

    def key_ids(self, token: str) -> set[str]:
        """The ids of every API key the token's user holds."""
        return {hit["_id"] for hit in self.keys(token)}

    # -- the front's faults and counters -------------------------------------------------------

    def fault(self, *, kind: str, action: str, times: int = 1, **extra: Any) -> None:
        """Arm a fault at the front: `drop_before`, `drop_after` or `status` on an action
        (`login`, `logout`, `create`, `search`, `delete`, or a path such as `/_checkToken`)."""
        answer = raw_request(
            self.front, "POST", "/__fault", body={"kind": kind, "action": action, "times": times, **extra}
        )
        assert answer.status == 200, answer.raw

    def clear_faults(self) -> None:
        """Remove every armed fault."""
        answer = raw_request(self.front, "POST", "/__fault", body={"clear": True})
        assert answer.status == 200, answer.raw

    def stats(self) -> dict[str, int]:
        """Requests per action seen by the front, and faults fired (`fault:<kind>:<action>`)."""
        answer = raw_request(self.front, "GET", "/__stats")
        assert answer.status == 200, answer.raw
        return dict(answer.body)

    # -- admin ---------------------------------------------------------------------------------

    def admin_token(self) -> str:
        """The admin's session token (one login per session; re-login if it was revoked)."""
        if self._admin is None or not self.accepts(self._admin):
            email, _, password = (os.environ.get("ILLUMASS_KUZZLE_ADMIN") or ":".join(ADMIN)).partition(":")
            self._admin = self.login(email, password, "24h")
        return self._admin

    def create_user(self, profile: str = "account", *, admin: str | None = None) -> Account:
        """A new user with ``profile`` and a random password (security:createUser; about 2 s)."""
        email = f"conf-{secrets.token_hex(6)}@example.com"
        password = secrets.token_urlsafe(12)
        answer = self.raw(
            "POST",
            f"/users/{email}/_create",
            body={
                "content": {"profileIds": [profile]},
                "credentials": {"local": {"username": email, "password": password}},
            },
            token=admin or self.admin_token(),
        )
        assert answer.status == 200, answer.body
        return Account(email, password)

    def fresh_account(self) -> Account:
        """A user (profile `account`) no test has used yet.

        Kuzzle takes about 2 s to create a user, and as long for many in parallel, so users are
        made POOL at a time and handed out one per test.
        """
        with self._pool_lock:
            if not self._pool:
                admin = self.admin_token()
                with ThreadPoolExecutor(POOL) as workers:
                    self._pool = list(workers.map(lambda _: self.create_user(admin=admin), range(POOL)))
            account = self._pool.pop()
            self._handed_out.append(account)
        return account

    def close(self) -> None:
        """Delete the users this object made (matters only for a server that outlives the session)."""
        users = self._handed_out + self._pool
        self._handed_out, self._pool = [], []
        if not users:
            return
        admin = self.admin_token()
        with ThreadPoolExecutor(POOL) as workers:
            list(workers.map(lambda a: self.raw("DELETE", f"/users/{a.email}", token=admin), users))


# -- starting and stopping the harness ---------------------------------------------------------


_ports_lock = threading.Lock()
_ports_given: set[int] = set()


def _free_ports(count: int) -> list[int]:
    """Ports free now, never the same twice in this session (instances start side by side)."""
    with _ports_lock:
        ports: list[int] = []
        while len(ports) < count:
            ports += [p for p in _bound_ports(count) if p not in _ports_given and p not in ports]
        ports = ports[:count]
        _ports_given.update(ports)
        return ports


def _bound_ports(count: int) -> list[int]:
    holders = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            holders.append(sock)
        return [sock.getsockname()[1] for sock in holders]
    finally:
        for sock in holders:
            sock.close()


def _serving(home: Path) -> bool:
    """Whether processes started from this home are still running (another instance uses it)."""
    try:
        lines = (home / "run" / "pids").read_text().split()
    except OSError:
        return False
    for pid in lines[1::2]:
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.kill(int(pid), 0)
            return True
    return False


def _lock(home: Path) -> IO[str] | None:
    """An exclusive lock on ``home`` for this session, or None when another session holds it."""
    home.mkdir(parents=True, exist_ok=True)
    handle = (home / ".conformance.lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


class Instance:
    """One harness instance this session started: its home, ports and environment."""

    def __init__(self, install: Path, *, private: bool, extra_env: Mapping[str, str] | None = None) -> None:
        self.install = install
        self.lock: IO[str] | None = None
        self.home = install
        self.private = private
        if not private:
            self.lock = _lock(install)
            if self.lock is None or _serving(install):
                self.private = True
        if self.private:
            if self.lock is not None:
                self.lock.close()
                self.lock = None
            self.home = Path(tempfile.mkdtemp(prefix="kuzzle-conformance-"))
            # The install is read-only at run time: share it instead of copying 300 MB.
            (self.home / "kuzzle").symlink_to(install / "kuzzle", target_is_directory=True)
        front, kport, es, redis = _free_ports(4)
        self.env = {
            **os.environ,
            "KZ_HOME": str(self.home),
            "KZ_FRONT_PORT": str(front),
            "KZ_PORT": str(kport),
            "KZ_ES_PORT": str(es),
            "KZ_REDIS_PORT": str(redis),
            "PYTHON": sys.executable,
            **(extra_env or {}),
        }
        self.url = f"http://127.0.0.1:{front}/v4"

    def start(self) -> None:
        done = subprocess.run(
            [str(HARNESS / "start.sh")],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if done.returncode != 0:
            self.stop()
            pytest.fail(
                f"could not start the real server ({HARNESS / 'start.sh'}, KZ_HOME={self.home}):\n"
                f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}",
                pytrace=False,
            )

    def stop(self) -> None:
        subprocess.run([str(HARNESS / "stop.sh")], env=self.env, capture_output=True, timeout=60, check=False)
        if self.lock is not None:
            self.lock.close()
        if self.private:
            shutil.rmtree(self.home, ignore_errors=True)


def _need_harness() -> None:
    if (HARNESS / "start.sh").is_file():
        return
    reason = f"the real-server harness is absent ({HARNESS}); set ILLUMASS_KUZZLE_URL to use a running one"
    if os.environ.get("ILLUMASS_REQUIRE_KUZZLE") == "1":
        pytest.fail(f"ILLUMASS_REQUIRE_KUZZLE=1: {reason}", pytrace=False)
    pytest.skip(reason)


def _install_home() -> Path:
    return Path(os.environ["KZ_HOME"]) if os.environ.get("KZ_HOME") else DEFAULT_HOME


CAPPED_ENV = {"KZ_ES_DEFAULT_SIZE": "10"}  # Elasticsearch's default: Kuzzle checks a user's first 10 keys
UNCAPPED_ENV = {"KZ_ES_DEFAULT_SIZE": "10000"}


class Servers:
    """The real servers this session starts: each at most once, in the background, all stopped at
    the end. Starting takes about 15 s, so the uncapped one starts beside the first when the
    session's tests will need it."""

    def __init__(self) -> None:
        self._workers = ThreadPoolExecutor(2, thread_name_prefix="kuzzle-start")
        self._started: dict[str, Future[Kuzzle]] = {}
        self._instances: list[Instance] = []

    def begin(self, name: str, make: Callable[[], Instance]) -> None:
        """Start server ``name`` in the background (once)."""
        if name not in self._started:
            self._started[name] = self._workers.submit(self._start, make)

    def get(self, name: str, make: Callable[[], Instance]) -> Kuzzle:
        """Server ``name``, started now unless it already is."""
        self.begin(name, make)
        return self._started[name].result()

    def _start(self, make: Callable[[], Instance]) -> Kuzzle:
        instance = make()
        self._instances.append(instance)
        instance.start()
        return Kuzzle(instance.url)

    def close(self) -> None:
        for started in self._started.values():
            with contextlib.suppress(BaseException):
                started.result()  # let a start in progress finish, so it can be stopped
        list(self._workers.map(Instance.stop, self._instances))
        self._workers.shutdown()


def _main_instance() -> Instance:
    return Instance(_install_home(), private=False, extra_env=CAPPED_ENV)


def _uncapped_instance() -> Instance:
    install = _install_home()
    if not (install / "kuzzle" / "package.json").is_file():
        pytest.fail(f"the harness is not installed in {install}", pytrace=False)
    return Instance(install, private=True, extra_env=UNCAPPED_ENV)


@pytest.fixture(scope="session")
def _servers() -> Iterator[Servers]:
    servers = Servers()
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture(scope="session")
def kuzzle(request: pytest.FixtureRequest, _servers: Servers) -> Iterator[Kuzzle]:
    """The real server (10-key cap as in production): started for the session, or ILLUMASS_KUZZLE_URL."""
    if os.environ.get("ILLUMASS_KUZZLE_URL"):
        yield from _external(os.environ["ILLUMASS_KUZZLE_URL"])
        return
    _need_harness()
    wanted = any("kuzzle_uncapped" in getattr(item, "fixturenames", ()) for item in request.session.items)
    installed = (_install_home() / "kuzzle" / "package.json").is_file()
    if wanted and installed and not os.environ.get("ILLUMASS_KUZZLE_UNCAPPED_URL"):
        _servers.begin("uncapped", _uncapped_instance)
    yield _servers.get("main", _main_instance)  # noqa: PT022 (a generator for the branch above)


@pytest.fixture(scope="session")
def kuzzle_uncapped(kuzzle: Kuzzle, _servers: Servers) -> Iterator[Kuzzle]:
    """A second real server whose API-key check is not capped at a user's first 10 keys
    (`KZ_ES_DEFAULT_SIZE=10000`): started beside the first when tests need it, or
    ILLUMASS_KUZZLE_UNCAPPED_URL."""
    if os.environ.get("ILLUMASS_KUZZLE_UNCAPPED_URL"):
        yield from _external(os.environ["ILLUMASS_KUZZLE_UNCAPPED_URL"])
        return
    _need_harness()
    yield _servers.get("uncapped", _uncapped_instance)  # noqa: PT022


def _external(url: str) -> Iterator[Kuzzle]:
    """A server this session did not start: delete the users made on it at the end."""
    server = Kuzzle(url)
    try:
        yield server
    finally:
        server.close()


def _account(server: Kuzzle) -> Iterator[Account]:
    server.clear_faults()
    try:
        yield server.fresh_account()
    finally:
        server.clear_faults()


@pytest.fixture
def account(kuzzle: Kuzzle) -> Iterator[Account]:
    """A fresh user (profile `account`) on `kuzzle`, for this test only: the 10-key cap is per
    user and expired keys are never purged, so tests never share a user."""
    yield from _account(kuzzle)


@pytest.fixture
def uncapped_account(kuzzle_uncapped: Kuzzle) -> Iterator[Account]:
    """A fresh user on `kuzzle_uncapped`, for this test only."""
    yield from _account(kuzzle_uncapped)


# -- the command line ---------------------------------------------------------------------------


class Cli:
    """`python -m illumass.cli --base-url URL ...`, its own config directory, no ILLUMASS_* from outside."""

    def __init__(self, server: Kuzzle, account: Account, config: Path) -> None:
        self.server, self.account, self.config = server, account, config
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ILLUMASS_")}
        self.env["ILLUMASS_CONFIG_DIR"] = str(config)

    def __call__(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "illumass.cli", "--base-url", self.server.url, *args],
            input=stdin if stdin is not None else "",
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    @property
    def session(self) -> Path:
        return self.config / "session.json"


@pytest.fixture
def cli(kuzzle: Kuzzle, account: Account, tmp_path: Path) -> Cli:
    return Cli(kuzzle, account, tmp_path / "config")
