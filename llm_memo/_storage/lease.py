"""Leases over a tier chain: tokens that say who holds a computation, and the heartbeat that keeps
live holders' leases.

A token names its holder's host, process id and process start time, so a waiter on the same host
sees at once that the holder died (SIGKILL, a restarted kernel) instead of waiting out the lease.
Across hosts a holder cannot be probed: its heartbeat renews the lease while it lives, so leases
can be short and a dead holder's lease lapses within one lease length.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Sequence

from .tier import Leases, Tier, has

__all__ = ["FAILED_FOR", "RELEASED", "RELEASED_FOR", "Heartbeat", "Leasing", "failed_marker", "holder_alive",
           "is_failed", "new_token"]

FAILED_FOR = 5.0  # seconds a failed holder's marker lets waiters run at once instead of in turn
# What a holder that finished leaves for this long: the next taker knows an answer may have been
# stored since it read the tiers, and reads them again (only then).
RELEASED = "released"
RELEASED_FOR = 10.0
_FAILED = "failed:"
_IDLE = 30.0  # seconds the heartbeat thread waits for a new lease before it ends


def _host() -> str:
    return os.environ.get("_LLM_MEMO_HOST") or socket.gethostname()  # the override lets tests play two hosts


def _started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux /proc), "" where that cannot be
    read, None when no such live process exists (a reaped or zombie process is dead)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except FileNotFoundError:
        return None
    except OSError:
        return _signalable(pid)
    return None if fields[0] in (b"Z", b"X") else fields[19].decode()


def _signalable(pid: int) -> str | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except OSError:  # exists, owned by another user
        pass
    return ""


_me: tuple[int, str] = (0, "")


def _prefix() -> str:
    """The part of a token that names this process, worked out once per process (a forked child is a new one)."""
    global _me
    pid = os.getpid()
    if _me[0] != pid:
        _me = (pid, f"{_host()}|{pid}|{_started(pid) or ''}|")
    return _me[1]


def new_token() -> str:
    """A token naming this process: host, pid, process start time and a random part."""
    return _prefix() + os.urandom(6).hex()


def holder_alive(token: str) -> bool:
    """False only when the token's holder is certainly gone: a process on this host that no longer
    runs (or whose pid now belongs to a process started later). Other hosts' holders count as live."""
    parts = token.split("|")
    if len(parts) != 4 or parts[0] != _host() or not parts[1].isdigit():
        return True
    started = _started(int(parts[1]))
    return started is not None and (not started or not parts[2] or started == parts[2])


def is_mine(token: str) -> bool:
    """Whether a lease token was made by this process."""
    return token.startswith(_prefix())


def failed_marker(token: str) -> str:
    """What a holder whose call failed leaves in its lease's place for `FAILED_FOR` seconds."""
    return _FAILED + token


def is_failed(token: str) -> bool:
    return token.startswith(_FAILED)


class Heartbeat:
    """Renews held leases every third of their length from one daemon thread; `renew(key, token,
    seconds)` returns False when the lease was lost or could not be renewed, which ends its renewal
    (the lease then lapses: at worst a duplicate call, never a blocked one)."""

    def __init__(self, renew: Callable[[str, str, float], bool]) -> None:
        self._renew = renew
        self._held: dict[tuple[str, str], tuple[float, float]] = {}  # (key, token) -> (seconds, due)
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._closing = False

    def hold(self, key: str, token: str, seconds: float) -> None:
        with self._wake:
            self._closing = False
            self._held[key, token] = (seconds, time.monotonic() + seconds / 3)
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                self._pid = os.getpid()  # a forked child has no thread of its parent's
                self._thread = threading.Thread(target=self._run, name="llm_memo-lease-heartbeat", daemon=True)
                self._thread.start()
            self._wake.notify()

    def drop(self, key: str, token: str) -> None:
        with self._wake:
            self._held.pop((key, token), None)
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                if not self._held:  # idle: stay a while, so a run of misses starts no thread each
                    idle_until = time.monotonic() + _IDLE
                    while not self._held and not self._closing and (left := idle_until - time.monotonic()) > 0:
                        self._wake.wait(left)
                    if not self._held:
                        self._thread = None
                        return
                now = time.monotonic()
                due = [(held, seconds) for held, (seconds, when) in self._held.items() if when <= now]
                if not due:
                    self._wake.wait(min(when for _, when in self._held.values()) - now)
                    continue
                for held, seconds in due:
                    self._held[held] = (seconds, now + seconds / 3)
            for (key, token), seconds in due:
                if not self._renew(key, token, seconds):
                    self.drop(key, token)

    def clear(self) -> None:
        """Stop renewing every lease and let the thread end (the cache is closing)."""
        with self._wake:
            self._held.clear()
            self._closing = True
            self._wake.notify()


