"""Illumass: the blocking facade. Every call runs the async core on a private event-loop thread."""

from __future__ import annotations

import asyncio
import os
import threading
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import Any, TypeVar, cast

from anyio.from_thread import BlockingPortal, start_blocking_portal

from ._client import AsyncIllumass, SpecLike
from ._duration import ExpiresIn
from ._secret import Secret
from .errors import IllumassError
from .models import ApiKey, ApiKeyPage, AuthToken, ProvisionResult, TokenInfo

__all__ = ["AuthAPI", "Illumass"]

T = TypeVar("T")


class Illumass:
    """Blocking client for the Illumass v4 API, with the same arguments and names as AsyncIllumass.

    >>> with Illumass(api_key="kapikey-...") as client:
    ...     page = client.auth.search_api_keys()

    It owns one event-loop thread for its whole life. It is safe to share between threads, and
    works from a thread that runs its own loop (a Jupyter cell). Ctrl-C cancels the call in flight
    and leaves the client usable. Close it (or use ``with``) to stop the thread.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        email: str | None = None,
        password: str | Secret | None = None,
        api_key: str | Secret | None = None,
        login_expires_in: ExpiresIn = "1h",
        timeout: float = 30.0,
        max_retries: int = 2,
        max_connections: int = 100,
        allow_insecure_http: bool = False,
    ) -> None:
        # Built here, so bad arguments raise in the caller; its session opens on the loop thread.
        self._client = AsyncIllumass(
            base_url,
            email=email,
            password=password,
            api_key=api_key,
            login_expires_in=login_expires_in,
            timeout=timeout,
            max_retries=max_retries,
            max_connections=max_connections,
            allow_insecure_http=allow_insecure_http,
        )
        self._pid = os.getpid()
        self._close_lock = threading.Lock()
        self._closed = False
        self._warned = False
        self._portal_cm = start_blocking_portal(backend="asyncio")
        self._portal: BlockingPortal = self._portal_cm.__enter__()
        self._loop_thread = self._portal.call(threading.get_ident)
        self._loop = self._portal.call(asyncio.get_running_loop)
        self.auth = AuthAPI(self)
        """Login, logout and API keys."""

    @property
    def base_url(self) -> str:
        """The API base URL."""
        return self._client.base_url

    def __repr__(self) -> str:
        return f"<Illumass {self.base_url}{' closed' if self._closed else ''}>"

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int | float | bool] | None = None,
        json: object = None,
    ) -> Any:
        """Call any other v4 route; see ``AsyncIllumass.request``."""
        return self._call(self._client.request, method, path, params=params, json=json)

    def close(self) -> None:
        """Close the connections and stop the loop thread. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if os.getpid() != self._pid:
            return  # the loop thread does not exist in a forked child
        try:
            self._portal.call(self._client.aclose)
        finally:
            self._portal_cm.__exit__(None, None, None)

    def __enter__(self) -> Illumass:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _portal_or_raise(self) -> BlockingPortal:
        if self._closed:
            raise IllumassError("this Illumass client is closed; create a new one")
        if os.getpid() != self._pid:
            raise IllumassError(
                "this Illumass client was created in another process (before a fork); "
                "create a new client in this process"
            )
        if threading.get_ident() == self._loop_thread:
            raise IllumassError(
                "a blocking Illumass method was called from the client's own event loop "
                "(e.g. from an on_result callback); use AsyncIllumass there"
            )
        if not self._warned and asyncio._get_running_loop() is not None:
            self._warned = True
            warnings.warn(
                "a blocking Illumass call was made from a thread running an event loop; "
                "it blocks that loop until it returns (AsyncIllumass would not)",
                RuntimeWarning,
                stacklevel=4,
            )
        return self._portal

    def _call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        self._portal_or_raise()
        awaitable = fn(*args, **kwargs)
        if asyncio.iscoroutine(awaitable):
            return _run_on(self._loop, cast("Coroutine[Any, Any, T]", awaitable))
        return _run_on(self._loop, _awaited(awaitable))

    def _iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    item = self._call(iterator.__anext__)
                except StopAsyncIteration:
                    return
                yield item
        finally:
            close = getattr(iterator, "aclose", None)
            if close is not None and not self._closed:
                self._call(close)


