"""DiskTier: raw bytes in a diskcache (SQLite) directory, with absolute expiry and a tag table."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import stat
import struct
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import diskcache
from diskcache.core import DBNAME, MODE_RAW, UNKNOWN

from .tier import check_entry

logger = logging.getLogger("llm_memo")

# Every value starts with a magic and the absolute expires_at on the tier's clock (inf = never):
# the injected clock rules expiry (diskcache's expire_time uses time.time), and a row we did not
# write is dropped, never returned. The payload's checksum is the codec's (its envelope has one),
# so a damaged payload reaches the engine, which counts it.
_HEADER = struct.Struct("!4sd")
_MAGIC = b"LMD1"

# least-recently-stored: no write on read. disk_min_file_size: values inline, no per-entry files.
_SETTINGS: dict[str, Any] = dict(
    eviction_policy="least-recently-stored", statistics=0, tag_index=0, disk_min_file_size=2**62,
    sqlite_journal_size_limit=8 * 2**20,  # a checkpoint truncates the WAL back to 8 MiB: disk stays bounded
)
_TAG_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS llm_memo_tags"
    " (tag TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (tag, key)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS llm_memo_tags_key ON llm_memo_tags (key)",
    "CREATE TABLE IF NOT EXISTS llm_memo_leases"
    " (key TEXT PRIMARY KEY, token TEXT NOT NULL, until REAL NOT NULL) WITHOUT ROWID",
)
# diskcache deletes rows on its own (culling past size_limit, expiry): their tag rows go with them.
_TAG_TRIGGER = (
    "CREATE TRIGGER llm_memo_tags_follow AFTER DELETE ON Cache"
    " BEGIN DELETE FROM llm_memo_tags WHERE key = OLD.key; END"
)
_ORPHAN_TAGS = "DELETE FROM llm_memo_tags WHERE key NOT IN (SELECT key FROM Cache WHERE raw = 1)"
# Reads, shared with _disk_read.ReadOnlyDiskTier. The expire_time test is diskcache's own (time.time), as
# in cache.get, so a listed key is one that get() can return.
_ROWS = "FROM Cache WHERE raw = 1 AND mode = ? AND typeof(key) = 'text' AND typeof(value) = 'blob'"
_LIVE = f"SELECT key, substr(value, 1, ?) {_ROWS} AND (expire_time IS NULL OR expire_time > ?) "
_EXPIRED = f"SELECT key, value, expire_time {_ROWS}"
_COUNT = "SELECT COUNT(*) FROM Cache WHERE expire_time IS NULL OR expire_time > ?"
_warned_directories: set[str] = set()


class MisplacedRow(sqlite3.DatabaseError):
    """The row found for a key holds another key: the index is damaged. A miss the engine counts."""


_OPEN_PATIENCE = 60.0  # seconds an open waits for the write lock, as diskcache's own setup does


def _add_schema(cache: diskcache.Cache) -> None:
    """Create our tables and trigger in one transaction, so processes opening a cache at once take
    turns. Patient: a failed open costs the process its disk tier, a failed call one miss."""
    deadline = time.monotonic() + _OPEN_PATIENCE
    while True:
        try:
            with cache.transact():
                for statement in _TAG_SCHEMA:
                    _execute(cache, statement)
                if not _execute(cache, "SELECT 1 FROM sqlite_master WHERE type = 'trigger'"
                                       " AND name = 'llm_memo_tags_follow'").fetchone():
                    _execute(cache, _ORPHAN_TAGS)  # once per database: earlier versions left culled keys' tags
                    _execute(cache, _TAG_TRIGGER)
            return
        except diskcache.Timeout:
            if time.monotonic() > deadline:
                raise


class _BytesOnlyDisk(diskcache.Disk):
    """Store str keys and bytes values inline, and refuse to unpickle anything, ever."""

    def put(self, key: Any) -> tuple[Any, bool]:
        if type(key) is not str:
            raise TypeError(f"disk tier keys are str, not {type(key).__name__}")
        return key, True

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise ValueError("refusing to unpickle a cache key")
        return key

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> tuple[Any, ...]:
        if read or type(value) is not bytes:
            raise TypeError(f"disk tier values are bytes, not {type(value).__name__}")
        return 0, MODE_RAW, None, sqlite3.Binary(value)

    def fetch(self, mode: int, filename: Any, value: Any, read: bool) -> bytes:
        if mode != MODE_RAW or read or type(value) is not bytes:
            raise ValueError(f"refusing a row that is not raw bytes (mode {mode})")
        return value


def _execute(cache: diskcache.Cache, statement: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
    # diskcache has no public way to run SQL. Cache._sql is the calling thread's connection
    # (reopened after a fork by diskcache's pid check), the one cache.transact() holds the
    # write lock on, so the tag rows commit or roll back with the value. Private but
    # unchanged since diskcache 3 (2018); keep every use of it behind this function.
    return cache._sql(statement, params)


def _unpack(value: bytes) -> tuple[float, bytes] | None:
    """Split a stored value into (expires_at, payload); None when we did not write it."""
    if len(value) >= _HEADER.size:
        magic, expires_at = _HEADER.unpack_from(value)
        if magic == _MAGIC:
            return expires_at, value[_HEADER.size :]
    return None


def _make_directories(directory: str) -> None:
    """os.makedirs, except that every directory it creates, parents too, is 0700 (as XDG asks)."""
    parent = os.path.dirname(directory)
    if parent and parent != directory and not os.path.isdir(parent):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            _make_directories(parent)
    os.mkdir(directory, 0o700)


def _live_keys(rows: list[Any], now: float) -> list[str]:
    """The keys of (key, header bytes) rows whose header we wrote and whose deadline is after `now`."""
    heads = [(key, _HEADER.unpack(head)) for key, head in rows if len(head) == _HEADER.size]
    return [key for key, (magic, expires_at) in heads if magic == _MAGIC and now < expires_at]


def _expired_rows(rows: list[Any], now: float) -> list[tuple[str, bytes]]:
    """(key, data) of the (key, value, expire_time) rows past our deadline or diskcache's."""
    wall, out = time.time(), []
    for key, value, expire_time in rows:
        entry = _unpack(bytes(value))
        if entry is not None and (not now < entry[0] or (expire_time is not None and expire_time <= wall)):
            out.append((key, entry[1]))
    return out