class Leasing:
    """Leases taken on the lowest tier of ``tiers`` that has them (Redis over disk), renewed by a
    heartbeat. A fault there is reported to ``fault(tier name, op, exc, None)`` and means
    "compute": a lease only saves duplicate work, it must never stop a call."""

    def __init__(self, tiers: Sequence[Tier], fault: Callable[[str, str, BaseException, None], None]) -> None:
        self._tiers = tiers
        self._fault = fault
        self._heartbeat = Heartbeat(self._renew)

    def take(self, key: str, seconds: float, renew: bool = True, mine: bool = False) -> tuple[str | None, bool]:
        """(a token when this process should compute `key`, None while another live holder has it;
        whether another holder let the key go in the last `RELEASED_FOR` seconds: its answer may
        have been stored after this caller read the tiers, which it then reads again). `mine`: a lease
        this process holds already gives a token too, unleased (the engine merges identical calls of
        one process before they get here, so waiting on its own lease could only deadlock).
        `renew`: keep the lease while this process lives."""
        token = new_token()
        arbiter = self._arbiter()
        if arbiter is None:
            return token, False
        name, tier = arbiter
        recent = False
        try:
            if not tier.lease(key, token, seconds):
                holder = tier.holder(key)
                if holder is not None and is_failed(holder):
                    return token, False  # not held: every waiter runs now rather than one after another
                if mine and holder is not None and is_mine(holder):
                    return token, False  # not held by this caller: it computes, as it would without a lease
                recent = holder == RELEASED
                if holder is None or (not recent and holder_alive(holder)) or not tier.swap(key, holder, token, seconds):
                    return None, False
        except Exception as exc:
            self._fault(name, "lease", exc, None)
            return token, False
        if renew:
            self._heartbeat.hold(key, token, seconds)
        return token, recent

    def give_back(self, key: str, token: str, failed: bool) -> None:
        """Release the lease, leaving a short-lived marker in its place: a finished holder's, or a
        failed one's (the waiters then run at once instead of taking the lease in turn)."""
        self._heartbeat.drop(key, token)
        arbiter = self._arbiter()
        if arbiter is not None:
            name, tier = arbiter
            marker, seconds = (failed_marker(token), FAILED_FOR) if failed else (RELEASED, RELEASED_FOR)
            try:
                tier.swap(key, token, marker, seconds)
            except Exception as exc:
                self._fault(name, "release", exc, None)

    def stop(self) -> None:
        """Stop renewing every lease (the cache is closing)."""
        self._heartbeat.clear()

    def _renew(self, key: str, token: str, seconds: float) -> bool:
        arbiter = self._arbiter()
        if arbiter is None:
            return False
        try:
            return bool(arbiter[1].swap(key, token, token, seconds))
        except Exception as exc:
            self._fault(arbiter[0], "lease", exc, None)
            return False

    def _arbiter(self) -> tuple[str, Leases] | None:
        """(name, tier) of the tier whose leases every process sharing the cache sees: the lowest
        that has them."""
        for tier in reversed(self._tiers):
            if has(tier, Leases):
                return tier.name, tier
        return None