class AuthAPI:
    """``client.auth`` of the blocking client; see ``AsyncAuthAPI`` for each method."""

    def __init__(self, client: Illumass) -> None:
        self._client = client
        self._async = client._client.auth

    @property
    def token(self) -> AuthToken | None:
        """The current session token, or None before login (and with an API key)."""
        return self._async.token

    def login(
        self,
        email: str | None = None,
        password: str | Secret | None = None,
        *,
        expires_in: ExpiresIn | None = None,
    ) -> AuthToken:
        """Log in and return the token; see ``AsyncAuthAPI.login``."""
        return self._client._call(self._async.login, email, password, expires_in=expires_in)

    def logout(self) -> None:
        """Revoke the session token."""
        self._client._call(self._async.logout)

    def create_api_key(
        self,
        description: str,
        *,
        expires_in: ExpiresIn | None = None,
        key_id: str | None = None,
    ) -> ApiKey:
        """Create an API key; its token is returned this one time only."""
        return self._client._call(
            self._async.create_api_key, description, expires_in=expires_in, key_id=key_id
        )

    def search_api_keys(
        self, query: Mapping[str, Any] | None = None, *, from_: int = 0, size: int = 100
    ) -> ApiKeyPage:
        """One page of the user's API keys matching ``query``."""
        return self._client._call(self._async.search_api_keys, query, from_=from_, size=size)

    def iter_api_keys(
        self, query: Mapping[str, Any] | None = None, *, page_size: int = 100
    ) -> Iterator[ApiKey]:
        """Every API key matching ``query``, fetched page by page."""
        return self._client._iterate(self._async.iter_api_keys(query, page_size=page_size))

    def delete_api_key(self, key_id: str) -> None:
        """Revoke an API key."""
        self._client._call(self._async.delete_api_key, key_id)

    def find_api_key(self, token: str | Secret) -> ApiKey | None:
        """The API key whose token this is, or None."""
        return self._client._call(self._async.find_api_key, token)

    def check_token(self, token: str | Secret | None = None) -> TokenInfo:
        """Ask the server whether a token (by default the client's own) is valid."""
        return self._client._call(self._async.check_token, token)

    def create_api_keys(
        self,
        specs: Iterable[SpecLike],
        *,
        expires_in: ExpiresIn | None = None,
        concurrency: int = 16,
        max_retries: int = 5,
        on_result: Callable[[ProvisionResult], None] | None = None,
    ) -> list[ProvisionResult]:
        """Create many keys concurrently; results in input order.

        ``on_result`` runs on the client's event-loop thread: keep it quick, and do not call the
        blocking client from it.
        """
        return self._client._call(
            self._async.create_api_keys,
            specs,
            expires_in=expires_in,
            concurrency=concurrency,
            max_retries=max_retries,
            on_result=on_result,
        )

    def provision(
        self,
        specs: Iterable[SpecLike],
        *,
        expires_in: ExpiresIn | None = None,
        concurrency: int = 16,
        max_retries: int = 5,
    ) -> AbstractContextManager[Iterator[ProvisionResult]]:
        """Create many keys concurrently, yielding results as they complete.

        Leaving the block early revokes every key created but not delivered.
        """
        stream = self._async.provision(
            specs, expires_in=expires_in, concurrency=concurrency, max_retries=max_retries
        )
        return self._provision(stream)

    @contextmanager
    def _provision(self, stream: Any) -> Iterator[Iterator[ProvisionResult]]:
        portal = self._client._portal_or_raise()
        with portal.wrap_async_context_manager(stream) as results:
            yield self._client._iterate(_results(results))


def _run_on(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` as a task on the portal's ``loop`` and block until it is done.

    A bare task and a lock, straight onto the loop: per call this costs a quarter of
    ``portal.call`` (which adds a task group and a cancel scope) and half of
    ``run_coroutine_threadsafe`` (whose futures chain through an extra loop iteration), measured
    in benchmarks/. If the wait is interrupted (Ctrl-C), the task is cancelled, not abandoned.
    """
    done = threading.Lock()
    done.acquire()
    started: list[asyncio.Task[T]] = []

    def start() -> None:
        task = loop.create_task(coroutine)
        task.add_done_callback(lambda _: done.release())
        started.append(task)

    try:
        loop.call_soon_threadsafe(start)
    except RuntimeError:  # the loop is gone
        coroutine.close()
        raise IllumassError("this Illumass client is closed; create a new one") from None
    try:
        done.acquire()
    except BaseException:
        loop.call_soon_threadsafe(lambda: started[0].cancel())  # runs after start(): FIFO
        done.acquire(timeout=5)
        raise
    return started[0].result()


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


async def _results(results: AsyncIterator[ProvisionResult]) -> AsyncIterator[ProvisionResult]:
    # A plain async generator, so the sync iterator's cleanup does not close the stream itself.
    async for result in results:
        yield result
