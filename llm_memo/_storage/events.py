"""Invalidations: what one machine deletes, invalidates or clears, the others' local tiers forget.

With a Redis tier, ``Cache.delete``, ``delete_many``, ``invalidate`` and ``clear`` also append an
event to the stream ``{prefix}:events`` (the newest 10,000 are kept). Every cache sharing
that Redis reads the stream when it opens, every ``poll`` seconds in a daemon thread, and when it
closes, and applies the events of other caches to its own memory and disk tiers (Redis itself was
done by the publisher). Events from a cache on the same directory reach the memory tier only:
the disk is the one the publisher already changed, and entries written there since must stay.

The id of the last event applied is kept in the directory, one file per Redis server and prefix
(never moved back), so a process that starts later catches up on what happened while no process
of its directory ran, and siblings leave the shared disk alone for events one of them applied
already. Each read starts at that id, inclusive: when the stream no longer holds it (trimmed past
it, evicted, deleted, or Redis lost its data), the cache cannot tell what it missed and clears its
local tiers, once. An event a tier refuses (a locked disk) is retried at the next polls, then given
up with a warning; one of a kind this version does not know clears the local tiers. A directory
opened with Redis for the first time starts at the end of the stream; a copy of a directory is a
directory of its own (its identity includes the inode).

Residual gaps, documented rather than hidden: events need Redis >= 5 (streams; an older server
logs one warning and local copies live out their lifetimes, as without this); an event the
publisher cannot send (Redis unreachable) is lost, and other machines keep their copies until
they expire; while a machine cannot reach Redis it keeps serving its local copies; an entry read
from Redis in the instant before another machine invalidated it may be promoted into the local
tiers after the event was applied; overwriting an entry (``Cache.set``, ``llm-memo import``)
sends no event, so other machines keep their copy until it expires.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from .tier import EventStream, Persistent, Tier, has

__all__ = ["Invalidations"]

logger = logging.getLogger("llm_memo")
_running: weakref.WeakSet[Invalidations] = weakref.WeakSet()
_RETRIES = 3  # polls an event that a tier refuses is retried at before it is given up


def _order(event_id: bytes) -> tuple[int, int]:
    """A stream id ("1700000000000-3") as numbers, for comparing ids."""
    ms, _, seq = event_id.partition(b"-")
    return int(ms), int(seq or 0)


class Invalidations:
    """Publish this cache's invalidations and apply the others' to ``local`` tiers.

    ``stream`` is the shared tier that carries the events (the Redis tier). ``report(op, exc)``
    logs a publish that failed; it is not counted as a call's error (the call's own Redis
    operation is). Reading failures are logged at DEBUG and retried at the next poll.
    """

    def __init__(self, stream: EventStream, local: Sequence[Tier], directory: Path | None, *,
                 report: Callable[[str, BaseException], None], poll: float = 0.5) -> None:
        self.stream, self.local, self.poll = stream, list(local), poll
        self._report = report
        self._origin = os.urandom(8).hex().encode()
        self._directory = _directory_token(directory) if directory is not None else b""
        server = hashlib.sha256(stream.where.encode()).hexdigest()[:12]  # one record per server and prefix
        self._path = directory / f"redis-events-{stream.prefix}-{server}.last" if directory is not None else None
        self._last: bytes | None = None  # the newest event applied; None until the first read
        self._lock = threading.Lock()  # one catch-up at a time: the poller's or close()'s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsupported = False
        self._lost = False  # True between clearing for a gap and finding a new place in the stream
        self._retries: dict[bytes, int] = {}  # event id -> failed tries so far

    # ---- publishing ------------------------------------------------------------------------

    def publish(self, op: str, arg: str = "") -> None:
        """Tell the other caches to apply ``op`` ("keys": a JSON list, "tag" or "clear") to their
        local tiers."""
        if self._unsupported:
            return
        try:
            self.stream.publish({b"op": op.encode(), b"arg": arg.encode("utf-8", "surrogatepass"),
                                 b"origin": self._origin, b"dir": self._directory})
        except Exception as exc:
            if not self._note_unsupported(exc):
                self._report("publish", exc)

    # ---- applying --------------------------------------------------------------------------

    def start(self) -> None:
        """Catch up once (before the first call reads a local copy), then poll in a daemon thread."""
        self.catch_up()
        self._spawn()
        _running.add(self)

    def _spawn(self) -> None:
        # The thread holds a weak reference only: a cache dropped without close() stops polling.
        self._thread = threading.Thread(target=_poll, args=(weakref.ref(self), self._stop, self.poll),
                                        name="llm_memo-invalidations", daemon=True)
        self._thread.start()

    def catch_up(self, wait: float = -1) -> int:
        """Apply every event published since the last one applied; return how many were applied.
        ``wait``: seconds to wait for a catch-up already running (-1: as long as it takes)."""
        if self._unsupported or not self._lock.acquire(timeout=wait):
            return 0
        try:
            return self._catch_up()
        except Exception as exc:
            if not self._note_unsupported(exc):
                logger.debug("llm_memo: reading invalidations failed (%s: %s); retrying in %g s",
                             type(exc).__name__, exc, self.poll)
            return 0
        finally:
            self._lock.release()

    def _catch_up(self) -> int:
        if self._last is None:
            self._last = self._read_last() or self._anchor()
        # Other processes of this directory may have applied events to the shared disk already.
        disk_done = _order(self._read_last() or b"0-0")
        applied, start = 0, self._last
        while True:
            events = self.stream.events(self._last)
            if not events or events[0][0] != self._last:  # the stream lost our place: a gap
                self._forget_everything()
                break
            failed = False
            for event_id, fields in events[1:]:
                if fields.get(b"origin") != self._origin:
                    failed = not self._apply(fields, disk=_order(event_id) > disk_done)
                    if failed and self._retries.get(event_id, 0) < _RETRIES:
                        self._retries[event_id] = self._retries.get(event_id, 0) + 1
                        break  # retried at the next poll, from this event
                    if failed:
                        logger.warning("llm_memo: gave up applying an invalidation after %d tries (see DEBUG "
                                       "lines); a local copy may outlive it until it expires", _RETRIES + 1)
                        failed = False
                    self._retries.pop(event_id, None)
                    applied += 1
                self._last = event_id
            if failed or len(events) == 1:
                break
        if self._last != start:
            self._remember(self._last)
        return applied

    def _newest(self) -> bytes:
        """The stream's newest event, or one we add to an empty stream: a place to read on from."""
        return self.stream.newest_event() or self.stream.publish(
            {b"op": b"open", b"origin": self._origin, b"dir": self._directory})

    def _anchor(self) -> bytes:
        """Our place in a stream we have never read, recorded for this directory."""
        newest = self._newest()
        self._remember(newest)
        return newest

    def _forget_everything(self) -> None:
        """Clear the local tiers and take the stream's newest event as our place. The place is read
        first, so an event published meanwhile is read next; while Redis or a tier refuses, nothing
        moves and the next poll tries again (the warning is given once)."""
        newest = self._newest()
        if not self._lost:
            logger.warning("llm_memo: the Redis event stream no longer holds this cache's place (trimmed, "
                           "evicted or lost), so invalidations may have been missed: clearing the local tiers")
            self._lost = True
        if not self._apply({b"op": b"clear"}, disk=True):
            return
        self._lost = False
        self._retries.clear()
        self._last = newest
        self._remember(newest, force=True)  # the old record names a stream that is gone

    def _apply(self, fields: dict[bytes, bytes], *, disk: bool) -> bool:
        """Apply one event to the local tiers (the disk too when ``disk``); False when a tier failed."""
        op, arg = fields.get(b"op", b""), fields.get(b"arg", b"").decode("utf-8", "surrogatepass")
        if op == b"open":
            return True
        tiers = self.local
        if not disk or (self._directory and fields.get(b"dir") == self._directory):
            tiers = [tier for tier in tiers if not has(tier, Persistent)]  # the shared disk is done already
        ok = True
        for tier in tiers:
            try:
                if op == b"keys":
                    for key in orjson.loads(arg):
                        tier.delete(key)
                elif op == b"tag":
                    tier.invalidate(arg)
                else:  # "clear", or a kind a newer version sends: forgetting is always safe
                    tier.clear()
            except Exception as exc:
                ok = False
                logger.debug("llm_memo: applying an invalidation to the %s tier failed (%s: %s); retrying",
                             tier.name, type(exc).__name__, exc)
        return ok

    def close(self) -> None:
        """Stop polling, then catch up a last time so the next process here starts past our events
        (at most 5 s in all)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.5)
        self._thread = None
        self.catch_up(wait=2.5)  # a poller stuck on a server without timeouts must not hang close()

    # ---- plumbing --------------------------------------------------------------------------

    def _read_last(self) -> bytes | None:
        if self._path is None:
            return None
        try:
            text = self._path.read_bytes().strip()
        except OSError:
            return None
        ms, dash, seq = text.partition(b"-")
        return text if dash and ms.isdigit() and seq.isdigit() else None

    def _remember(self, event_id: bytes, *, force: bool = False) -> None:
        if self._path is None:
            return
        recorded = None if force else self._read_last()
        if recorded is not None and _order(recorded) >= _order(event_id):
            return  # another process of this directory got further: never move the record back
        temporary = self._path.with_name(f"{self._path.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(event_id)
                file.flush()
                os.fsync(file.fileno())  # a power cut must not leave an empty file: that reads as "new"
            os.replace(temporary, self._path)
        except OSError as exc:  # a read-only directory: the next process catches up from further back
            logger.debug("llm_memo: could not record the last invalidation applied (%s)", exc)
            with contextlib.suppress(OSError):
                os.unlink(temporary)

    def _note_unsupported(self, exc: BaseException) -> bool:
        """True (and one warning) when the server has no streams: Redis older than 5."""
        if "unknown command" not in str(exc).lower():
            return False
        self._unsupported = True
        logger.warning("llm_memo: this Redis has no streams (Redis < 5): invalidations will not reach "
                       "other machines' memory and disk tiers; their copies expire with their lifetimes")
        return True

    def after_fork(self) -> None:
        """In a forked child: new lock, and a poller of its own (threads do not survive fork)."""
        self._lock = threading.Lock()
        self._origin = os.urandom(8).hex().encode()
        if self._thread is not None and not self._stop.is_set():
            self._spawn()


def _directory_token(directory: Path) -> bytes:
    """A random id naming this cache directory, made once by whichever process gets there first."""
    path = directory / "directory.id"
    with contextlib.suppress(FileExistsError, OSError):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(os.urandom(16).hex().encode())
            file.flush()
            os.fsync(file.fileno())
    try:
        token = path.read_bytes().strip()
        where = os.stat(directory)
    except OSError:
        return b""
    if len(token) != 32:
        return b""  # unreadable or torn: treat every event as foreign (safe)
    # A copied directory (a restored CI cache, a baked image) keeps the file but not the inode.
    return token + f":{where.st_dev}:{where.st_ino}".encode()


def _poll(ref: weakref.ref[Invalidations], stop: threading.Event, every: float) -> None:
    while not stop.wait(every):
        invalidations = ref()
        if invalidations is None or invalidations._unsupported:
            return
        invalidations.catch_up()
        del invalidations  # hold no strong reference while waiting


def _restart_after_fork() -> None:
    for invalidations in list(_running):
        invalidations.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_after_fork)
