"""The persisted per-day savings ledger of a cache directory (Counters, this process's own, live
in llm_memo._storage.counters)."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from types import MappingProxyType
from typing import Any, NamedTuple

from .._logic.records import Stats
from .sqlite import connect_read_only

__all__ = ["LEDGER_FILENAME", "Ledger", "LedgerRow"]

logger = logging.getLogger("llm_memo")


# ---- the persisted savings ledger -------------------------------------------------------

LEDGER_FILENAME = "ledger.sqlite3"
_FIELDS = ("hits", "misses", "bypassed", "errors", "tokens_saved", "cost_saved", "time_saved")
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS savings (day TEXT NOT NULL, function TEXT NOT NULL, model TEXT NOT NULL,"
    " hits INTEGER NOT NULL, misses INTEGER NOT NULL, bypassed INTEGER NOT NULL, errors INTEGER NOT NULL,"
    " tokens_saved INTEGER NOT NULL, cost_saved REAL NOT NULL, time_saved REAL NOT NULL,"
    " PRIMARY KEY (day, function, model)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS tier_hits (day TEXT NOT NULL, function TEXT NOT NULL, model TEXT NOT NULL,"
    " tier TEXT NOT NULL, hits INTEGER NOT NULL, PRIMARY KEY (day, function, model, tier)) WITHOUT ROWID",
    # A table of its own, so that ledgers written before it (and the versions that wrote them) are unchanged.
    "CREATE TABLE IF NOT EXISTS provider_cache (day TEXT NOT NULL, function TEXT NOT NULL, model TEXT NOT NULL,"
    " read_tokens INTEGER NOT NULL, write_tokens INTEGER NOT NULL, PRIMARY KEY (day, function, model)) WITHOUT ROWID",
)
_UPSERT = (
    f"INSERT INTO savings VALUES (?, ?, ?, {', '.join('?' * len(_FIELDS))})"
    " ON CONFLICT (day, function, model) DO UPDATE SET "
    + ", ".join(f"{f} = {f} + excluded.{f}" for f in _FIELDS)
)
_UPSERT_PROVIDER = ("INSERT INTO provider_cache VALUES (?, ?, ?, ?, ?) ON CONFLICT (day, function, model) DO UPDATE"
                    " SET read_tokens = read_tokens + excluded.read_tokens,"
                    " write_tokens = write_tokens + excluded.write_tokens")
_UPSERT_TIER = ("INSERT INTO tier_hits VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (day, function, model, tier) DO UPDATE SET hits = hits + excluded.hits")
_RETRY_AFTER_FAILURE = 60.0  # seconds before a failed flush is tried again from the call path
_BY = ("day", "function", "model")
_MAX_EVENTS = 10_000  # recorded calls held before a write is due anyway
_MISS, _BYPASS, _ERROR = object(), object(), object()  # event kinds besides a hit (whose kind is its tier)


class LedgerRow(NamedTuple):
    """One aggregate: a UTC day, a function ("" for faults outside any call), a model ("" when none)."""

    day: str
    function: str
    model: str
    stats: Stats


class _Sums:
    __slots__ = ("bypassed", "cost", "errors", "hits", "misses", "read", "tiers", "time", "tokens", "written")

    def __init__(self) -> None:
        self.hits = self.misses = self.bypassed = self.errors = self.tokens = 0
        self.read = self.written = 0  # the provider's prompt cache
        self.cost = self.time = 0.0
        self.tiers: dict[str, int] = {}

    def add(self, other: _Sums) -> None:
        self.hits += other.hits
        self.misses += other.misses
        self.bypassed += other.bypassed
        self.errors += other.errors
        self.tokens += other.tokens
        self.cost += other.cost
        self.time += other.time
        self.read += other.read
        self.written += other.written
        for tier, n in other.tiers.items():
            self.tiers[tier] = self.tiers.get(tier, 0) + n

    def stats(self) -> Stats:
        return Stats(self.hits, self.misses, self.bypassed, self.errors, MappingProxyType(dict(self.tiers)),
                     self.tokens, self.cost, self.time, self.read, self.written)


class Ledger:
    """Per-day savings of one cache directory, summed across processes in ``ledger.sqlite3``.

    Calls add to an in-memory buffer (a dict update under a lock); the buffer is written
    at most every ``interval`` seconds from the call path, on ``close()`` and at exit.
    ``read_only``: the file is read with a read-only connection and never written.
    A write that fails (read-only file, locked database, full disk) never reaches the
    caller: it is logged once on "llm_memo", kept, and tried again later.
    """

    def __init__(self, directory: str | os.PathLike[str], *, clock: Callable[[], float] = time.time,
                 interval: float = 2.0, timer: Callable[[], float] = time.monotonic, read_only: bool = False) -> None:
        self.path = os.path.join(os.path.abspath(os.fspath(directory)), LEDGER_FILENAME)
        self.read_only = read_only
        self.interval = interval
        self._clock = clock
        self._timer = timer
        self._after_fork()
        _track(self)

    def _after_fork(self) -> None:
        # Also the constructor's state. A child forgets its parent's buffer (the parent writes it)
        # and never uses the parent's connection (SQLite connections must not cross a fork).
        self._events: list[tuple[Any, ...]] = []  # appended without a lock: list.append is atomic
        self._lock = threading.Lock()  # guards _buffer
        self._io = threading.Lock()  # one writer, one connection, used by one thread at a time
        self._buffer: dict[tuple[str, str, str], _Sums] = {}  # aggregated, not yet written
        self._con: sqlite3.Connection | None = None
        self._due = self._timer() + self.interval
        self._warned = False

    # ---- recording (the call path: one tuple appended, one clock compared) -------------------

    def hit(self, function: str, model: str | None, tier: str, latency: float = 0.0, tokens: int = 0,
            cost: float = 0.0) -> None:
        """Record a hit served by `tier` and what it saved."""
        self._events.append((self._clock(), function, model, tier, latency, tokens, cost))
        if self._timer() >= self._due or len(self._events) > _MAX_EVENTS:
            self.flush(wait=False)

    def miss(self, function: str, model: str | None, provider_read: int = 0, provider_written: int = 0) -> None:
        """Record a lookup that found nothing, and what the provider's prompt cache read and wrote for it."""
        self._events.append((self._clock(), function, model, _MISS, provider_read, provider_written))
        if self._timer() >= self._due:
            self.flush(wait=False)

    def bypass(self, function: str, model: str | None) -> None:
        """Record a call deliberately not cached."""
        self._events.append((self._clock(), function, model, _BYPASS))
        if self._timer() >= self._due:
            self.flush(wait=False)

    def error(self, function: str = "", model: str | None = None) -> None:
        """Record a tier fault or a bad entry (function "" when the cache cannot tell whose call)."""
        self._events.append((self._clock(), function, model, _ERROR))
        if self._timer() >= self._due:
            self.flush(wait=False)

    @staticmethod
    def _aggregate(events: list[tuple[Any, ...]], into: dict[tuple[str, str, str], _Sums]) -> None:
        day_start = day_end = 0.0
        day = ""
        for event in events:
            now, function, model, kind = event[:4]
            if not day_start <= now < day_end:
                day_start = now - now % 86400
                day_end = day_start + 86400
                day = time.strftime("%Y-%m-%d", time.gmtime(day_start))
            slot = (day, function, model or "")
            sums = into.get(slot)
            if sums is None:
                sums = into[slot] = _Sums()
            if kind is _MISS:
                sums.misses += 1
                sums.read += event[4]
                sums.written += event[5]
            elif kind is _BYPASS:
                sums.bypassed += 1
            elif kind is _ERROR:
                sums.errors += 1
            else:
                sums.hits += 1
                sums.tiers[kind] = sums.tiers.get(kind, 0) + 1
                sums.time += event[4]
                sums.tokens += event[5]
                sums.cost += event[6]

    def _take_events(self) -> list[tuple[Any, ...]]:
        # Called holding self._io (the only remover). Appends racing with us land after index n.
        n = len(self._events)
        taken = self._events[:n]
        del self._events[:n]
        return taken

    # ---- writing ---------------------------------------------------------------------------

    def flush(self, *, wait: bool = True) -> bool:
        """Write what was recorded; False if it could not (it is kept for the next try). Never raises."""
        if not self._io.acquire(blocking=wait):
            return False  # another thread is writing right now
        try:
            events = self._take_events()
            with self._lock:
                pending, self._buffer = self._buffer, {}
                self._due = self._timer() + self.interval
            self._aggregate(events, pending)
            if not pending:
                return True
            if self.read_only:  # kept for rows(), never written
                self._keep(pending, self.interval)
                return True
            try:
                self._write(pending, busy_ms=2000 if wait else 100)
            except Exception as exc:
                self._keep(pending, max(self.interval, _RETRY_AFTER_FAILURE))
                self._log("write", exc)
                return False
            return True
        finally:
            self._io.release()

    def _keep(self, pending: dict[tuple[str, str, str], _Sums], retry_in: float) -> None:
        with self._lock:
            for slot, sums in pending.items():
                self._buffer.setdefault(slot, _Sums()).add(sums)
            self._due = self._timer() + retry_in

    def _write(self, pending: dict[tuple[str, str, str], _Sums], busy_ms: int) -> None:
        con = self._connect()
        con.execute(f"PRAGMA busy_timeout = {busy_ms}")  # the call path waits little for a busy file
        con.execute("BEGIN IMMEDIATE")
        try:
            con.executemany(_UPSERT, [(*slot, s.hits, s.misses, s.bypassed, s.errors, s.tokens, s.cost, s.time)
                                      for slot, s in pending.items()])
            con.executemany(_UPSERT_TIER, [(*slot, tier, n) for slot, s in pending.items()
                                           for tier, n in s.tiers.items()])
            con.executemany(_UPSERT_PROVIDER, [(*slot, s.read, s.written) for slot, s in pending.items()
                                               if s.read or s.written])
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def _connect(self) -> sqlite3.Connection:
        # Called holding self._io.
        if self._con is not None:
            return self._con
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        if not os.path.exists(self.path):
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR | getattr(os, "O_NOFOLLOW", 0), 0o600))
        con = sqlite3.connect(self.path, timeout=1.0, isolation_level=None, check_same_thread=False)
        try:
            if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                con.execute(statement)
        except BaseException:
            con.close()
            raise
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.chmod(self.path + suffix, 0o600)
        self._con = con
        return con

    def _log(self, op: str, exc: BaseException) -> None:
        level = logging.DEBUG if self._warned else logging.WARNING
        self._warned = True
        logger.log(level, "llm_memo: savings ledger %s failed on %s (%s: %s); calls are unaffected",
                   op, self.path, type(exc).__name__, exc)

    def close(self) -> None:
        """Write the buffer and close the connection (a later record reopens it)."""
        self.flush()
        with self._io:
            if self._con is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._con.close()
                self._con = None

    # ---- reading ---------------------------------------------------------------------------

    def rows(self) -> list[LedgerRow] | None:
        """Every aggregate, stored and not yet written, by (day, function, model); None if unreadable."""
        with self._io:  # no write in between: each call is counted once, stored or pending
            try:
                merged = self._read() if os.path.exists(self.path) else {}
            except Exception as exc:
                self._log("read", exc)
                return None
            with self._lock:
                for slot, sums in self._buffer.items():
                    merged.setdefault(slot, _Sums()).add(sums)
            self._aggregate(list(self._events), merged)
        return [LedgerRow(*slot, sums.stats()) for slot, sums in sorted(merged.items())]

    def _read(self) -> dict[tuple[str, str, str], _Sums]:
        if not self.read_only:
            return self._read_from(self._connect())
        with contextlib.closing(connect_read_only(self.path)) as con:
            return self._read_from(con)

    @staticmethod
    def _read_from(con: sqlite3.Connection) -> dict[tuple[str, str, str], _Sums]:
        out: dict[tuple[str, str, str], _Sums] = {}
        for day, function, model, *values in con.execute(
                f"SELECT day, function, model, {', '.join(_FIELDS)} FROM savings"):
            sums = out[(day, function, model)] = _Sums()
            (sums.hits, sums.misses, sums.bypassed, sums.errors, sums.tokens, sums.cost, sums.time) = values
        for day, function, model, tier, hits in con.execute("SELECT * FROM tier_hits"):
            out.setdefault((day, function, model), _Sums()).tiers[tier] = hits
        if con.execute("SELECT 1 FROM sqlite_master WHERE name = 'provider_cache'").fetchone():  # older ledgers lack it
            for day, function, model, read, written in con.execute("SELECT * FROM provider_cache"):
                sums = out.setdefault((day, function, model), _Sums())
                sums.read, sums.written = read, written
        return out

    def totals(self, by: str | None = None) -> dict[str, Stats] | None:
        """Lifetime Stats, all together under "" or grouped by "day", "function" or "model"."""
        if by is not None and by not in _BY:
            raise ValueError(f"by= takes one of {', '.join(_BY)} or None; got by={by!r}")
        rows = self.rows()
        if rows is None:
            return None
        groups: dict[str, Stats] = {}
        for row in rows:
            name = "" if by is None else getattr(row, by)
            groups[name] = groups[name] + row.stats if name in groups else row.stats
        return groups if by is not None else {"": groups.get("", Stats())}


_ledgers: weakref.WeakSet[Ledger] = weakref.WeakSet()
_hooks_installed = False


def _track(ledger: Ledger) -> None:
    global _hooks_installed
    _ledgers.add(ledger)
    if not _hooks_installed:  # once per process, on the first ledger, not at import
        _hooks_installed = True
        atexit.register(_flush_all)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_forget_after_fork)


def _flush_all() -> None:
    """At exit: write what every live ledger still holds (failures are logged, never raised)."""
    for ledger in list(_ledgers):
        with contextlib.suppress(Exception):
            ledger.flush()


def _forget_after_fork() -> None:
    for ledger in list(_ledgers):
        ledger._after_fork()
