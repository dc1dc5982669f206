"""ReadOnlyDiskTier: a disk tier's database read without writing a byte (llm-memo's read-only commands)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from diskcache.core import DBNAME, MODE_RAW

from .disk_format import _COUNT, _EXPIRED, _HEADER, _LIVE, _ROWS, _expired_rows, _live_keys, _unpack
from .sqlite import connect_read_only

__all__ = ["ReadOnlyDiskTier", "has_database"]


def has_database(directory: str | os.PathLike[str]) -> bool:
    """True when ``directory`` holds a disk tier's database (looking creates nothing)."""
    return os.path.isfile(os.path.join(os.fspath(directory), DBNAME))


class ReadOnlyDiskTier:
    """A disk tier's database, read without writing a byte: for looking at a cache (the
    llm-memo commands stats, ls, show, export), on a read-only mount too.

    Construction raises FileNotFoundError when ``directory`` holds no database (it creates
    nothing) and sqlite3.Error when the file cannot be read. Rows it cannot trust are skipped,
    not dropped; every write raises PermissionError. It takes no leases.
    """

    name = "disk"

    def __init__(self, directory: str | os.PathLike[str], *, clock: Callable[[], float] = time.time,
                 timeout: float = 1.0) -> None:
        self.directory = os.path.abspath(os.fspath(directory))
        self._clock = clock
        self._lock = threading.Lock()
        self._con: sqlite3.Connection | None = connect_read_only(os.path.join(self.directory, DBNAME), timeout)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            if self._con is None:
                raise RuntimeError("the disk tier is closed")
            return self._con.execute(sql, params).fetchall()

    def get(self, key: str) -> bytes | None:
        """Return the live value stored under ``key``, or None."""
        rows = self._query(f"SELECT value, expire_time {_ROWS} AND key = ?", (MODE_RAW, key))
        if not rows or (rows[0][1] is not None and rows[0][1] <= time.time()):
            return None
        entry = _unpack(bytes(rows[0][0]))
        return entry[1] if entry is not None and self._clock() < entry[0] else None

    def keys(self) -> Iterator[str]:
        """Iterate over a snapshot of the live keys."""
        return iter(_live_keys(self._query(_LIVE, (_HEADER.size, MODE_RAW, time.time())), self._clock()))

    def expired(self) -> list[tuple[str, bytes]]:
        """(key, data) of the rows that expired but are still stored."""
        return _expired_rows(self._query(_EXPIRED, (MODE_RAW,)), self._clock())

    def volume(self) -> int:
        """Bytes of the database, as DiskTier.volume counts them."""
        (pages, size), = self._query("SELECT page_count * page_size, (SELECT value FROM Settings"
                                     " WHERE key = 'size') FROM pragma_page_count, pragma_page_size")
        return int(pages) + int(size or 0)

    def __len__(self) -> int:
        """Entries whose lifetime has not ended (diskcache's expire_time)."""
        return int(self._query(_COUNT, (time.time(),))[0][0])

    def _refuse(self, *args: Any) -> Any:
        raise PermissionError(f"the disk cache {self.directory} was opened read-only")

    set = delete = invalidate = clear = _refuse

    def close(self) -> None:
        """Close the connection; idempotent."""
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
