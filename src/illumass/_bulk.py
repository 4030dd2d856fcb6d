"""Bulk provisioning: many API keys concurrently, each exactly once, usable, none lost.

``workers`` tasks pull specs one at a time from the caller's (async) iterable, so at most that many
creates are in flight, and specs are read ahead by at most that many plus the keys awaiting
visibility (at most ``_MAX_PENDING``). Creates skip the server's refresh wait
(``refresh=false``, which would cap throughput at about ``workers`` keys per second); instead a
visibility barrier searches for the new keys until the index shows them, which is when the server
starts accepting them, and the same search reveals keys of other processes that got the same
token: a key is delivered only if the index shows no other key with its token, and created again
otherwise (of two such keys, the later indexed meets the earlier, so they never both stay).
Workers and the barrier run shielded: a create that has started always finishes, so when the batch
must stop (cancellation, the consumer leaving, a failing callback) every key created but not
delivered is revoked.

Kuzzle 2.34+ verifies an API key among its user's first 10 keys only. The user's keys are counted
before the batch; once a key lands past the 10th, it is checked (``_checkToken``) before delivery.
If the server refuses it, that key and every later one is revoked and reported as
ApiKeyRejectedError, with one warning that says what to do, and no further key is created.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final, Protocol

import anyio
import attrs

from . import _args, _jwt
from ._keys import KeyMaker, key_millis, new_key_id
from ._request import Trace
from ._secret import Secret
from .errors import ApiKeyRejectedError, IllumassError, InvalidSpecError
from .models import ApiKey, ApiKeyPage, ApiKeySpec, DeleteResult, ProvisionResult, TokenInfo

__all__ = ["Batch", "create_all", "delete_all", "stream"]

log: Final = logging.getLogger("illumass")

SpecLike = str | ApiKeySpec
Specs = Iterable[SpecLike] | AsyncIterable[SpecLike]
_DONE: Final = object()
_CAP: Final = 10  # keys per user that Kuzzle >= 2.34 verifies
_POLL: Final = 0.2  # seconds between visibility searches
_GIVE_UP: Final = 15.0  # seconds after which an invisible key is checked directly
_AHEAD: Final = 8  # rounds of creates (of ``workers`` each) made before the cap's verdict
_REPLACEMENTS: Final = 10  # re-creations of one key whose token another client's key also has
_MAX_PENDING: Final = 2_000  # keys awaiting visibility before workers wait (bounds read-ahead)
_CLAUSES: Final = 500  # expiry ranges per search (Elasticsearch allows 1,024 clauses)
_WINDOW: Final = 10_000  # Elasticsearch's most hits per search; keys past it are checked directly
_CAP_ADVICE: Final = (
    "the server verifies only a user's first {cap} API keys (Kuzzle 2.34 and later) and never purges "
    "expired ones, so this key would be refused; it was revoked. Prune expired keys "
    "(prune_api_keys / `illumass api-keys prune`), delete unused ones, or ask the operator to "
    "lift the cap"
)


class Api(Protocol):
    """The searches and checks a batch needs from the client."""

    async def _search(self, query: Mapping[str, Any], start: int, size: int) -> ApiKeyPage: ...

    async def check_token(self, token: str | Secret | None = None) -> TokenInfo: ...


@attrs.define(eq=False)
class _Made:
    """A key created but not yet delivered."""

    index: int
    spec: ApiKeySpec
    key: ApiKey
    trace: Trace
    position: int  # among the user's keys, in creation order
    since: float  # monotonic time of creation
    millis: float
    generated: bool
    replaced: int = 0  # times re-created because another key had its token


class Batch:
    """The shared state of one bulk run."""

    def __init__(
        self,
        keys: KeyMaker,
        api: Api,
        specs: Specs,
        *,
        default_millis: float,
        workers: int,
        max_retries: int,
    ) -> None:
        self.keys = keys
        self.api = api
        self.workers = workers
        self.max_retries = max_retries
        self.default_millis = default_millis
        self.stopping = False
        self.failure: BaseException | None = None
        self.stranded: list[ApiKey] = []  # created, never delivered: revoked at the end
        self.deliver: Callable[[ProvisionResult], Awaitable[None]] | None = None
        self._pending: dict[str, _Made] = {}
        self._replacing: set[str] = set()  # ids being revoked and created again
        self._room = anyio.Event()
        self._arrived = anyio.Event()
        self._workers_left = workers
        self._existing = 0
        self._created = 0
        self._creating = 0
        self._changed = anyio.Event()  # set when a create ends or the cap's verdict is known
        self._tg: anyio.abc.TaskGroup | None = None
        self._accepted: bool | None = None  # does the server accept keys past the cap?
        self._next_index = 0
        if isinstance(specs, AsyncIterable):
            self._aiter: AsyncIterator[SpecLike] | None = aiter(specs)
            self._lock = anyio.Lock()  # an async iterator must not be advanced concurrently
        else:
            self._aiter = None
            self._iter = iter(specs)

    # -- running -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Workers and the barrier, shielded; an outside cancellation only stops the pulls."""
        finished = False

        async def on_cancel() -> None:
            try:
                await anyio.sleep_forever()
            finally:
                self.stopping |= not finished

        async with anyio.create_task_group() as watcher:
            watcher.start_soon(on_cancel)
            with anyio.CancelScope(shield=True):
                try:
                    self._existing = len((await self.api._search({}, 0, _CAP)).hits)
                except IllumassError as exc:
                    self.fail(exc)
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    tg.start_soon(self._barrier, tg)
                    for _ in range(self.workers):
                        tg.start_soon(self._worker)
                self.stranded.extend(made.key for made in self._pending.values())
                self._pending.clear()
                await self.revoke_stranded()
            finished = True
            watcher.cancel_scope.cancel()
        if self.failure is not None:
            raise self.failure

    def fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        self.stopping = True

    async def _pull(self) -> tuple[int, object] | None:
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

    async def _worker(self) -> None:
        try:
            while (pulled := await self._pull()) is not None:
                while len(self._pending) >= _MAX_PENDING and not self.stopping:
                    await self._room.wait()  # one event for every waiting worker: see _make_room
                made = await self._make(*pulled)
                if made is not None:
                    self._pending[made.key.id] = made
                    self._arrived.set()
        finally:
            self._workers_left -= 1
            self._arrived.set()

    async def _make(self, index: int, item: object) -> _Made | None:
        """Create the key of one spec; deliver its failure at once."""
        if isinstance(item, str):
            spec = ApiKeySpec(item)
        elif isinstance(item, ApiKeySpec):
            spec = item
        else:
            error = InvalidSpecError(f"spec must be a str or ApiKeySpec, not {type(item).__name__}")
            await self._deliver(ProvisionResult(index, ApiKeySpec(repr(item)[:100]), None, error, 0))
            return None
        try:
            millis = self.default_millis if spec.expires_in is None else key_millis(spec.expires_in)
            description = _args.description(spec.description)
            key_id = new_key_id() if spec.key_id is None else _args.key_id(spec.key_id)
        except (ValueError, TypeError) as exc:
            await self._deliver(ProvisionResult(index, spec, None, InvalidSpecError(str(exc)), 0))
            return None
        await self._await_verdict()
        if self._accepted is False:
            await self._deliver(ProvisionResult(index, spec, None, _rejected(), 0))
            return None
        trace = Trace(retries_left=self.max_retries)
        self._creating += 1
        try:
            key = await self.keys.create(
                description, millis, key_id, generated=spec.key_id is None, refresh=False, trace=trace
            )
        except IllumassError as exc:
            await self._deliver(ProvisionResult(index, spec, None, exc, trace.attempts))
            return None
        finally:
            self._creating -= 1
            self._signal()
        position = self._existing + self._created
        self._created += 1
        return _Made(index, spec, key, trace, position, time.monotonic(), millis, spec.key_id is None)

    async def _await_verdict(self) -> None:
        """Until the server's cap is known, create at most a few rounds of keys past the ones
        that decide it: on a capped server, few keys are made only to be revoked."""
        while (
            self._accepted is None
            and not self.stopping
            and self._existing + self._created + self._creating > _CAP + _AHEAD * self.workers
        ):
            changed = self._changed
            with anyio.move_on_after(_POLL):
                await changed.wait()

    def _signal(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    # -- the visibility barrier ----------------------------------------------------------------

    async def _barrier(self, tg: anyio.abc.TaskGroup) -> None:
        try:
            await self._confirm(tg)
        finally:
            self._make_room()  # a stopping batch must not leave workers waiting

    def _make_room(self) -> None:
        room, self._room = self._room, anyio.Event()
        room.set()

    async def _confirm(self, tg: anyio.abc.TaskGroup) -> None:
        while True:
            if not self._pending:
                if (self._workers_left == 0 and not self._replacing) or self.stopping:
                    return
                self._arrived = anyio.Event()
                await self._arrived.wait()
                continue
            await anyio.sleep(_POLL)
            if self.stopping:
                return
            batch = list(self._pending.values())
            try:
                hits = await self._search_expiries(batch)
            except IllumassError as exc:
                log.warning("could not confirm new API keys (%s); retrying", exc)
                continue
            # A key whose token the index shows on another key is created again, even if that
            # one is being replaced too: of two such keys, the later indexed always meets the
            # earlier, so every process of the user can decide alone and they never both stay.
            sharing = Counter(hit.fingerprint for hit in hits if hit.id not in self._replacing)
            visible = {hit.id for hit in hits}
            now = time.monotonic()
            # A key that can tell whether the server caps keys per user goes first: once it says
            # no, the keys near the cap need no check of their own.
            batch.sort(key=lambda made: (not self._decides(made, visible), made.index))
            for made in batch:
                if made.key.id in visible:
                    if sharing[made.key.fingerprint] > 1:
                        del self._pending[made.key.id]
                        self._replacing.add(made.key.id)
                        tg.start_soon(self._replace, made)
                        continue
                elif now - made.since < _GIVE_UP:
                    continue
                await self._settle(made, visible=made.key.id in visible)
            self._make_room()

    def _decides(self, made: _Made, visible: set[str]) -> bool:
        return self._accepted is None and made.position >= _CAP + self.workers and made.key.id in visible

    async def _settle(self, made: _Made, *, visible: bool) -> None:
        """Deliver a key once the server is known to accept it; revoke it if it does not.

        Keys land among the user's keys in about the order their creates finish, give or take
        the creates in flight: keys that close to the cap are checked one by one, and the first
        key clearly past it decides for the rest of the batch.
        """
        margin = self.workers
        past_cap = made.position >= _CAP + margin
        near_cap = not past_cap and made.position >= _CAP - margin
        if past_cap and self._accepted is False:
            del self._pending[made.key.id]
            self._refuse_soon(made, _rejected())
            return
        if not visible or (past_cap and self._accepted is None) or (near_cap and self._accepted is not True):
            assert made.key.token is not None
            try:
                info = await self.api.check_token(made.key.token)
            except IllumassError as exc:
                log.warning("could not check new API key %s (%s); retrying", made.key.id, exc)
                return
            if past_cap and self._accepted is None:
                self._accepted = info.valid
                self._signal()
                if not info.valid:
                    log.warning("API keys refused: %s", _CAP_ADVICE.format(cap=_CAP))
            if not info.valid:
                del self._pending[made.key.id]
                error = (
                    _rejected()
                    if made.position >= _CAP - margin
                    else ApiKeyRejectedError(
                        f"the server does not accept the new key ({info.state or 'invalid'}); it was revoked"
                    )
                )
                self._refuse_soon(made, error)
                return
        del self._pending[made.key.id]
        await self._deliver(ProvisionResult(made.index, made.spec, made.key, None, made.trace.attempts))

    def _refuse_soon(self, made: _Made, error: ApiKeyRejectedError) -> None:
        assert self._tg is not None
        self._tg.start_soon(self._refuse, made, error)  # revoked concurrently, not one by one

    async def _refuse(self, made: _Made, error: ApiKeyRejectedError) -> None:
        await self.keys.discard(made.key.id)
        await self._deliver(ProvisionResult(made.index, made.spec, None, error, made.trace.attempts))

    async def _replace(self, made: _Made) -> None:
        """Revoke a key whose token another key has, and create it again under the same id."""
        log.info("API key %s shares its token with another key; creating it again", made.key.id)
        try:
            await self._replace_now(made)
        finally:
            self._replacing.discard(made.key.id)
            self._arrived.set()

    async def _replace_now(self, made: _Made) -> None:
        trace = made.trace
        try:
            if made.replaced >= _REPLACEMENTS:
                raise IllumassError(
                    f"the server issued a token another key already has {_REPLACEMENTS + 1} times"
                )
            await self.keys.delete(made.key.id, trace, ours=True)
            self.keys.lifetimes.forget(made.key)
            key = await self.keys.create(
                made.key.description,
                made.millis,
                made.key.id,
                generated=made.generated,
                refresh=False,
                trace=trace,
                scatter=True,
            )
        except IllumassError as exc:
            await self.keys.discard(made.key.id)
            await self._deliver(ProvisionResult(made.index, made.spec, None, exc, trace.attempts))
            return
        self._pending[key.id] = attrs.evolve(
            made, key=key, since=time.monotonic(), replaced=made.replaced + 1
        )

    async def _search_expiries(self, batch: list[_Made]) -> list[ApiKey]:
        """The keys whose ``expiresAt`` matches the token expiry of a key in ``batch``: the keys
        themselves, once visible, and any key that shares one of their tokens."""
        expiries = {_exp(made.key) for made in batch}
        ranges: list[dict[str, Any]] = [{"term": {"expiresAt": -1}}] if None in expiries else []
        for second in sorted(e for e in expiries if e is not None):
            low, high = second * 1000, second * 1000 + 2000  # expiresAt is within 2 s after exp
            last = ranges[-1].get("range", {}).get("expiresAt") if ranges else None
            if last is not None and low <= last["lte"]:
                last["lte"] = high
            else:
                ranges.append({"range": {"expiresAt": {"gte": low, "lte": high}}})
        hits: list[ApiKey] = []
        for start in range(0, len(ranges), _CLAUSES):
            query = {"bool": {"should": ranges[start : start + _CLAUSES], "minimum_should_match": 1}}
            hits.extend((await self.api._search(query, 0, _WINDOW)).hits)
        return hits

    # -- delivery and clean-up -----------------------------------------------------------------

    async def _deliver(self, result: ProvisionResult) -> None:
        assert self.deliver is not None
        if self.stopping and result.api_key is not None:
            self.stranded.append(result.api_key)
            return
        await self.deliver(result)

    async def revoke_stranded(self) -> None:
        failed: list[str] = []
        stranded = iter(self.stranded)

        async def revoke() -> None:
            for key in stranded:
                try:
                    await self.keys.delete(key.id, Trace(), ours=True)
                except IllumassError as exc:
                    log.warning("could not revoke undelivered API key %s: %s", key.id, exc)
                    failed.append(key.id)

        async with anyio.create_task_group() as tg:
            for _ in range(min(self.workers, len(self.stranded))):
                tg.start_soon(revoke)
        self.stranded.clear()
        if failed:
            self.fail(
                IllumassError(
                    f"{len(failed)} API keys were created but not delivered and could not be revoked; "
                    f"delete them: {', '.join(failed)}"
                )
            )


async def create_all(
    batch: Batch, on_result: Callable[[ProvisionResult], Awaitable[None] | None] | None
) -> list[ProvisionResult]:
    """Run every spec; return the results in input order.

    If the call is cancelled or ``on_result`` raises, the keys not yet handed to ``on_result``
    (all of them, without a callback) are revoked before the exception propagates.
    """
    results: list[ProvisionResult | None] = []

    async def deliver(result: ProvisionResult) -> None:
        if result.index >= len(results):
            results.extend([None] * (result.index + 1 - len(results)))
        results[result.index] = result
        if on_result is None:
            return
        try:
            outcome = on_result(result)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception as exc:
            batch.fail(exc)
            if result.api_key is not None:
                batch.stranded.append(result.api_key)

    batch.deliver = deliver
    try:
        await batch.run()
        if batch.stopping:
            await anyio.lowlevel.checkpoint()  # stopped by a cancellation: let it raise here
    except BaseException:
        if on_result is None:  # revoke everything the caller will never see
            batch.stranded = [r.api_key for r in results if r is not None and r.api_key is not None]
            with anyio.CancelScope(shield=True):
                await batch.revoke_stranded()
        raise
    return [r for r in results if r is not None]


def stream(batch: Batch) -> AbstractAsyncContextManager[AsyncIterator[ProvisionResult]]:
    """A context manager yielding results in completion order; see ``AsyncAuthAPI.provision``."""
    return _stream(batch)


@asynccontextmanager
async def _stream(batch: Batch) -> AsyncIterator[AsyncIterator[ProvisionResult]]:
    send, receive = anyio.create_memory_object_stream[ProvisionResult](batch.workers)

    async def deliver(result: ProvisionResult) -> None:
        try:
            await send.send(result)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            batch.stopping = True  # the consumer left
            if result.api_key is not None:
                batch.stranded.append(result.api_key)

    batch.deliver = deliver

    async def produce() -> None:
        try:
            await batch.run()
        except Exception as exc:  # reported after the block, not as a task-group failure
            batch.fail(exc)
        finally:
            send.close()  # ends the consumer's loop

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


async def delete_all(keys: KeyMaker, key_ids: list[str], workers: int) -> list[DeleteResult]:
    """Revoke every id with ``workers`` concurrent deletes; results in input order."""
    results: list[DeleteResult | None] = [None] * len(key_ids)
    queue = iter(enumerate(key_ids))

    async def worker() -> None:
        for index, key_id in queue:
            try:
                await keys.delete(key_id, Trace())
            except IllumassError as exc:
                results[index] = DeleteResult(key_id, exc)
            else:
                results[index] = DeleteResult(key_id)

    async with anyio.create_task_group() as tg:
        for _ in range(min(workers, len(key_ids))):
            tg.start_soon(worker)
    return [r for r in results if r is not None]


def _rejected() -> ApiKeyRejectedError:
    return ApiKeyRejectedError(_CAP_ADVICE.format(cap=_CAP))


def _exp(key: ApiKey) -> int | None:
    assert key.token is not None
    exp = (_jwt.claims(key.token.get_secret_value()) or {}).get("exp")
    return exp if isinstance(exp, int) and not isinstance(exp, bool) else None