def _prepare_directory(directory: str) -> None:
    try:
        _make_directories(directory)
    except FileExistsError:
        if not os.path.isdir(directory):
            raise NotADirectoryError(f"cache directory {directory!r} is not a directory") from None
        real = os.path.realpath(directory)
        shared = os.stat(directory).st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if shared and real not in _warned_directories:
            _warned_directories.add(real)
            warnings.warn(
                f"cache directory {directory!r} is writable by other users, who could plant "
                f"or alter entries; run `chmod 700 {directory}` or choose a private directory",
                UserWarning,
                stacklevel=4,  # the DiskTier(...) call
            )
    else:
        os.chmod(directory, 0o700)  # the umask may have taken more than group/other bits


def create_private(path: str) -> int:
    """Create ``path`` 0600 if missing (SQLite gives -wal and -shm its mode); return its inode."""
    os.close(os.open(path, os.O_CREAT | os.O_RDWR | getattr(os, "O_NOFOLLOW", 0), 0o600))
    return os.stat(path).st_ino


_CHECK_AT_OPEN_LIMIT = 32 * 2**20  # bytes: databases up to this size are checked at every open


def _quick_check(path: str, timeout: float, *, always: bool = False) -> None:
    """Raise sqlite3.DatabaseError when the file at ``path`` is not a sound SQLite database.

    The check reads the whole file (about 0.1 s per 100 MB), so a large database is checked
    only after it failed in use (``always``); opening one must not delay every process start.
    """
    if not always and os.path.getsize(path) > _CHECK_AT_OPEN_LIMIT:
        return
    con = sqlite3.connect(path, timeout=timeout)
    try:
        rows = con.execute("PRAGMA quick_check").fetchall()
    finally:
        con.close()
    if rows != [("ok",)]:
        raise sqlite3.DatabaseError(f"quick_check failed: {rows[0][0]}")


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
        self._path = os.path.join(self.directory, DBNAME)
        self._reopening = threading.Lock()
        self._retired: list[diskcache.Cache] = []  # replaced caches: close() ends our connection
        self._closed = False
        self._state = self._open()  # (cache, inode of the file it opened), swapped as one

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

    def release(self, key: str, token: str) -> None:
        """Give up the lease on ``key`` if ``token`` still holds it."""
        with self._faults() as cache:
            _execute(cache, "DELETE FROM llm_memo_leases WHERE key = ? AND token = ?", (key, token))

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
