"""The disk tier's format in its diskcache (SQLite) database: the row header, our tables and their
upgrade, the queries the read-write and the read-only tiers share, and the bytes-only Disk."""

from __future__ import annotations

import sqlite3
import struct
import time
from collections.abc import Sequence
from typing import Any

import diskcache
from diskcache.core import MODE_RAW, UNKNOWN

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
# Reads, shared with disk_read.ReadOnlyDiskTier. The expire_time test is diskcache's own (time.time), as
# in cache.get, so a listed key is one that get() can return.
_ROWS = "FROM Cache WHERE raw = 1 AND mode = ? AND typeof(key) = 'text' AND typeof(value) = 'blob'"
_LIVE = f"SELECT key, substr(value, 1, ?) {_ROWS} AND (expire_time IS NULL OR expire_time > ?) "
_EXPIRED = f"SELECT key, value, expire_time {_ROWS}"
_COUNT = "SELECT COUNT(*) FROM Cache WHERE expire_time IS NULL OR expire_time > ?"
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
