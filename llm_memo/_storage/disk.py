"""DiskTier: raw bytes in a diskcache (SQLite) directory, with absolute expiry and a tag table."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import diskcache
from diskcache.core import DBNAME, MODE_RAW

from .disk_files import _prepare_directory, _quick_check, create_private
from .disk_format import (
    _COUNT,
    _EXPIRED,
    _HEADER,
    _LIVE,
    _MAGIC,
    _SETTINGS,
    _add_schema,
    _BytesOnlyDisk,
    _execute,
    _expired_rows,
    _live_keys,
    _unpack,
)
from .tier import check_entry

logger = logging.getLogger("llm_memo")



class MisplacedRow(sqlite3.DatabaseError):
    """The row found for a key holds another key: the index is damaged. A miss the engine counts."""


class DiskTier:
    """Persist values in ``directory`` (SQLite via diskcache), safe across threads and processes.

    Construction creates the directory 0700 and the database 0600, sets a corrupt database
    aside (``cache.db.corrupt-<UTC time>-<pid>``, logged on "llm_memo") and starts afresh. It
    raises OSError (PermissionError, NotADirectoryError) when the directory or the database
    cannot be created, sqlite3.OperationalError when an existing one cannot be written.
    Other methods raise RuntimeError once closed, TimeoutError when another connection holds
    the write lock for more than ``timeout`` seconds, and sqlite3.Error/OSError on other
    faults. A database found corrupt in use is set aside (only that call fails); one deleted
    or replaced under us is reopened, so writes never go to an unlinked file.
    """

    name = "disk"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        size_limit: int = 2**30,
        clock: Callable[[], float] = time.time,
        timeout: float = 1.0,
    ) -> None:
        self.directory = os.path.abspath(os.fspath(directory))
        self.size_limit = size_limit
        self._clock = clock
        self._timeout = timeout
        self._made = functools.partial(DiskTier, self.directory, size_limit=size_limit, clock=clock, timeout=timeout)
        self._path = os.path.join(self.directory, DBNAME)
        self._reopening = threading.Lock()
        self._retired: list[diskcache.Cache] = []  # replaced caches: close() ends our connection
        self._closed = False
        self._state = self._open()  # (cache, inode of the file it opened), swapped as one

    def __reduce__(self) -> Any:
        """Pickled as its configuration: the copy opens the same directory with connections of its own."""
        return self._made, ()

    def _open(self, *, checked: bool = False) -> tuple[diskcache.Cache, int]:
        _prepare_directory(self.directory)
        inode = create_private(self._path)
        try:
            return self._connect(checked=checked), inode
        except sqlite3.DatabaseError as exc:
            # Plain DatabaseError is SQLITE_CORRUPT or SQLITE_NOTADB; its subclasses are not.
            if type(exc) is not sqlite3.DatabaseError:
                raise
            self._set_aside(inode, exc)
        inode = create_private(self._path)
        return self._connect(), inode

    def _connect(self, *, checked: bool = False) -> diskcache.Cache:
        _quick_check(self._path, self._timeout, always=checked)
        cache = diskcache.Cache(
            self.directory,
            timeout=self._timeout,  # SQLite busy timeout: a locked database fails fast
            disk=_BytesOnlyDisk,
            size_limit=self.size_limit,
            **_SETTINGS,
        )
        try:
            _add_schema(cache)
        except BaseException:
            cache.close()
            raise
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.chmod(self._path + suffix, 0o600)
        cache.close()  # each thread opens its own connection on first use; close() ends ours
        return cache

    def _set_aside(self, inode: int, reason: Exception) -> None:
        path = self._path
        try:
            if os.stat(path).st_ino != inode:
                return  # another process set it aside already and started afresh
        except FileNotFoundError:
            return
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock()))
        target = f"{path}.corrupt-{stamp}-{os.getpid()}"
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.rename(path + suffix, target + suffix)
        logger.warning(
            "corrupt disk cache %s (%s) moved to %s; starting afresh", path, reason, target
        )

    @contextlib.contextmanager
    def _faults(self) -> Iterator[diskcache.Cache]:
        if self._closed:
            raise RuntimeError("the disk tier is closed")
        cache, inode = self._state
        try:
            moved = os.stat(self._path).st_ino != inode
        except FileNotFoundError:
            moved = True
        if moved:  # deleted or replaced under us: never write into an unlinked file
            cache = self._reopen(cache)
        try:
            yield cache
        except diskcache.Timeout:
            raise self._locked() from None
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc):  # a statement outside transact(): the same outage, the same error
                raise self._locked() from None
            raise
        except sqlite3.DatabaseError as exc:
            if type(exc) is sqlite3.DatabaseError:
                self._reopen(cache)  # quick_check finds the damage and sets it aside
            raise

    def _locked(self) -> TimeoutError:
        return TimeoutError(f"disk cache {self.directory} stayed locked for more than {self._timeout} s")

    def _reopen(self, stale: diskcache.Cache) -> diskcache.Cache:
        with self._reopening:
            if self._state[0] is stale:  # else another thread has reopened already
                stale.close()
                self._retired.append(stale)
                self._state = self._open(checked=True)
            return self._state[0]

    def _live(
        self, cache: diskcache.Cache, where: str = "", params: Sequence[Any] = ()
    ) -> list[str]:
        # Reads headers only.
        rows = _execute(cache, _LIVE + where, (_HEADER.size, MODE_RAW, time.time(), *params)).fetchall()
        return _live_keys(rows, self._clock())

    def _delete(self, cache: diskcache.Cache, key: str) -> bool:
        with cache.transact():
            live = bool(self._live(cache, "AND key = ?", (key,)))
            cache.delete(key)
            _execute(cache, "DELETE FROM llm_memo_tags WHERE key = ?", (key,))
        return live

    def _drop_row(self, cache: diskcache.Cache, rowid: int) -> None:
        with contextlib.suppress(diskcache.Timeout, sqlite3.DatabaseError), cache.transact():
            _execute(cache, "DELETE FROM Cache WHERE rowid = ?", (rowid,))  # its tags follow (trigger)

    def _drop(self, cache: diskcache.Cache, key: str, reason: object) -> None:
        logger.warning("dropping unreadable disk cache entry %s (%s)", key, reason)
        with contextlib.suppress(diskcache.Timeout, sqlite3.OperationalError):
            self._delete(cache, key)  # best effort: the answer is a miss either way

    def get(self, key: str) -> bytes | None:
        """Return the live value stored under ``key``, or None (dropping rows we cannot trust).

        Raises MisplacedRow, having dropped it, when the index led to another key's row.
        """
        with self._faults() as cache:
            # cache.get's own query (its fast path: no statistics, no update on read), then the
            # row itself by rowid: its key column, read from the table and not from the index,
            # differs from the key asked for when a damaged index led to another key's row.
            rowids = _execute(cache, "SELECT rowid FROM Cache WHERE key = ? AND raw = 1"
                                     " AND (expire_time IS NULL OR expire_time > ?)", (key, time.time())).fetchall()
            row = _execute(cache, "SELECT rowid, key, mode, value FROM Cache WHERE rowid = ?",
                           rowids[0]).fetchone() if rowids else None
            if row is None:
                return None
            rowid, found, mode, value = row
            if found != key:
                self._drop_row(cache, rowid)
                raise MisplacedRow(f"the disk index led key {key[:12]}... to the row of another key; "
                                   "that row is dropped (the database is damaged)")
            if mode != MODE_RAW or type(value) is not bytes:  # a pickle, text or file row
                self._drop(cache, key, f"not raw bytes (mode {mode})")
                return None
            entry = _unpack(value)
            if entry is None:
                self._drop(cache, key, "not written by llm_memo")
                return None
            expires_at, payload = entry
            if self._clock() < expires_at:
                return payload
            self._delete(cache, key)  # gone for good: a clock stepping back must not revive it
        return None

    def set(
        self, key: str, data: bytes, expires_at: float | None, tags: Sequence[str] = ()
    ) -> None:
        """Store ``data`` until ``expires_at``; a past expiry or an oversized value stores nothing."""
        tags = check_entry(data, tags)
        now = self._clock()
        deadline = math.inf if expires_at is None else expires_at
        with self._faults() as cache:
            if not now < deadline or len(data) > self.size_limit:
                self._delete(cache, key)  # store nothing, and leave no older value behind
                return
            value = _HEADER.pack(_MAGIC, deadline) + data
            expire = None if math.isinf(deadline) else deadline - now  # lets diskcache cull it
            with cache.transact():
                cache.set(key, value, expire=expire)
                _execute(cache, "DELETE FROM llm_memo_tags WHERE key = ?", (key,))
                for tag in tags:
                    _execute(cache, "INSERT INTO llm_memo_tags VALUES (?, ?)", (tag, key))

    def delete(self, key: str) -> bool:
        """Remove ``key``; True when a live entry was removed."""
        with self._faults() as cache:
            return self._delete(cache, key)

    def lease(self, key: str, token: str, seconds: float) -> bool:
        """Take the computation of ``key`` for ``seconds`` unless a live lease holds it.

        A lease is a row with a deadline on the wall clock, not a lock: a holder killed
        mid-computation never blocks anyone past its deadline.
        """
        now = self._clock()
        with self._faults() as cache, cache.transact():
            _execute(cache, "DELETE FROM llm_memo_leases WHERE key = ? AND until <= ?", (key, now))
            taken = _execute(cache, "INSERT OR IGNORE INTO llm_memo_leases VALUES (?, ?, ?)",
                             (key, token, now + seconds)).rowcount
        return taken == 1

    def holder(self, key: str) -> str | None:
        """The token of the live lease on ``key``, if any."""
        with self._faults() as cache:
            row = _execute(cache, "SELECT token FROM llm_memo_leases WHERE key = ? AND until > ?",
                           (key, self._clock())).fetchone()
        return None if row is None else row[0]

    def swap(self, key: str, old: str, new: str, seconds: float) -> bool:
        """Replace the lease ``old`` holds on ``key`` by ``new`` for ``seconds`` (compare and set);
        swapping a token for itself renews it."""
        with self._faults() as cache:
            return _execute(cache, "UPDATE llm_memo_leases SET token = ?, until = ? WHERE key = ? AND token = ?",
                            (new, self._clock() + seconds, key, old)).rowcount == 1

    def invalidate(self, tag: str) -> int:
        """Remove every entry carrying ``tag`` and the tag rows of those entries."""
        tagged = "SELECT key FROM llm_memo_tags WHERE tag = ?"
        with self._faults() as cache, cache.transact():
            live = self._live(cache, f"AND key IN ({tagged})", (tag,))
            for (key,) in _execute(cache, tagged, (tag,)).fetchall():
                cache.delete(key)
            _execute(cache, f"DELETE FROM llm_memo_tags WHERE key IN ({tagged})", (tag,))
        return len(live)

    def clear(self) -> int:
        """Remove everything, orphaned tag rows included; return how many live entries went."""
        with self._faults() as cache, cache.transact():
            live = self._live(cache)
            cache.clear()
            _execute(cache, "DELETE FROM llm_memo_tags")
        return len(live)

    def close(self) -> None:
        """Close the calling thread's connections; the data stays on disk."""
        if not self._closed:
            self._closed = True
            for cache in (*self._retired, self._state[0]):
                cache.close()

    def keys(self) -> Iterator[str]:
        """Iterate over a snapshot of the live keys (never unpickling foreign keys)."""
        with self._faults() as cache:
            return iter(self._live(cache))

    def expired(self) -> list[tuple[str, bytes]]:
        """(key, data) of the rows that expired but are still stored (until read or culled).

        The complement of what ``get`` serves: past the header's deadline (the tier's clock)
        or past diskcache's own ``expire_time`` (``time.time``).
        """
        with self._faults() as cache:
            rows = _execute(cache, _EXPIRED, (MODE_RAW,)).fetchall()
        return _expired_rows(rows, self._clock())

    def volume(self) -> int:
        """Bytes of the database (diskcache's estimate, what ``size_limit`` bounds)."""
        with self._faults() as cache:
            return int(cache.volume())

    def __len__(self) -> int:
        """Entries whose lifetime has not ended (by diskcache's expire_time, an indexed column:
        counting reads no values), not the expired rows diskcache has yet to cull."""
        with self._faults() as cache:
            return int(_execute(cache, _COUNT, (time.time(),)).fetchone()[0])
