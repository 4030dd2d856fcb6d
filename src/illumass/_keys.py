"""Exactly-once API keys: one key per call, its token in hand and shared with no other key.

Used by single and bulk creates alike.

- **Ids.** Every create carries an id chosen before its first attempt, so a retry cannot make a
  second key. A retry that meets ``document_already_exists`` means an earlier attempt acted and
  its response (with the token) was lost: the key is revoked and created again under the same id,
  but only when this call owns the id: one it generated and an attempt that may have reached the
  server, one the server confirmed (a 2xx that could not be read), or one whose stored record
  carries this create's description and tagged ``ttl``. A caller's id taken beforehand is left
  alone: a 502 or a dropped connection proves nothing about who made it.
- **Unique tokens.** Kuzzle's API-key JWT holds only the user, ``iat`` (whole seconds) and ``exp``:
  keys of one user created in the same second with the same lifetime get the same token. Keys in
  flight together, or issued in the same second, get distinct whole-second lifetimes here (never
  longer than asked: see :class:`Lifetimes`), and a token equal to one this client delivered is
  revoked and created again.
- **Nothing stranded.** A key that was made but cannot be delivered is revoked.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import time
from collections.abc import Mapping
from typing import Any, Final

import orjson

from . import _jwt
from ._detach import Rest, keep_going
from ._duration import ExpiresIn, expires_in_param, parse_ms
from ._pipeline import Pipeline
from ._request import Request, Trace
from ._wire import structure
from .errors import ConflictError, IllumassError, InvalidResponseError, NotFoundError
from .models import ApiKey

__all__ = ["NEVER", "KeyMaker", "Lifetimes", "key_millis", "new_key_id"]

log: Final = logging.getLogger("illumass")

NEVER: Final = -1.0
DEFAULT_EXPIRES_IN: Final = "1h"
"""Illumass documents a 1 h default; it is sent explicitly because stock Kuzzle defaults to never."""
_SHIFT_SHARE: Final = 10  # a lifetime is shortened by at most a tenth...
_SHIFT_MIN: Final = 60  # ...or a minute, whichever is more (but never below one second)
_PLANS_KEPT: Final = 64  # lifetimes whose plan is remembered
_SECONDS_KEPT: Final = 3  # issued tokens remembered per server second, for the last few seconds


def key_millis(expires_in: ExpiresIn | None) -> float:
    """Milliseconds an API key should live (NEVER: -1), checked as the server would parse them."""
    if expires_in is None:
        return _DEFAULT_MILLIS
    millis = parse_ms(expires_in_param(expires_in, allow_never=True))
    assert millis is not None  # expires_in_param checked it
    return millis


_DEFAULT_MILLIS: Final = key_millis(DEFAULT_EXPIRES_IN)


def new_key_id() -> str:
    """An id for a create, chosen before its first attempt: what makes retrying it safe.

    128 random bits in hex: as unique as a uuid4 string, at a seventh of its cost.
    """
    return os.urandom(16).hex()


class Lifetimes:
    """Whole-second lifetimes that keep this client's API-key tokens distinct.

    Two tokens are equal exactly when their user, ``iat`` and ``exp`` are. Keys in flight together
    get distinct lifetimes whatever second the server stamps them with; a key issued in the
    server's latest known second reserves its lifetime for that second. So a key may be shortened
    by as many seconds as keys are in flight plus created in the same second, and never by more
    than ``max(lifetime / 10, 60 s)`` plus the one second a tag may cost; when every lifetime
    within that bound is taken, creates wait for the server's next second. A twin found anyway
    (another client of the same user) is revoked and created again. Keys that never expire cannot
    be varied: their twins are always re-created.
    """

    def __init__(self) -> None:
        self._in_flight: set[int] = set()  # lifetimes reserved by creates in flight (never shared)
        self._second = 0  # the latest ``iat`` seen
        self._used: set[int] = set()  # lifetimes of keys issued in that second
        self._next_shift: dict[int, int] = {}  # lifetime asked -> where its next scan starts
        self._seen_at = 0.0  # when a key of that second was last seen (monotonic)
        self._issued: dict[int, dict[str, str]] = {}  # iat -> fingerprint -> key id
        self._tag = int.from_bytes(os.urandom(2), "big") % 999
        self._plans: dict[float, tuple[int, int, int]] = {}  # untagged plans, by lifetime asked

    async def reserve(
        self, millis: float, *, tagged: bool = False, scatter: bool = False
    ) -> tuple[int, float]:
        """(seconds reserved, milliseconds to ask for) for a key that should live ``millis``.

        When every lifetime within the bound is taken (hundreds of keys in one second, or a
        second key that never expires), this waits for the server's next second rather than make
        a twin.

        ``tagged`` milliseconds carry a tag (1-999, distinct over this client's last 999 tagged
        creates) that the server stores as the key's ``ttl`` but leaves out of the token: it
        identifies the create that made a key with a caller's id. It may cost one more second.
        """
        seconds, span, tag = self._plan(millis, tagged)
        if scatter and millis == NEVER:  # another process re-creating its twin now: meet later
            await asyncio.sleep(secrets.randbelow(2000) / 1000)
        while True:
            reserved = self._pick(millis, seconds, span, tag, scatter=scatter)
            if reserved is not None:
                return reserved
            await asyncio.sleep(0.05)

    def take(self, millis: float, *, tagged: bool = False) -> tuple[int, float] | None:
        """What :meth:`reserve` returns if it need not wait, else None (and nothing is reserved)."""
        tag = self._tag
        reserved = self._pick(millis, *self._plan(millis, tagged), scatter=False)
        if reserved is None:
            self._tag = tag  # nor is a tag spent
        return reserved

    def _plan(self, millis: float, tagged: bool) -> tuple[int, int, int]:
        """(whole seconds, how many lifetimes to choose from, tag) for a key of ``millis``."""
        if tagged:
            return self._plan_for(millis, tagged=True)
        plan = self._plans.get(millis)
        if plan is None:  # computed once per lifetime: this runs for every create
            if len(self._plans) >= _PLANS_KEPT:
                self._plans.clear()
            plan = self._plans[millis] = self._plan_for(millis, tagged=False)
        return plan

    def _plan_for(self, millis: float, *, tagged: bool) -> tuple[int, int, int]:
        if millis == NEVER:  # one lifetime only: one such key per second
            return -1, 1, 0
        seconds = int(millis // 1000)
        tag = 0
        if tagged:
            tag = self._tag = self._tag % 999 + 1
            if seconds > 1 and millis - seconds * 1000 < tag:
                seconds -= 1
        return seconds, min(seconds - 1, max(seconds // _SHIFT_SHARE, _SHIFT_MIN)) + 1, tag

    def _pick(
        self, millis: float, seconds: int, span: int, tag: int, *, scatter: bool
    ) -> tuple[int, float] | None:
        if time.monotonic() - self._seen_at > 1.0:
            self._forget_second()  # the server's clock has left the second it was last seen in
        # Start past the shifts this second already took: a scan from 0 grew with every key.
        start = secrets.randbelow(span) if scatter else self._next_shift.get(seconds, 0)
        in_flight, used = self._in_flight, self._used
        for shift in range(start, start + span):
            candidate = seconds - shift % span
            if candidate not in in_flight and candidate not in used:
                break
        else:
            return None
        if not scatter:
            self._next_shift[seconds] = (seconds - candidate + 1) % span
        in_flight.add(candidate)
        if millis == NEVER:
            return candidate, NEVER
        if tag:
            return candidate, min(candidate * 1000 + tag, millis)
        return candidate, millis - (seconds - candidate) * 1000

    def _forget_second(self) -> None:
        self._used = set()
        self._next_shift.clear()

    def release(self, seconds: int, key: ApiKey | None) -> bool:
        """Record the outcome of a reservation; True when ``key``'s token is one already issued."""
        self._in_flight.discard(seconds)
        if key is None or key.token is None:
            return False
        claims = _jwt.claims(key.token.get_secret_value()) or {}
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or isinstance(iat, bool):
            return False
        if iat > self._second:
            self._second = iat
            self._forget_second()
            for old in [s for s in self._issued if s <= iat - _SECONDS_KEPT]:
                del self._issued[old]
        if iat == self._second:
            self._used.add(exp - iat if isinstance(exp, int) else -1)
            self._seen_at = time.monotonic()  # still this second (or back in it): keep its lifetimes
        issued = self._issued.get(iat)
        if issued is None:
            issued = self._issued[iat] = {}
        other = issued.setdefault(key.fingerprint, key.id)
        return other != key.id

    def forget(self, key: ApiKey) -> None:
        """A delivered key was revoked: its token may be issued again without harm."""
        for issued in self._issued.values():
            if issued.get(key.fingerprint) == key.id:
                del issued[key.fingerprint]


