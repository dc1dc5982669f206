"""MemoryTier: a byte-bounded, thread-safe cachetools TLRUCache with per-entry deadlines."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

from cachetools import Cache, TLRUCache

from ._tier import check_entry


class _Entry(NamedTuple):
    data: bytes
    expires_at: float | None
    tags: frozenset[str]


def _entry_size(entry: _Entry) -> int:
    return len(entry.data)


# Reads an entry without moving it to the most-recently-used end (TLRUCache.__getitem__ does).
_peek = Cache.__getitem__


class MemoryTier:
    """Keep up to ``maxsize`` bytes of values in this process, least recently used out first.

    Each entry's deadline lives on the monotonic ``timer``: ``timer() + (expires_at - clock())``
    computed at set time. A wall-clock jump therefore never stretches or shortens a memory
    entry, and an entry promoted from disk keeps exactly its remaining lifetime.
    """

    name = "memory"

    def __init__(
        self,
        maxsize: int = 64 * 2**20,
        *,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        # cachetools is not thread-safe: every call on _cache happens under _lock.
        self._lock = threading.Lock()
        self._cache: TLRUCache[str, _Entry] = TLRUCache(
            maxsize, ttu=self._deadline, timer=timer, getsizeof=_entry_size
        )
        self._closed = False

    @property
    def maxsize(self) -> int:
        """The byte bound on the stored values."""
        return int(self._cache.maxsize)

    def _deadline(self, _key: str, entry: _Entry, now: float) -> float:
        # Called by TLRUCache under _lock, with now = timer().
        if entry.expires_at is None:
            return math.inf
        return now + (entry.expires_at - self._clock())

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the memory tier is closed")

    def _discard(self, key: str) -> bool:
        try:
            del self._cache[key]  # TLRUCache deletes an expired entry, then raises KeyError
        except KeyError:
            return False
        return True

    def get(self, key: str) -> bytes | None:
        """Return the live value stored under ``key``, or None."""
        with self._lock:
            self._check_open()
            try:
                return self._cache[key].data
            except KeyError:
                return None

    def set(
        self, key: str, data: bytes, expires_at: float | None, tags: Sequence[str] = ()
    ) -> None:
        """Store ``data`` until ``expires_at``; a past expiry or an oversized value stores nothing."""
        entry = _Entry(data, expires_at, frozenset(check_entry(data, tags)))
        with self._lock:
            self._check_open()
            expired = expires_at is not None and not self._clock() < expires_at  # NaN too
            if expired or len(data) > self._cache.maxsize:
                # Store nothing (cachetools would raise "value too large" for the latter), and
                # leave no older value behind (cachetools 5.x keeps it on an expired set).
                self._discard(key)
                return
            self._cache[key] = entry

    def delete(self, key: str) -> bool:
        """Remove ``key``; True when a live entry was removed."""
        with self._lock:
            self._check_open()
            return self._discard(key)

    def invalidate(self, tag: str) -> int:
        """Remove every entry carrying ``tag`` (a scan: memory is bounded)."""
        with self._lock:
            self._check_open()
            doomed = [key for key in list(self._cache) if tag in _peek(self._cache, key).tags]
            return sum(self._discard(key) for key in doomed)

    def clear(self) -> int:
        """Remove everything; return how many live entries went."""
        with self._lock:
            self._check_open()
            count = len(self._cache)  # len() expires first, so this counts live entries
            self._cache.clear()
            return count

    def close(self) -> None:
        """Drop every entry; later calls other than close raise RuntimeError."""
        with self._lock:
            self._cache.clear()
            self._closed = True

    def keys(self) -> Iterator[str]:
        """Iterate over a snapshot of the live keys."""
        with self._lock:
            self._check_open()
            return iter(list(self._cache))

    def volume(self) -> int:
        """Bytes of values held."""
        with self._lock:
            return int(self._cache.currsize)

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)
