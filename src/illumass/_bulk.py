"""Bulk provisioning: many API keys concurrently, each exactly once, none lost."""

from __future__ import annotations

import inspect
import logging
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final

import anyio
import attrs
from anyio.abc import TaskGroup

from ._config import check_count
from ._transport import Attempts
from .errors import IllumassError, InvalidSpecError
from .models import ApiKey, ApiKeySpec, ProvisionResult

__all__ = ["Provisioner", "create_all", "stream"]

log: Final = logging.getLogger("illumass")

SpecLike = str | ApiKeySpec
Specs = Iterable[SpecLike] | AsyncIterable[SpecLike]
Worker = Callable[[int, object, object], Coroutine[Any, Any, None]]


@attrs.frozen
class Provisioner:
    """How to create one key (with its attempt record) and how to revoke one."""

    create: Callable[[ApiKeySpec, Attempts], Awaitable[ApiKey]]
    revoke: Callable[[str], Awaitable[None]]


async def create_all(
    provisioner: Provisioner,
    specs: Specs,
    concurrency: int,
    on_result: Callable[[ProvisionResult], Awaitable[None] | None] | None,
) -> list[ProvisionResult]:
    """Run every spec; return the results in input order.

    If the call is cancelled or ``on_result`` raises, keys created but not yet handed to
    ``on_result`` are revoked before the exception propagates.
    """
    limit = check_count("concurrency", concurrency, minimum=1)
    _check_specs(specs)
    results: list[ProvisionResult | None] = []
    undelivered: dict[int, ApiKey] = {}
    failure: BaseException | None = None  # from on_result; stops the batch

    async def worker(index: int, item: object, slot: object) -> None:
        nonlocal failure
        try:
            with anyio.CancelScope(shield=True):  # a started create always finishes
                result = await _run_one(provisioner, index, item)
            results[index] = result
            if result.api_key is not None:
                undelivered[index] = result.api_key
            if on_result is not None:
                outcome = on_result(result)
                if inspect.isawaitable(outcome):
                    await outcome
                undelivered.pop(index, None)
        except Exception as exc:
            failure = failure or exc
            tg.cancel_scope.cancel()
        finally:
            limiter.release_on_behalf_of(slot)

    limiter = anyio.CapacityLimiter(limit)
    try:
        async with anyio.create_task_group() as tg:
            async for index, item in _enumerate(specs):
                results.append(None)
                await _start(tg, limiter, worker, index, item)
        if failure is not None:
            raise failure
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _revoke_all(provisioner, undelivered.values())
        raise
    return [r for r in results if r is not None]


def stream(
    provisioner: Provisioner, specs: Specs, concurrency: int
) -> AbstractAsyncContextManager[AsyncIterator[ProvisionResult]]:
    """A context manager yielding results in completion order; see ``AsyncAuthAPI.provision``."""
    limit = check_count("concurrency", concurrency, minimum=1)
    _check_specs(specs)
    return _stream(provisioner, specs, limit)


@asynccontextmanager
async def _stream(
    provisioner: Provisioner, specs: Specs, concurrency: int
) -> AsyncIterator[AsyncIterator[ProvisionResult]]:
    send, receive = anyio.create_memory_object_stream[ProvisionResult](concurrency)
    limiter = anyio.CapacityLimiter(concurrency)
    stranded: list[ApiKey] = []  # created, but the consumer left before taking them

    async def worker(index: int, item: object, slot: object) -> None:
        try:
            with anyio.CancelScope(shield=True):  # a started create always finishes
                result = await _run_one(provisioner, index, item)
                try:
                    await send.send(result)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    if result.api_key is not None:
                        stranded.append(result.api_key)
        finally:
            limiter.release_on_behalf_of(slot)

    async def feed() -> None:
        # `send` closes once every worker is done, which ends the consumer's loop.
        async with send, anyio.create_task_group() as tg:
            async for index, item in _enumerate(specs):
                await _start(tg, limiter, worker, index, item)

    error: BaseException | None = None
    async with anyio.create_task_group() as outer:
        outer.start_soon(feed)
        try:
            yield receive
        except BaseException as exc:
            error = exc  # re-raised once the task group is closed, so it is not wrapped in a group
        finally:
            while True:  # results buffered but never taken
                try:
                    result = receive.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
                if result.api_key is not None:
                    stranded.append(result.api_key)
            receive.close()
            outer.cancel_scope.cancel()  # stop starting work; started creates finish (shielded)
    with anyio.CancelScope(shield=True):
        await _revoke_all(provisioner, stranded)
    if error is not None:
        raise error


async def _start(
    tg: TaskGroup, limiter: anyio.CapacityLimiter, worker: Worker, index: int, item: object
) -> None:
    slot = object()
    await limiter.acquire_on_behalf_of(slot)  # read-ahead stops here while all slots are busy
    tg.start_soon(worker, index, item, slot)


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


async def _revoke_all(provisioner: Provisioner, keys: Iterable[ApiKey]) -> None:
    failed: list[str] = []
    for key in list(keys):
        try:
            await provisioner.revoke(key.id)
        except IllumassError as exc:
            log.warning("could not revoke undelivered API key %s: %s", key.id, exc)
            failed.append(key.id)
    if failed:
        raise IllumassError(
            f"{len(failed)} API keys were created but not delivered and could not be revoked; "
            f"delete them: {', '.join(failed)}"
        )


def _check_specs(specs: object) -> None:
    if isinstance(specs, str | bytes) or not isinstance(specs, Iterable | AsyncIterable):
        raise TypeError("specs must be an iterable (or async iterable) of str or ApiKeySpec")


async def _enumerate(specs: Specs) -> AsyncIterator[tuple[int, object]]:
    index = 0
    if isinstance(specs, AsyncIterable):
        async for item in specs:
            yield index, item
            index += 1
    else:
        for item in specs:
            yield index, item
            index += 1
