"""Illumass: the blocking facade. Every call runs the async core on a private event-loop thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import ssl
import threading
import warnings
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from types import TracebackType
from typing import Any, TypeVar, cast

import anyio
from anyio.from_thread import BlockingPortal

from ._client import AsyncIllumass, SpecLike
from ._duration import ExpiresIn
from ._secret import Secret
from .errors import IllumassError
from .models import ApiKey, ApiKeyPage, AuthToken, DeleteResult, ProvisionResult, TokenInfo

__all__ = ["AuthAPI", "Illumass"]

T = TypeVar("T")

# How long closing a client that was never closed may take when it is garbage collected or the
# interpreter exits: plenty for a clean close, short enough never to hold up an exit for long.
_UNCLOSED_GRACE = 2.0
_CLOSED = "this Illumass client is closed; create a new one"
_CLOSED_IN_FLIGHT = "this Illumass client was closed while the call was in flight"


class Illumass:
    """Blocking client for the Illumass v4 API, with the same arguments and names as AsyncIllumass.

    >>> with Illumass(api_key="kapikey-...") as client:
    ...     page = client.auth.search_api_keys()

    It owns one event-loop thread for its whole life. It is safe to share between threads, and
    works from a thread that runs its own loop (a Jupyter cell). Ctrl-C cancels the call in flight
    and leaves the client usable. Close it (or use ``with``) to stop the thread; one never closed
    is closed when garbage collected or at interpreter exit, with a ResourceWarning. A process
    forked from this one cannot use the client (calls raise IllumassError): create a new one there.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        email: str | None = None,
        password: str | Secret | None = None,
        api_key: str | Secret | None = None,
        session_token: str | Secret | None = None,
        allow_unprefixed_tokens: bool = False,
        login_expires_in: ExpiresIn = "1h",
        timeout: float = 30.0,
        max_retries: int = 2,
        max_connections: int = 100,
        allow_insecure_http: bool = False,
        retry_backoff: float = 0.5,
        retry_backoff_max: float = 8.0,
        max_response_size: int = 32 * 1024 * 1024,
        ssl_context: ssl.SSLContext | None = None,
        trust_env: bool = True,
    ) -> None:
        # Built here, so bad arguments raise in the caller; its session opens on the loop thread.
        self._client = AsyncIllumass(
            base_url,
            email=email,
            password=password,
            api_key=api_key,
            session_token=session_token,
            allow_unprefixed_tokens=allow_unprefixed_tokens,
            login_expires_in=login_expires_in,
            timeout=timeout,
            max_retries=max_retries,
            max_connections=max_connections,
            allow_insecure_http=allow_insecure_http,
            retry_backoff=retry_backoff,
            retry_backoff_max=retry_backoff_max,
            max_response_size=max_response_size,
            ssl_context=ssl_context,
            trust_env=trust_env,
        )
        self._close_lock = threading.Lock()
        self._closed = False
        self._warned = False
        self._loop = _LoopThread(self._client)
        # Holds the loop thread, not self: it runs when an unclosed client is collected, or at exit.
        self._finalizer = weakref.finalize(self, _close_unclosed, self._loop, f"<Illumass {self.base_url}>")
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
        """Close the connections and stop the loop thread. Idempotent.

        Calls in flight on other threads end with IllumassError. A bulk run in flight first
        revokes the keys it created but did not deliver; close() returns once that is done. It
        cannot be called from the client's own loop (an ``on_result`` callback): it would wait for
        itself there.
        """
        loop = self._loop
        if threading.get_ident() == loop.ident and os.getpid() == loop.pid:
            raise IllumassError(
                "close() was called on the client's own event loop (from an on_result callback?), "
                "where it would wait for itself; close the client after the call returns"
            )
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._finalizer.detach()
        loop.stop(timeout=None)

    def __enter__(self) -> Illumass:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _usable_loop(self) -> _LoopThread:
        if self._closed:
            raise IllumassError(_CLOSED)
        loop = self._loop
        if os.getpid() != loop.pid:
            raise IllumassError(
                "this Illumass client was created in another process (before a fork); "
                "create a new client in this process"
            )
        if threading.get_ident() == loop.ident:
            raise IllumassError(
                "a blocking Illumass method was called from the client's own event loop "
                "(e.g. from an on_result callback); use AsyncIllumass there"
            )
        if loop.finished:
            raise loop.closed_error()
        if not self._warned and asyncio._get_running_loop() is not None:
            self._warned = True
            warnings.warn(
                "a blocking Illumass call was made from a thread running an event loop; "
                "it blocks that loop until it returns (AsyncIllumass would not)",
                RuntimeWarning,
                stacklevel=4,
            )
        return loop

    def _call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        loop = self._usable_loop()
        awaitable = fn(*args, **kwargs)
        if asyncio.iscoroutine(awaitable):
            return loop.run(cast("Coroutine[Any, Any, T]", awaitable))
        return loop.run(_awaited(awaitable))

    def _through_portal(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, a blocking portal operation, with what a close does to it as IllumassError."""
        try:
            return fn(*args)
        except (asyncio.CancelledError, concurrent.futures.CancelledError) as exc:
            # Only the end of the loop cancels the portal's tasks: a close, or the thread dying.
            raise self._loop.closed_error(in_flight=True) from exc
        except RuntimeError as exc:  # "This portal is not running"
            if self._closed or self._loop.finished:
                raise self._loop.closed_error(in_flight=True) from exc
            raise

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
                try:
                    self._call(close)
                except IllumassError:
                    if not self._closed:  # closed meanwhile by another thread: nothing left to close
                        raise


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

    def delete_api_keys(self, key_ids: Iterable[str], *, concurrency: int = 16) -> list[DeleteResult]:
        """Revoke many keys concurrently; see ``AsyncAuthAPI.delete_api_keys``."""
        return self._client._call(self._async.delete_api_keys, key_ids, concurrency=concurrency)

    def prune_api_keys(self, *, concurrency: int = 16) -> list[DeleteResult]:
        """Revoke every expired API key; see ``AsyncAuthAPI.prune_api_keys``."""
        return self._client._call(self._async.prune_api_keys, concurrency=concurrency)

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
        client = self._client
        blocking = client._usable_loop().portal.wrap_async_context_manager(stream)
        results = client._through_portal(blocking.__enter__)
        try:
            yield client._iterate(_results(results))
        finally:
            # The stream stops and revokes what it did not deliver however the block ends, so it is
            # not told how: the caller's own exception (Ctrl-C too) is not thrown into the loop,
            # where a BaseException would end the loop thread. It propagates from here as it is.
            # After a close there is nothing to do: the close ended the stream and its revocations.
            if not client._closed:
                client._through_portal(blocking.__exit__, None, None, None)


class _LoopThread:
    """The event-loop thread of one Illumass, and the calls running on it.

    It holds no reference to its Illumass, so an unclosed client can still be garbage collected
    and its finalizer can stop this. The thread is a daemon: it never holds up an exit.
    """

    def __init__(self, client: AsyncIllumass) -> None:
        self.pid = os.getpid()
        self.calls: dict[asyncio.Task[Any], anyio.CancelScope] = {}  # used on the loop thread only
        self.waiting: set[threading.Lock] = set()  # callers' locks, released if the thread ends
        self.stop_requested = False  # by close() or the finalizer
        self.closing = False  # set on the loop thread when the calls are to end
        self.finished = False  # the thread has ended
        self.died: BaseException | None = None  # what ended it, if not a close
        self._client = client
        ready: concurrent.futures.Future[tuple[BlockingPortal, asyncio.AbstractEventLoop, anyio.Event]]
        ready = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="illumass-loop", daemon=True)
        self._thread.start()
        self.portal, self.loop, self._stop = ready.result()
        self.ident = self._thread.ident

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` as a task on the loop and block until it is done.

        A bare task and a lock, straight onto the loop: per call this costs a quarter of
        ``portal.call`` (which adds a task group) and half of ``run_coroutine_threadsafe`` (whose
        futures chain through an extra loop iteration), measured in benchmarks/. The task runs in
        an anyio cancel scope, which is how Ctrl-C and close() cancel it: unlike ``Task.cancel()``
        it leaves what the core shields (a create in flight, revocations) to finish.
        """
        done = threading.Lock()
        done.acquire()
        started: list[tuple[asyncio.Task[T], anyio.CancelScope]] = []
        calls = self.calls

        def finished(task: asyncio.Task[T]) -> None:
            del calls[task]
            done.release()

        def start() -> None:
            if self.closing:  # arrived after the close cancelled the calls in flight
                done.release()
                return
            scope = anyio.CancelScope()
            task = self.loop.create_task(_scoped(coroutine, scope))
            calls[task] = scope
            task.add_done_callback(finished)
            started.append((task, scope))

        self.waiting.add(done)
        try:
            self.loop.call_soon_threadsafe(start)
            try:
                done.acquire()
            except BaseException:  # Ctrl-C: cancel the call rather than abandon it
                with suppress(RuntimeError):
                    self.loop.call_soon_threadsafe(_cancel, started)  # runs after start(): FIFO
                done.acquire(timeout=5)
                raise
        except RuntimeError:  # the loop is closed
            pass
        finally:
            self.waiting.discard(done)
        if not started:
            coroutine.close()
            raise self.closed_error()
        task = started[0][0]
        if not task.done():  # the loop thread ended under it
            raise self.closed_error(in_flight=True)
        try:
            return task.result()
        except IllumassError:
            raise
        except Exception as exc:
            if self.closing:  # e.g. the session closed under it
                raise self.closed_error(in_flight=True) from exc
            raise
        except asyncio.CancelledError as exc:  # by a close, or by the end of the loop
            raise self.closed_error(in_flight=True) from exc
        except BaseException as exc:  # e.g. SystemExit in a callback: it is not the caller's to get
            raise IllumassError(
                f"the call ended with {_names(exc)} on the client's event loop "
                "(raised in an on_result callback?)"
            ) from exc

    def closed_error(self, *, in_flight: bool = False) -> IllumassError:
        if self.stop_requested:
            return IllumassError(_CLOSED_IN_FLIGHT if in_flight else _CLOSED)
        cause = f": {type(self.died).__name__} was raised on it (in a callback?)" if self.died else ""
        return IllumassError(f"this Illumass client's event-loop thread stopped{cause}; create a new client")

    def stop(self, timeout: float | None) -> bool:
        """Close the client on the loop and wait up to ``timeout`` s for the thread to end.

        Returns whether it ended. In a forked child it does nothing: the thread does not exist
        there, and the loop's selector is shared with the parent, so it must not be touched.
        """
        if os.getpid() != self.pid:
            return True
        self.stop_requested = True
        with suppress(RuntimeError):  # the loop is already closed
            self.loop.call_soon_threadsafe(self._stop.set)
        if threading.get_ident() != self.ident:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(
        self, ready: concurrent.futures.Future[tuple[BlockingPortal, asyncio.AbstractEventLoop, anyio.Event]]
    ) -> None:
        try:
            anyio.run(self._main, ready, backend="asyncio")
        except BaseException as exc:  # SystemExit or KeyboardInterrupt raised in a callback
            if not ready.done():
                ready.set_exception(exc)
            self.died = exc
        finally:
            self.finished = True
            for waiter in list(self.waiting):  # calls whose task will never finish: wake them
                with suppress(RuntimeError):  # already released
                    waiter.release()

    async def _main(
        self, ready: concurrent.futures.Future[tuple[BlockingPortal, asyncio.AbstractEventLoop, anyio.Event]]
    ) -> None:
        try:
            async with BlockingPortal() as portal:
                stop = anyio.Event()
                ready.set_result((portal, asyncio.get_running_loop(), stop))
                await stop.wait()
                await self._end_calls()
                await portal.stop(cancel_remaining=True)  # provision() blocks stop and revoke too
        finally:
            await self._end_calls()  # also when the loop ends otherwise (SystemExit in a callback)
            await self._client.aclose()  # last: what ran before may have needed the connections

    async def _end_calls(self) -> None:
        self.closing = True  # later calls fail at once
        for scope in self.calls.values():
            scope.cancel()
        if self.calls:  # a bulk run revokes what it will not deliver before it ends
            await asyncio.wait(list(self.calls))


def _close_unclosed(loop: _LoopThread, name: str) -> None:
    """The finalizer of an Illumass never closed: close it, waiting a bounded time."""
    if os.getpid() != loop.pid:
        return
    warnings.warn(
        f"{name} was never closed; use `with Illumass(...)` or call close()", ResourceWarning, stacklevel=2
    )
    loop.stop(timeout=_UNCLOSED_GRACE)


async def _scoped(coroutine: Coroutine[Any, Any, T], scope: anyio.CancelScope) -> T:
    with scope:
        return await coroutine
    raise asyncio.CancelledError  # the scope caught its own cancellation: Ctrl-C or close()


def _names(exc: BaseException) -> str:
    """The exception's type, or its leaves' for a group: SystemExit, not BaseExceptionGroup."""
    inner = getattr(exc, "exceptions", None)  # a group (no BaseExceptionGroup builtin on 3.10)
    if isinstance(inner, tuple) and inner:
        return ", ".join(sorted({_names(e) for e in inner}))
    return type(exc).__name__


def _cancel(started: list[tuple[asyncio.Task[Any], anyio.CancelScope]]) -> None:
    if started:
        started[0][1].cancel()


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


async def _results(results: AsyncIterator[ProvisionResult]) -> AsyncIterator[ProvisionResult]:
    # A plain async generator, so the sync iterator's cleanup does not close the stream itself.
    async for result in results:
        yield result
