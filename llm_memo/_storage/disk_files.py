"""The disk tier's files: a private directory (0700) and database (0600), and the check that a
database is sound."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import warnings

_warned_directories: set[str] = set()


def _make_directories(directory: str) -> None:
    """os.makedirs, except that every directory it creates, parents too, is 0700 (as XDG asks)."""
    parent = os.path.dirname(directory)
    if parent and parent != directory and not os.path.isdir(parent):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            _make_directories(parent)
    os.mkdir(directory, 0o700)


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
