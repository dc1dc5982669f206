"""MemoryTier: a byte-bounded, thread-safe cachetools TLRUCache with per-entry deadlines."""

from __future__ import annotations

import functools
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

from cachetools import Cache, TLRUCache

from .tier import check_entry


class _Entry(NamedTuple):
    data: bytes
    expires_at: float | None
    tags: frozenset[str] | None  # None: read them from the data when an invalidation asks


def _no_tags(_data: bytes) -> Iterable[str]:
    return ()


def _entry_size(entry: _Entry) -> int:
    return len(entry.data)


# Reads an entry without moving it to the most-recently-used end (TLRUCache.__getitem__ does).
_peek = Cache.__getitem__

# Fork safety: a lock another thread held at fork time would stay held in the child forever, and
# the entries it guarded may be half-updated there. A forked child therefore starts every memory
# tier afresh, with a new lock and no entries (the disk and Redis tiers still hold them). Nothing is
# taken in the parent, so forking can never wait on a lock, whoever holds it.
_alive: weakref.WeakSet[MemoryTier] = weakref.WeakSet()


def _start_afresh_in_child() -> None:
    for tier in list(_alive):  # the child has one thread: nothing changes the set meanwhile
        tier._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_start_afresh_in_child)


class MemoryTier:
    """Keep up to ``maxsize`` bytes of values in this process, least recently used out first.

    Each entry's deadline lives on the monotonic ``timer``: ``timer() + (expires_at - clock())``
    computed at set time. A wall-clock jump therefore never stretches or shortens a memory
    entry, and an entry promoted from disk keeps exactly its remaining lifetime.

    ``set(..., tags=None)`` stores an entry whose tags ``tags_of(data)`` reads from the data
    itself, and only when an invalidation needs them: a promotion then skips parsing them.
    """

    name = "memory"

    def __init__(
        self,
        maxsize: int = 64 * 2**20,
        *,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
        tags_of: Callable[[bytes], Iterable[str]] = _no_tags,
    ) -> None:
        self._clock = clock
        self._tags_of = tags_of
        self._maxsize, self._timer = maxsize, timer
        self._made = functools.partial(MemoryTier, maxsize, clock=clock, timer=timer, tags_of=tags_of)
        self._reset()
        self._closed = False
        _alive.add(self)

    def _reset(self) -> None:
        # cachetools is not thread-safe: every call on _cache happens under _lock.
        self._lock = threading.Lock()
        self._cache: TLRUCache[str, _Entry] = TLRUCache(
            self._maxsize, ttu=self._deadline, timer=self._timer, getsizeof=_entry_size
        )

    def __reduce__(self) -> Any:
        """Pickled as its configuration: the copy starts empty (entries stay in this process)."""
        return self._made, ()

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
        self, key: str, data: bytes, expires_at: float | None, tags: Sequence[str] | None = ()
    ) -> None:
        """Store ``data`` until ``expires_at``; a past expiry or an oversized value stores nothing."""
        checked = check_entry(data, () if tags is None else tags)
        entry = _Entry(data, expires_at, None if tags is None else frozenset(checked))
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
            doomed = [key for key in list(self._cache) if tag in self._tags(_peek(self._cache, key))]
            return sum(self._discard(key) for key in doomed)

    def _tags(self, entry: _Entry) -> Iterable[str]:
        if entry.tags is not None:
            return entry.tags
        try:
            return tuple(self._tags_of(entry.data))
        except Exception:  # unreadable data carries no tag; a read of it is the codec's to count
            return ()

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
