"""Fault injection for FakeIllumass: what to break, on which action, how often."""

from __future__ import annotations

import random
import threading
from typing import Literal

import attrs

__all__ = ["Fault", "FaultKind", "Faults"]

FaultKind = Literal[
    "status",  # answer `status` with a Kuzzle error `error_id` (and `retry_after`); the action does not run
    "status_after",  # run the action, then answer as `status` does (a write done, its answer an error)
    "drop_before",  # close the connection before the action runs
    "drop_after",  # run the action, then close the connection: the response is lost
    "html_502",  # an HTML 502 page from a "gateway"; the action does not run
    "truncated_json",  # run the action, then send half of the JSON
    "bare_json",  # run the action, then send JSON that is not an envelope
    "delay",  # wait `delay` seconds, then behave normally
]

AFTER_ACTION: frozenset[str] = frozenset({"drop_after", "status_after", "truncated_json", "bare_json"})


@attrs.define
class Fault:
    """One fault rule. It fires on the next ``times`` matching requests, or with ``probability``."""

    kind: FaultKind
    action: str = "*"
    times: int | None = None
    probability: float = 0.0
    status: int = 503
    error_id: str = "api.process.overloaded"
    retry_after: str | None = None
    delay: float = 0.0
    fired: int = 0


class Faults:
    """The fault rules of one server. Thread-safe: tests add rules while the server runs."""

    def __init__(self, seed: int | None = None) -> None:
        self._rules: list[Fault] = []
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def add(
        self,
        kind: FaultKind,
        action: str = "*",
        *,
        times: int | None = None,
        probability: float | None = None,
        status: int = 503,
        error_id: str = "api.process.overloaded",
        retry_after: str | None = None,
        delay: float = 0.0,
    ) -> Fault:
        """Add a rule for ``action`` (a Kuzzle action name such as ``createApiKey``, or ``*``).

        Give ``times`` (fire on the next N matching requests) or ``probability`` (each matching
        request, drawn from the server's seeded generator); with neither, it fires once.
        """
        if times is None and probability is None:
            times = 1
        fault = Fault(
            kind,
            action,
            times=times,
            probability=probability or 0.0,
            status=status,
            error_id=error_id,
            retry_after=retry_after,
            delay=delay,
        )
        with self._lock:
            self._rules.append(fault)
        return fault

    def clear(self) -> None:
        """Remove every rule."""
        with self._lock:
            self._rules.clear()

    def draw(self, action: str) -> Fault | None:
        """The rule that fires for this request, if any (counted as fired)."""
        with self._lock:
            for fault in self._rules:
                if fault.action not in ("*", action):
                    continue
                if fault.times is not None:
                    if fault.fired >= fault.times:
                        continue
                elif self._random.random() >= fault.probability:
                    continue
                fault.fired += 1
                return fault
        return None

    def fired(self, kind: FaultKind | None = None) -> int:
        """How many faults (of ``kind``) have fired so far."""
        with self._lock:
            return sum(f.fired for f in self._rules if kind is None or f.kind == kind)
