"""Counters: hits, misses, bypasses, errors and savings, safe to bump from any thread."""

from __future__ import annotations

import threading
from types import MappingProxyType

from .._logic.records import Stats

__all__ = ["Counters"]


class Counters:
    """Hits, misses, bypasses, errors and savings, safe to bump from any thread.

    A hit - the hot path - is one list append, which the GIL makes atomic; hits are added
    up when someone reads the counters (or every few thousand hits), under the lock.
    """

    _FOLD_EVERY = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hit_log: list[tuple[str, float, int, float]] = []
        self.reset()

    def reset(self) -> None:
        """Start again from zero."""
        with self._lock:
            del self._hit_log[:]
            self._hits = self._misses = self._bypassed = self._errors = self._tokens = 0
            self._provider_read = self._provider_written = 0
            self._cost = self._time = 0.0
            self._tiers: dict[str, int] = {}

    def hit(self, tier: str, latency: float = 0.0, tokens: int = 0, cost: float = 0.0) -> None:
        """Count a hit served by `tier` and what it saved."""
        log = self._hit_log
        log.append((tier, latency, tokens, cost))
        if len(log) > self._FOLD_EVERY:
            with self._lock:
                self._fold()

    def _fold(self) -> None:
        """Add the logged hits to the totals (caller holds the lock)."""
        log = self._hit_log
        n = len(log)
        tiers = self._tiers
        for tier, latency, tokens, cost in log[:n]:
            tiers[tier] = tiers.get(tier, 0) + 1
            self._time += latency
            self._tokens += tokens
            self._cost += cost
        self._hits += n
        del log[:n]  # hits appended meanwhile sit past n and stay for the next fold

    def miss(self, provider_read: int = 0, provider_written: int = 0) -> None:
        """Count a lookup that found nothing (the function ran), and the prompt tokens the
        provider's own cache read and wrote for that call."""
        with self._lock:
            self._misses += 1
            self._provider_read += provider_read
            self._provider_written += provider_written

    def bypass(self) -> None:
        """Count a call deliberately not cached (non-deterministic, or a policy that stores nothing)."""
        with self._lock:
            self._bypassed += 1

    def error(self) -> None:
        """Count an infrastructure fault or a bad entry that fell through."""
        with self._lock:
            self._errors += 1

    def snapshot(self) -> Stats:
        """The counters now, as an immutable Stats."""
        with self._lock:
            self._fold()
            return Stats(self._hits, self._misses, self._bypassed, self._errors,
                         MappingProxyType(dict(self._tiers)), self._tokens, self._cost, self._time,
                         self._provider_read, self._provider_written)
