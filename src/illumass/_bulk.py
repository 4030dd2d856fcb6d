"""Bulk provisioning: many API keys concurrently, each exactly once, none lost.

``concurrency`` worker tasks pull specs one at a time from the caller's (async) iterable, so at
most ``concurrency`` specs are read ahead and at most that many creates are in flight. Workers run
shielded: a create that has started always finishes, so its outcome is known. When the batch
must stop (cancellation, the consumer leaving, a failing callback) the workers stop pulling,
finish what they hold, and every key created but not delivered is revoked.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final

import anyio
import attrs

from ._config import check_count
from ._transport import Attempts
from .errors import IllumassError, InvalidSpecError
from .models import ApiKey, ApiKeySpec, ProvisionResult

__all__ = ["Provisioner", "create_all", "stream"]

log: Final = logging.getLogger("illumass")

SpecLike = str | ApiKeySpec
Specs = Iterable[SpecLike] | AsyncIterable[SpecLike]
_DONE: Final = object()


@attrs.frozen
class Provisioner:
    """How to create one key (with its attempt record) and how to revoke one."""

    create: Callable[[ApiKeySpec, Attempts], Awaitable[ApiKey]]
    revoke: Callable[[str], Awaitable[None]]


class _Batch:
    """The shared state of one bulk run: the spec source, the stop flag, stranded keys."""

    def __init__(self, provisioner: Provisioner, specs: Specs) -> None:
        self.provisioner = provisioner
        self.stopping = False
        self.failure: BaseException | None = None
        self.stranded: list[ApiKey] = []  # created, never delivered: revoked at the end
        self._next_index = 0
        if isinstance(specs, AsyncIterable):
            self._aiter: AsyncIterator[SpecLike] | None = aiter(specs)
            self._lock = anyio.Lock()  # an async iterator must not be advanced concurrently
        else:
            self._aiter = None
            self._iter = iter(specs)

    async def pull(self) -> tuple[int, object] | None:
        """The next (index, spec), or None when the input is exhausted or the batch is stopping."""
        if self.stopping:
            return None
        try:
            if self._aiter is None:
                item: object = next(self._iter, _DONE)
            else:
                async with self._lock:
                    item = await anext(self._aiter, _DONE)
        except Exception as exc:  # the caller's iterable failed: stop everything, report it
            self.fail(exc)
            return None
        if item is _DONE or self.stopping:
            return None
        index = self._next_index
        self._next_index += 1
        return index, item

    def fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        self.stopping = True

    async def run(self, workers: int, worker: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``workers`` copies of ``worker`` shielded; an outside cancellation stops the pulls."""

        finished = False

        async def on_cancel() -> None:
            try:
                await anyio.sleep_forever()
            finally:
                self.stopping |= not finished

        async with anyio.create_task_group() as watcher:
            watcher.start_soon(on_cancel)
            with anyio.CancelScope(shield=True):
                async with anyio.create_task_group() as tg:
                    for _ in range(workers):
                        tg.start_soon(worker)
                await self.revoke_stranded()
            finished = True
            watcher.cancel_scope.cancel()
        if self.failure is not None:
            raise self.failure

    async def revoke_stranded(self) -> None:
        failed: list[str] = []
        for key in self.stranded:
            try:
                await self.provisioner.revoke(key.id)
            except IllumassError as exc:
                log.warning("could not revoke undelivered API key %s: %s", key.id, exc)
                failed.append(key.id)
        self.stranded.clear()
        if failed:
            self.fail(
                IllumassError(
                    f"{len(failed)} API keys were created but not delivered and could not be revoked; "
                    f"delete them: {', '.join(failed)}"
                )
            )


