"""Reaching Redis: the URL's options, and the breaker that fails fast while Redis does not answer."""

from __future__ import annotations

import os
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.exceptions import ClusterDownError, RedisClusterException
from redis.retry import Retry

T = TypeVar("T")

# "Redis is not answering": these open the breaker. Errors Redis answers with (OOM, READONLY,
# WRONGTYPE) prove it reachable and fail that one call only.
_UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, ClusterDownError,
                RedisClusterException, OSError)

class RedisUnavailable(redis.exceptions.ConnectionError):
    """Redis did not answer, or did not lately and the breaker is failing fast."""


class _Breaker:
    """Closed until a failure; then open (fail fast) for ``cooldown`` s; then one call probes."""

    def __init__(self, cooldown: float, timer: Callable[[], float]) -> None:
        self.cooldown = cooldown
        self.reason = ""
        self.refused = 0
        self._timer = timer
        self._lock = threading.Lock()  # held for a few assignments, never across I/O
        self._until: float | None = None  # None: closed
        self._failures = 0

    def admit(self) -> int | None:
        """A token for a call that may go ahead, or None when it must fail fast."""
        if self._until is None:
            return self._failures
        with self._lock:
            now = self._timer()
            if self._until is not None:
                if now < self._until:
                    self.refused += 1
                    return None
                self._until = now + self.cooldown  # half-open: this call probes, others wait
            return self._failures

    def failed(self, reason: str) -> None:
        with self._lock:
            self._failures += 1
            self._until = self._timer() + self.cooldown
            self.reason = reason

    def succeeded(self, token: int) -> None:
        if self._until is not None:
            with self._lock:
                if token == self._failures:  # admitted after the latest failure
                    self._until = None


class Link:
    """A client (made when first needed for Cluster, which connects when made) behind a breaker.

    ``run(op)`` calls ``op(client)``; faults that mean Redis is gone open the breaker and raise
    RedisUnavailable. A forked child starts with a closed breaker and new locks (one held by a
    parent thread at fork time would never be released in the child); redis-py gives it new
    connections. A ready ``client`` is used as is and not closed.
    """

    def __init__(self, url: str, cluster: bool, client: Any, where: str, cooldown: float,
                 timer: Callable[[], float], **timeouts: float) -> None:
        self.url, self.cluster, self.where = url, cluster, where
        self.attempts = 0
        self._options: dict[str, Any] = dict(
            **timeouts, retry=Retry(NoBackoff(), 1),  # one reconnect for a stale pooled socket, no sleeping
        )
        self._cooldown, self._timer = cooldown, timer
        self._owned = client is None
        self.client = client if client is not None or cluster else self._make()
        self._closed = False
        self._after_fork()

    def _after_fork(self) -> None:
        self._pid = os.getpid()
        self.breaker = _Breaker(self._cooldown, self._timer)
        self._connecting = threading.Lock()

    def _make(self) -> Any:
        if self.cluster:
            from redis.cluster import RedisCluster

            return RedisCluster.from_url(self.url, **self._options)
        return redis.Redis.from_url(self.url, **self._options)

    def run(self, op: Callable[[Any], T]) -> T:
        """``op(client)`` behind the breaker; faults that mean Redis is gone become RedisUnavailable."""
        if self._closed:
            raise RuntimeError("the redis tier is closed")
        if self._pid != os.getpid():
            self._after_fork()
        breaker = self.breaker
        token = breaker.admit()
        if token is None:
            raise RedisUnavailable(f"Redis at {self.where} is unavailable ({breaker.reason}); "
                                   f"failing fast for up to {breaker.cooldown:g} s")
        self.attempts += 1
        try:
            if self.client is None:  # RedisCluster discovers its nodes when made
                with self._connecting:
                    if self.client is None:
                        self.client = self._make()
            result = op(self.client)
        except _UNREACHABLE as exc:
            breaker.failed(f"{type(exc).__name__}: {exc}")
            raise RedisUnavailable(f"Redis at {self.where} is unavailable ({breaker.reason}); "
                                   f"failing fast for {breaker.cooldown:g} s") from exc
        except Exception:
            breaker.succeeded(token)  # Redis answered, if with an error: it is reachable
            raise
        breaker.succeeded(token)
        return result

    def close(self) -> None:
        """Close the connections this link opened; idempotent."""
        if not self._closed:
            self._closed = True
            if self._owned and self.client is not None:
                self.client.close()


def _cluster_option(url: str, cluster: bool | None) -> tuple[str, bool]:
    """The URL without our ``cluster=`` query option, and whether to use Redis Cluster."""
    if not isinstance(url, str):
        raise TypeError(f"url must be a str such as 'redis://localhost:6379/0'; got url={url!r}")
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    option = [value for name, value in query if name == "cluster"]
    if option:
        rest = urllib.parse.urlencode([(name, value) for name, value in query if name != "cluster"])
        url = urllib.parse.urlunsplit(parts._replace(query=rest))
        if cluster is None:
            cluster = option[-1].lower() in ("1", "true", "yes", "on")
    return url, bool(cluster)


def _is_cluster(client: Any) -> bool:
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)
