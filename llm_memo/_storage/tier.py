"""Tier protocol: a store of bytes under opaque keys, with an absolute expiry and tags."""

from __future__ import annotations

import os
import pathlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class Tier(Protocol):
    """A byte store the cache engine chains (memory -> disk -> redis).

    Keys are opaque strings (the engine's 64-char hex digests) and tags are short opaque
    strings ("fn:app.ask"); a tier never interprets either. ``expires_at`` is absolute epoch
    seconds on the cache's wall clock (the tier's injected ``clock``); ``None`` never expires.

    - ``get`` returns ``None`` when the key is absent, expired, or holds a row the tier did
      not write (it drops such rows). It returns the bytes as stored: checking the payload
      (checksum, format) is the codec's job, so that the engine sees and counts damage.
    - ``set`` replaces the value and the tags. An ``expires_at`` not after now, or a value
      larger than the tier's limit, stores nothing and removes any older value for the key.
    - ``delete``/``invalidate``/``clear`` return how many live entries they removed.
    - ``keys`` yields live keys (a snapshot).
    - ``close`` is idempotent; any other call on a closed tier raises ``RuntimeError``.

    Caller mistakes (``data`` not bytes, ``tags`` a bare str) raise ``TypeError``.
    Infrastructure faults raise (``OSError`` including ``TimeoutError``, ``sqlite3.Error``,
    redis errors); the engine catches them, counts them and falls through.
    """

    name: str

    def get(self, key: str) -> bytes | None:
        """Return the live value stored under ``key``, or None."""
        ...

    def set(
        self, key: str, data: bytes, expires_at: float | None, tags: Sequence[str] = ()
    ) -> None:
        """Store ``data`` under ``key`` until ``expires_at``, carrying ``tags``."""
        ...

    def delete(self, key: str) -> bool:
        """Remove ``key``; True when a live entry was removed."""
        ...

    def invalidate(self, tag: str) -> int:
        """Remove every entry carrying ``tag``; return how many live entries went."""
        ...

    def clear(self) -> int:
        """Remove everything; return how many live entries went."""
        ...

    def close(self) -> None:
        """Release the tier's resources (persistent tiers keep their data)."""
        ...

    def keys(self) -> Iterator[str]:
        """Iterate over a snapshot of the live keys."""
        ...


def check_entry(data: object, tags: Iterable[str]) -> tuple[str, ...]:
    """Reject the caller mistakes every tier rejects alike; return the tags, deduplicated."""
    if type(data) is not bytes:
        raise TypeError(f"a tier stores bytes, got data of type {type(data).__name__}")
    if isinstance(tags, (str, bytes)):
        raise TypeError(f"tags must be a sequence of str, got a bare {type(tags).__name__}")
    unique = tuple(dict.fromkeys(tags))
    for tag in unique:
        if type(tag) is not str:
            raise TypeError(f"each tag must be a str, got {tag!r}")
    return unique


def connect_read_only(path: str, timeout: float = 1.0) -> sqlite3.Connection:
    """A connection that can only read the SQLite database at ``path``, and creates no file.

    With no ``-wal`` file beside it, no connection has the database open and all of it is in
    the file: it is opened ``immutable`` (no lock, no WAL index created, so nothing is left
    behind). Otherwise SQLite's ``mode=ro`` reads the WAL too; where that needs a WAL index
    that a read-only directory cannot hold, ``immutable`` again. Raises FileNotFoundError
    when there is no database, sqlite3.Error otherwise.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no database at {path}")
    uri = pathlib.Path(path).absolute().as_uri() + "?mode=ro"
    if os.path.exists(path + "-wal"):
        try:
            return _checked(sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False))
        except sqlite3.OperationalError:
            if os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
                raise
    return _checked(sqlite3.connect(uri + "&immutable=1", uri=True, timeout=timeout, check_same_thread=False))


def _checked(con: sqlite3.Connection) -> sqlite3.Connection:
    try:
        con.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # fail here, not on first use
    except BaseException:
        con.close()
        raise
    return con