async def create_all(
    provisioner: Provisioner,
    specs: Specs,
    concurrency: int,
    on_result: Callable[[ProvisionResult], Awaitable[None] | None] | None,
) -> list[ProvisionResult]:
    """Run every spec; return the results in input order.

    If the call is cancelled or ``on_result`` raises, the keys not yet handed to ``on_result``
    (all of them, without a callback) are revoked before the exception propagates.
    """
    workers = check_count("concurrency", concurrency, minimum=1)
    _check_specs(specs)
    batch = _Batch(provisioner, specs)
    results: list[ProvisionResult | None] = []

    async def worker() -> None:
        while (pulled := await batch.pull()) is not None:
            index, item = pulled
            if index >= len(results):
                results.extend([None] * (index + 1 - len(results)))
            result = results[index] = await _run_one(provisioner, index, item)
            try:
                if on_result is not None:
                    outcome = on_result(result)
                    if inspect.isawaitable(outcome):
                        await outcome
            except Exception as exc:
                batch.fail(exc)
                if result.api_key is not None:
                    batch.stranded.append(result.api_key)

    try:
        await batch.run(workers, worker)
        if batch.stopping:
            await anyio.lowlevel.checkpoint()  # stopped by a cancellation: let it raise here
    except BaseException:
        if on_result is None:  # revoke everything the caller will never see
            batch.stranded = [r.api_key for r in results if r is not None and r.api_key is not None]
            with anyio.CancelScope(shield=True):
                await batch.revoke_stranded()
        raise
    return [r for r in results if r is not None]


def stream(
    provisioner: Provisioner, specs: Specs, concurrency: int
) -> AbstractAsyncContextManager[AsyncIterator[ProvisionResult]]:
    """A context manager yielding results in completion order; see ``AsyncAuthAPI.provision``."""
    workers = check_count("concurrency", concurrency, minimum=1)
    _check_specs(specs)
    return _stream(_Batch(provisioner, specs), workers)


@asynccontextmanager
async def _stream(batch: _Batch, workers: int) -> AsyncIterator[AsyncIterator[ProvisionResult]]:
    send, receive = anyio.create_memory_object_stream[ProvisionResult](workers)
    running = workers

    async def worker() -> None:
        nonlocal running
        try:
            while (pulled := await batch.pull()) is not None:
                result = await _run_one(batch.provisioner, *pulled)
                try:
                    await send.send(result)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    batch.stopping = True  # the consumer left
                    if result.api_key is not None:
                        batch.stranded.append(result.api_key)
        finally:
            running -= 1
            if running == 0:
                send.close()  # ends the consumer's loop

    async def produce() -> None:
        try:
            await batch.run(workers, worker)
        except Exception as exc:  # reported after the block, not as a task-group failure
            batch.fail(exc)

    error: BaseException | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        try:
            yield receive
        except BaseException as exc:
            error = exc  # re-raised once the task group is closed, so it is not wrapped in a group
        finally:
            batch.stopping = True
            while True:  # results buffered but never taken
                try:
                    result = receive.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
                if result.api_key is not None:
                    batch.stranded.append(result.api_key)
            receive.close()
    with anyio.CancelScope(shield=True):
        await batch.revoke_stranded()  # what the buffer held when the workers had already finished
    if error is not None:
        raise error
    if batch.failure is not None:
        raise batch.failure


async def _run_one(provisioner: Provisioner, index: int, item: object) -> ProvisionResult:
    attempts = Attempts()
    if isinstance(item, str):
        spec = ApiKeySpec(item)
    elif isinstance(item, ApiKeySpec):
        spec = item
    else:
        error = InvalidSpecError(f"spec must be a str or ApiKeySpec, not {type(item).__name__}")
        return ProvisionResult(index, ApiKeySpec(repr(item)[:100]), None, error, 0)
    try:
        key = await provisioner.create(spec, attempts)
    except (ValueError, TypeError) as exc:
        return ProvisionResult(index, spec, None, InvalidSpecError(str(exc)), attempts.count)
    except IllumassError as exc:
        return ProvisionResult(index, spec, None, exc, attempts.count)
    return ProvisionResult(index, spec, key, None, attempts.count)


def _check_specs(specs: object) -> None:
    if isinstance(specs, str | bytes) or not isinstance(specs, Iterable | AsyncIterable):
        raise TypeError("specs must be an iterable (or async iterable) of str or ApiKeySpec")
