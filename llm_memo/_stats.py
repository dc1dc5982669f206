"""Thread-safe counters behind Stats."""

from __future__ import annotations

import threading
from types import MappingProxyType

from ._records import Stats

__all__ = ["Counters"]


class Counters:
    """Hits, misses, bypasses, errors and savings, safe to bump from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Start again from zero."""
        with self._lock:
            self._hits = self._misses = self._bypassed = self._errors = self._tokens = 0
            self._cost = self._time = 0.0
            self._tiers: dict[str, int] = {}

    def hit(self, tier: str, latency: float = 0.0, tokens: int = 0, cost: float = 0.0) -> None:
        """Count a hit served by `tier` and what it saved."""
        with self._lock:
            self._hits += 1
            self._tiers[tier] = self._tiers.get(tier, 0) + 1
            self._time += latency
            self._tokens += tokens
            self._cost += cost

    def miss(self) -> None:
        """Count a lookup that found nothing (the function ran)."""
        with self._lock:
            self._misses += 1

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
            return Stats(self._hits, self._misses, self._bypassed, self._errors,
                         MappingProxyType(dict(self._tiers)), self._tokens, self._cost, self._time)
