"""Early refresh (XFetch: Vattani, Chierichetti and Lowenstein, VLDB 2015): one caller recomputes a
hot entry shortly before it expires while every other keeps being served the stored answer."""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from typing import TYPE_CHECKING, Any

from .._storage.cache import Cache, Hit
from .flow import BODY, Flow, io, lease

if TYPE_CHECKING:
    from .engine import Engine, Lookup

__all__ = ["EarlyRefresh"]

logger = logging.getLogger("llm_memo")


def _renewed(found: Hit | None, hit: Hit) -> Hit | None:
    """`found` when it is a newer copy of `hit`'s entry (due for refresh, so it has an expiry), one that
    expires later: another process refreshed it."""
    if found is None or (found.expires_at is not None and found.expires_at <= (hit.expires_at or 0.0)):
        return None
    return found


class EarlyRefresh:
    """The early refreshes of one engine: `beta` scales how early (1.0 is usual)."""

    def __init__(self, beta: float) -> None:
        self.beta = beta
        self._refreshing: set[str] = set()  # keys this process is refreshing
        self._lock = threading.Lock()

    def due(self, cache: Cache, hit: Hit) -> bool:
        """Whether this hit should recompute: certain at expiry, likelier the nearer expiry is and the
        longer the call took (``now - latency * beta * ln(U) >= expires_at``, U uniform in (0, 1])."""
        if hit.expires_at is None or hit.latency <= 0:
            return False
        return cache.clock() - hit.latency * self.beta * math.log(1.0 - random.random()) >= hit.expires_at

    def claim(self, cache: Cache, hit: Hit, key: str) -> bool:
        """Whether this caller refreshes `hit` now: it is due, and no other thread of this process has it."""
        if not self.due(cache, hit):
            return False
        with self._lock:
            if key in self._refreshing:
                return False
            self._refreshing.add(key)
            return True

    def flow(self, engine: Engine, look: Lookup) -> Flow[Any]:
        """Recompute and store a hit's value unless another process holds its lease; the stored answer
        when it does, or when the call fails (the entry is still live: a refresh never costs a caller)."""
        cache, key, hit = look.cache, look.key, look.hit
        assert cache is not None and hit is not None
        token = None
        try:
            token = (yield lease(cache, key, engine.lease))[0] if engine.lease else None
            renewed = _renewed((yield io(cache.get_lower, key)), hit) if token is not None else None
            if renewed is not None or (engine.lease and token is None):
                return engine._found(look, renewed or hit)
            start = time.perf_counter()
            try:
                value = yield BODY
            except Exception as exc:
                logger.warning("llm_memo: early refresh of %s failed (%s: %s); serving the stored answer, "
                               "which is still live", engine.function, type(exc).__name__, exc)
                return engine.serve(look)
            yield io(engine._store, look, value, time.perf_counter() - start, engine._lifetime(look))
            return value
        finally:
            try:
                if token is not None:
                    yield io(cache.release, key, token)
            finally:  # even when interrupted while giving the lease back
                with self._lock:
                    self._refreshing.discard(key)
