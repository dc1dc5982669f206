"""Faults: what falls through instead of failing a call (a tier fault, a bad entry, a refused class)
is counted and logged, a warning the first time and DEBUG after."""

from __future__ import annotations

import logging
import threading

from .._logic.codec import CorruptEntry, NewerFormat, UntrustedClass
from .counters import Counters
from .envelope import meta_json
from .ledger import Ledger
from .tier import Tier

__all__ = ["Faults"]

logger = logging.getLogger("llm_memo")


class Faults:
    """Counts every fault in `counters`, the call's own counters and the `ledger` (when there is one)."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.ledger: Ledger | None = None
        self._reported: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()

    def fault(self, tier: str, op: str, exc: BaseException, stats: Counters | None) -> None:
        """Count and log a tier's failed `op`."""
        self.count(stats)
        self.warn(tier, op, exc)

    def count(self, stats: Counters | None) -> None:
        self.counters.error()
        if stats is not None:
            stats.error()
        if self.ledger is not None:
            self.ledger.error()

    def warn(self, tier: str, op: str, exc: BaseException) -> None:
        """Log a fault: a warning the first time per tier and kind, DEBUG after."""
        signature = (tier, type(exc).__name__)  # one outage is one warning, whatever it interrupts
        with self._lock:
            first = signature not in self._reported
            self._reported.add(signature)
        level = logging.WARNING if first else logging.DEBUG
        logger.log(level, "llm_memo: %s tier %s failed (%s: %s); the call goes on without it",
                   tier, op, type(exc).__name__, exc)

    def bad_entry(self, tier: Tier, key: str, exc: CorruptEntry | UntrustedClass, stats: Counters | None,
                  meta: bytes = b"") -> None:
        """Count and log a bad entry, and delete it (a newer format's entry and a refused class stay)."""
        if isinstance(exc, UntrustedClass):
            self.refused(tier.name, exc, meta, stats)
            return  # not corrupt: a process that allows the class can read it
        self.fault(tier.name, "decode", exc, stats)
        if isinstance(exc, NewerFormat):
            return  # a newer llm_memo sharing this cache can still read it
        try:
            tier.delete(key)
        except Exception as err:
            self.fault(tier.name, "delete", err, stats)

    def refused(self, tier: str, exc: UntrustedClass, meta: bytes, stats: Counters | None) -> None:
        """A stored class this process does not rebuild: counted, and a warning the first time for
        each function and class (every function it happens to hears of it)."""
        self.count(stats)
        function = meta_json(meta).get("function") if meta else None
        function = function[:200] if isinstance(function, str) and function.isprintable() else "a cached function"
        with self._lock:
            first = ("class", function, exc.path) not in self._reported
            self._reported.add(("class", function, exc.path))
        logger.log(logging.WARNING if first else logging.DEBUG,
                   "llm_memo: %s: the stored answer in the %s tier was not served, because its class %s %s. "
                   "The function ran instead. To serve it, call %s once before calling %s.",
                   function, tier, exc.path, exc.reason, exc.fix, function)