class KeyMaker:
    """Creates and revokes API keys through the request loop, exactly once."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self.lifetimes = Lifetimes()
        self._background: set[asyncio.Task[Any]] = set()

    async def create(
        self,
        description: str,
        millis: float,
        key_id: str,
        *,
        generated: bool,
        refresh: bool = True,
        trace: Trace,
        scatter: bool = False,
    ) -> ApiKey:
        """One key with a token no other key of this client has; see the module's docstring.

        ``scatter`` picks a random free lifetime within the bound (or, for a key that never
        expires, waits up to 2 s): a key re-created because another client's key has its token is
        unlikely to meet that client's again.

        ``trace.retries_left`` is the budget shared by every request this takes: each retry costs
        one unit, and so does each revoke-and-create-again after the first, so at most
        ``2 * budget + 3`` create and delete requests are sent (plus, if the key cannot be
        delivered, the deletes that revoke it, plus logins).
        """
        body = orjson.dumps({"description": description})
        while True:
            reserved = None if scatter else self.lifetimes.take(millis, tagged=not generated)
            if reserved is None:
                reserved = await self.lifetimes.reserve(millis, tagged=not generated, scatter=scatter)
            seconds, asked = reserved
            key: ApiKey | None = None
            try:
                key = await self._create_once(body, asked, key_id, generated, refresh, trace)
            finally:
                twin = self.lifetimes.release(seconds, key)
            assert key is not None
            if not twin:
                return key
            log.info("API key %s got a token another key already has; creating it again", key_id)
            if not trace.spend():
                await self.discard(key.id)
                raise IllumassError(
                    f"API key {key_id}: the server issued a token another key already has, and the "
                    "retry budget ran out before a distinct one was made; nothing was kept"
                )
            await self.delete(key.id, trace, ours=True)
            if not trace.spend():
                raise IllumassError(f"API key {key_id}: retry budget exhausted while replacing a twin token")

    async def _create_once(
        self, body: bytes, millis: float, key_id: str, generated: bool, refresh: bool, trace: Trace
    ) -> ApiKey:
        params = {"expiresIn": _wire_ms(millis), "_id": key_id}
        if not refresh:
            params["refresh"] = "false"
        request = Request(
            "POST", "/api-keys/_create", params, body, replay_safe=True, retry_server_errors=True
        )
        repaired = False
        while True:
            trace.maybe_reached = trace.proven = False
            try:
                result = await self._pipeline.call(request, trace)
            except ConflictError as exc:
                ours = trace.proven or (generated and trace.maybe_reached)
                if not ours and trace.maybe_reached:
                    ours = await self._on_record(key_id, body, millis)
                if not ours:
                    raise _not_ours(exc, key_id, trace) from None
                log.info("API key %s was created by a lost attempt; revoking it to create it again", key_id)
                if repaired and not trace.spend():
                    await self.discard(key_id)
                    raise IllumassError(
                        f"could not create API key {key_id}: its responses were lost until the "
                        "retry budget ran out; nothing was kept"
                    ) from None
                repaired = True  # the first repair is free: one lost response must not fail a call
                await self.delete(key_id, trace, ours=True)
                continue
            except IllumassError:
                if trace.proven or (generated and trace.maybe_reached):
                    await self.discard(key_id)
                elif trace.maybe_reached and await self._on_record(key_id, body, millis):
                    await self.discard(key_id)  # a caller's id, but the record proves the key ours
                raise
            try:
                return _created_key(result)
            except InvalidResponseError:
                await self.discard(key_id)  # the server made it (a 2xx), but we cannot hand it over
                raise

    async def _on_record(self, key_id: str, body: bytes, millis: float) -> bool:
        """Whether the server's record of ``key_id`` is the one this create asked for.

        Its description and tagged ``ttl`` (see :meth:`Lifetimes.reserve`) must both match: an
        id taken beforehand, by this client or another, does not. A key made with
        ``refresh=false`` becomes searchable within about a second, so an absent record is
        looked for again a few times.
        """
        if millis == NEVER:
            return False  # no tag: a key that never expires cannot be told apart
        request = Request(
            "POST",
            "/api-keys/_search",
            {"from": "0", "size": "1"},
            orjson.dumps({"ids": {"values": [key_id]}}),
            replay_safe=True,
        )
        wanted = orjson.loads(body)["description"]
        for delay in (0.0, 0.5, 1.0, 1.5):
            await asyncio.sleep(delay)
            try:
                result = await self._pipeline.call(request, Trace(retries_left=2))
                hits = result["hits"]
            except (IllumassError, KeyError, TypeError):
                return False
            if hits:
                source = hits[0].get("_source") if isinstance(hits[0], dict) else None
                return (
                    isinstance(source, dict)
                    and source.get("description") == wanted
                    and source.get("ttl") == math.floor(millis)
                )
        return False

    async def delete(self, key_id: str, trace: Trace, *, ours: bool = False) -> None:
        """Revoke a key, visible to searches at once. NotFoundError only if it surely did not exist."""
        trace.maybe_reached = False
        request = Request("DELETE", f"/api-keys/{key_id}", _VISIBLE_NOW, replay_safe=True)
        try:
            await self._pipeline.call(request, trace)
        except NotFoundError:
            if not (ours or trace.maybe_reached):
                raise  # otherwise an earlier attempt deleted it and its response was lost

    async def discard(self, key_id: str) -> None:
        """Best effort: revoke a key of ours that was (or may have been) made but is not delivered."""
        try:
            await self.delete(key_id, Trace(), ours=True)
        except IllumassError as exc:
            log.warning("API key %s may exist without its token; delete it (%s)", key_id, exc)

    async def create_cancel_safe(
        self, description: str, millis: float, key_id: str, *, generated: bool, trace: Trace
    ) -> ApiKey:
        """``create``, safe to cancel: a cancelled caller's create goes on and its key is revoked."""
        # Not asyncio.shield, nor a task: the create runs in the caller's task unless it is
        # cancelled (see _detach), which saves two event-loop iterations per call on 3.11.
        return await keep_going(
            self.create(description, millis, key_id, generated=generated, trace=trace), self._adopt
        )

    def _adopt(self, rest: Rest[ApiKey]) -> None:
        """Carry on the create of a cancelled caller, then revoke its key."""
        task = rest.start()
        self._track(task)
        task.add_done_callback(self._abandoned)
        if rest.owner is not None:  # its attempt in flight keeps its deadline (None: no task)
            self._pipeline.transport.moved(rest.owner, task, resend=not rest.waited)

    def _abandoned(self, task: asyncio.Task[ApiKey]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            self._track(task.get_loop().create_task(self.discard(task.result().id)))
        elif not isinstance(error, IllumassError):  # an IllumassError: nothing is left (see create)
            log.error("a cancelled caller's create failed unexpectedly", exc_info=error)

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for creates abandoned by cancelled callers and the revocations that follow them."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


_VISIBLE_NOW: Final[Mapping[str, str]] = {"refresh": "wait_for"}
"""Deletes are not refreshed by default: a revoked key would stay listed for about a second."""


def _wire_ms(millis: float) -> str:
    return "-1" if millis == NEVER else str(math.floor(millis))


def _created_key(result: Any) -> ApiKey:
    key = structure(result, ApiKey)
    if key.token is None:
        raise InvalidResponseError("the created API key came without its token")
    return key


def _not_ours(exc: ConflictError, key_id: str, trace: Trace) -> ConflictError:
    if not trace.maybe_reached:
        return exc
    message = (
        f"API key id {key_id!r} exists; an attempt of this call may have created it before its "
        "response was lost, or it existed before: it was left untouched (its token, if it is "
        "ours, is lost; delete it if you did not make it)"
    )
    return ConflictError(
        message, status=exc.status, error_id=exc.error_id, code=exc.code, request_id=exc.request_id
    )
