"""Invalidations: what one machine deletes, invalidates or clears, the others' local tiers forget.

With a Redis tier, ``Cache.delete``, ``invalidate`` and ``clear`` also append an event to the
stream ``{prefix}:events`` (the newest ``EVENTS_KEPT`` are kept). Every cache sharing that Redis
reads the stream when it opens and then every ``poll`` seconds, in a daemon thread, and applies
the events other caches published to its own memory and disk tiers (Redis itself was done by
the publisher). The id of the last event applied is kept in the cache directory, so a process
that starts later catches up on what happened while no process of its directory ran; when the
stream was trimmed past that id, it cannot tell what it missed, so it clears its local tiers.

Residual gaps, documented rather than hidden: events need Redis >= 5 (streams; an older
server logs one warning and local copies live out their lifetimes, as without this); during a
Redis outage local copies keep being served and the events are applied once it is back; an
entry read from Redis in the instant before another machine invalidated it may be promoted
into the local tiers after the event was applied.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._tier import Tier

__all__ = ["Invalidations"]

logger = logging.getLogger("llm_memo")
_running: weakref.WeakSet[Invalidations] = weakref.WeakSet()


def _order(event_id: bytes) -> tuple[int, int]:
    """A stream id ("1700000000000-3") as numbers, for comparing ids."""
    ms, _, seq = event_id.partition(b"-")
    return int(ms), int(seq or 0)


class Invalidations:
    """Publish this cache's invalidations and apply the others' to ``local`` tiers.

    ``stream`` is the Redis tier (``publish``, ``events``, ``event_bounds``); ``fault(op, exc)``
    reports a failure of a call's own publish. Polling failures are not a call's: they are
    logged at DEBUG and retried at the next poll.
    """

    def __init__(self, stream: Any, local: Sequence[Tier], directory: Path | None, *,
                 kept: int, fault: Callable[[str, BaseException], None], poll: float = 0.5) -> None:
        self.stream, self.local, self.kept, self.poll = stream, list(local), kept, poll
        self._fault = fault
        self._origin = os.urandom(8).hex().encode()
        self._path = directory / f"redis-events-{stream.prefix}.id" if directory is not None else None
        self._last: bytes | None = None
        self._caught_up = False  # True once the stream's bounds were checked against our last id
        self._lock = threading.Lock()  # one catch-up at a time: the poller's or a caller's
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsupported = False

    # ---- publishing ------------------------------------------------------------------------

    def publish(self, op: str, arg: str = "") -> None:
        """Tell the other caches to apply ``op`` ("key", "keys": a JSON list, "tag" or "clear") to
        their local tiers."""
        if self._unsupported:
            return
        try:
            self.stream.publish({b"op": op.encode(), b"arg": arg.encode("utf-8", "surrogatepass"),
                                 b"origin": self._origin})
        except Exception as exc:
            if not self._note_unsupported(exc):
                self._fault("publish", exc)

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

    def catch_up(self) -> int:
        """Apply every event published since the last one applied; return how many were applied."""
        if self._unsupported:
            return 0
        with self._lock:
            try:
                return self._catch_up()
            except Exception as exc:
                if not self._note_unsupported(exc):
                    logger.debug("llm_memo: reading invalidations failed (%s: %s); retrying in %g s",
                                 type(exc).__name__, exc, self.poll)
                return 0

    def _catch_up(self) -> int:
        if not self._caught_up:
            last = self._read_last()
            length, first, newest = self.stream.event_bounds()
            self._caught_up = True
            if last is None:  # nothing applied here yet: only what comes next concerns us
                self._remember(newest or b"0-0")
                return 0
            if first is not None and length >= self.kept and _order(first) > _order(last):
                logger.info("llm_memo: missed invalidations (the event stream moved past this cache's "
                            "last one); clearing the local tiers")
                self._apply(b"clear", "")
                self._remember(newest or last)
                return 0
            self._last = last
        assert self._last is not None
        applied, start = 0, self._last
        while events := self.stream.events(self._last):
            for event_id, fields in events:
                if fields.get(b"origin") != self._origin:
                    self._apply(fields.get(b"op", b""), fields.get(b"arg", b"").decode("utf-8", "surrogatepass"))
                    applied += 1
                self._last = event_id
        if self._last != start:
            self._remember(self._last)
        return applied

    def _apply(self, op: bytes, arg: str) -> None:
        for tier in self.local:
            try:
                if op == b"key":
                    tier.delete(arg)
                elif op == b"keys":
                    for key in json.loads(arg):
                        tier.delete(key)
                elif op == b"tag":
                    tier.invalidate(arg)
                elif op == b"clear":
                    tier.clear()
            except Exception as exc:  # one tier failing must not stop the others forgetting
                logger.debug("llm_memo: applying an invalidation to the %s tier failed (%s: %s)",
                             tier.name, type(exc).__name__, exc)

    def close(self) -> None:
        """Stop polling (idempotent)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    # ---- plumbing --------------------------------------------------------------------------

    def _read_last(self) -> bytes | None:
        if self._path is None:
            return None
        try:
            text = self._path.read_bytes().strip()
            _order(text)
        except (OSError, ValueError):
            return None
        return text

    def _remember(self, event_id: bytes) -> None:
        self._last = event_id
        if self._path is None:
            return
        temporary = self._path.with_name(f"{self._path.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(event_id)
            os.replace(temporary, self._path)
        except OSError as exc:  # a read-only directory: the next process catches up from further back
            logger.debug("llm_memo: could not record the last invalidation applied (%s)", exc)
            with contextlib.suppress(OSError):
                os.unlink(temporary)

    def _note_unsupported(self, exc: BaseException) -> bool:
        """True (and one warning) when the server has no streams: Redis older than 5."""
        text = str(exc).lower()
        if "unknown command" not in text:
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
