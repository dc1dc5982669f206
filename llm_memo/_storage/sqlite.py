"""Read-only SQLite connections that create no file (the read-only disk tier and ledger use them)."""

from __future__ import annotations

import os
import pathlib
import sqlite3

__all__ = ["connect_read_only"]


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
