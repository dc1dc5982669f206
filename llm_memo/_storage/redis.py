"""RedisTier: entries shared through Redis or Redis Cluster, with server-side TTLs and a breaker."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.exceptions import ClusterDownError, RedisClusterException, ResponseError
from redis.retry import Retry

from .tier import check_entry

__all__ = ["RedisTier", "RedisUnavailable"]

logger = logging.getLogger("llm_memo")
T = TypeVar("T")

# A value is: magic, expires_at on the tier's clock (inf = never), length of the tags JSON, the
# tags, the caller's bytes. Redis expires it itself (SET PX); the header lets get() honour the
# injected clock too and invalidate() see the entry's current tags. Other bytes are a miss.
_HEADER = struct.Struct("!4sdI")
_MAGIC = b"LMR1"
_PEEK = _HEADER.size + 512  # bytes read to learn an entry's tags (longer lists: a second read)
_BATCH = 500  # keys per round trip when scanning, invalidating or clearing
_EVENTS_KEPT = 10_000  # invalidation events the stream keeps for machines that were away
_PREFIX = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
# "Redis is not answering": these open the breaker. Errors Redis answers with (OOM, READONLY,
# WRONGTYPE) prove it reachable and fail that one call only.
_UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, ClusterDownError,
                RedisClusterException, OSError)

# Add ARGV[1] to the tag index KEYS[1] (a sorted set) scored by its expiry ARGV[2] ("inf": never)
# on the tier's clock, whose now is ARGV[3]. Expired members are pruned, and the index expires
# with its longest-lived member. Each script touches one key, so both are safe on Cluster.
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_SWAP = ("if redis.call('GET', KEYS[1]) == ARGV[1] then"
         " return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) and 1 end return 0")
_INDEX = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]
if last == 'inf' then redis.call('PERSIST', KEYS[1])
else redis.call('PEXPIRE', KEYS[1], math.ceil((tonumber(last) - tonumber(ARGV[3])) * 1000)) end
"""
# Remove members (ARGV: member, score, ...) still at the score read: a member re-added meanwhile
# belongs to a newer write and stays. Returns how many went.
_UNINDEX = """
local n = 0
for i = 1, #ARGV, 2 do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s and (s == ARGV[i + 1] or tonumber(s) == tonumber(ARGV[i + 1])) then
    n = n + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return n
"""


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


class RedisTier:
    """Share entries through Redis: values at ``{prefix}:v:{key}``, tag indexes at ``{prefix}:t:{tag}``.

    Values are bytes (the cache's checksummed envelopes, never pickles) set with ``SET ... PX``
    so Redis expires them itself. PX comes from the injected clock, not PXAT from
    ``expires_at``: lifetimes then survive skew between this machine's and the server's clocks
    (and fake clocks in tests); ``get`` checks ``expires_at`` too, so neither clock serves late.

    Tags: a sorted set per tag, written in the value's MULTI (on Cluster a plain pipeline,
    value first, and the value is deleted again if the index write fails). ``invalidate``
    reads the index a batch at a time, deletes the entries whose header still names the tag,
    then removes those members unless a newer write re-added them; a fault midway leaves the
    index for a retry. That costs O(entries with the tag), where SCAN costs the whole keyspace
    of every app on the server. Expired members are pruned on writes, so indexes stay bounded.

    Faults: a refused connection, a timeout, a restart or a Cluster outage raise
    ``RedisUnavailable`` and open a breaker: for ``breaker_cooldown`` seconds calls fail fast
    without touching the network, then one call probes and success closes it. Errors Redis
    answers with (``OutOfMemoryError``, ``ReadOnlyError``) fail that call only. The cache
    counts, logs and falls through either way. ``attempts`` counts calls that went to the
    network (at most two connection attempts each), ``refused`` those failed fast.

    ``url``: what ``redis.Redis.from_url`` takes (``redis://``, ``rediss://``, ``unix://``).
    ``cluster=True`` or ``?cluster=true`` in the URL: ``RedisCluster.from_url``, which connects
    on first use. ``client``: a ready sync client (Sentinel, custom TLS), used as is and not
    closed. Construction never touches the network; a forked child opens its own connections
    (redis-py compares pids). Any Redis since 2.6.12 will do (SET PX, Lua).
    """

    name = "redis"
    shared = True  # other machines read it: the cache never writes pickled entries here

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "llm_memo",
        clock: Callable[[], float] = time.time,
        socket_timeout: float = 0.25,
        connect_timeout: float = 0.25,
        breaker_cooldown: float = 5.0,
        client: Any = None,
        cluster: bool | None = None,
        timer: Callable[[], float] = time.monotonic,
        size_limit: int = 512 * 2**20,
    ) -> None:
        if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
            raise ValueError("prefix must be 1-64 letters, digits, '_', '.' or '-' (no ':', which "
                             f"separates our key parts, no glob characters); got prefix={prefix!r}")
        for name, value in (("socket_timeout", socket_timeout), ("connect_timeout", connect_timeout),
                            ("breaker_cooldown", breaker_cooldown)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name} must be a number of seconds >= 0; got {name}={value!r}")
        if client is not None and client.get_encoder().decode_responses:
            raise ValueError("RedisTier needs a client made with decode_responses=False: it stores bytes")
        self._url, cluster = _cluster_option(url, cluster)
        self.prefix = prefix
        self.where = _redact(self._url) if client is None else repr(client)
        self.size_limit = size_limit
        self.attempts = 0  # exact in one thread; threads racing may lose an increment
        self._clock = clock
        self._timer = timer
        self._cooldown = breaker_cooldown
        self._vprefix = f"{prefix}:v:".encode()
        self._ekey = f"{prefix}:events".encode()
        self._cluster = cluster if client is None else _is_cluster(client)
        self._owned = client is None
        self._options: dict[str, Any] = dict(
            socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout,
            retry=Retry(NoBackoff(), 1),  # one reconnect for a stale pooled socket, no sleeping
        )
        self._client = client if client is not None or cluster else self._make()
        self._closed = False
        self._warned = False
        self._after_fork()

    def __repr__(self) -> str:
        return f"RedisTier({self.where!r}, prefix={self.prefix!r})"

    @property
    def refused(self) -> int:
        """Calls failed fast by the open breaker, without touching the network."""
        return self._breaker.refused

    # ---- plumbing ------------------------------------------------------------------------

    def _after_fork(self) -> None:
        # Also the constructor's. A child starts with a closed breaker and new locks (one
        # held by a parent thread at fork time would never be released in the child).
        self._pid = os.getpid()
        self._breaker = _Breaker(self._cooldown, self._timer)
        self._connecting = threading.Lock()

    def _make(self) -> Any:
        if self._cluster:
            from redis.cluster import RedisCluster

            return RedisCluster.from_url(self._url, **self._options)
        return redis.Redis.from_url(self._url, **self._options)

    def _run(self, op: Callable[[Any], T]) -> T:
        """``op(client)`` behind the breaker; faults that mean Redis is gone become RedisUnavailable."""
        if self._closed:
            raise RuntimeError("the redis tier is closed")
        if self._pid != os.getpid():
            self._after_fork()
        breaker = self._breaker
        token = breaker.admit()
        if token is None:
            raise RedisUnavailable(f"Redis at {self.where} is unavailable ({breaker.reason}); "
                                   f"failing fast for up to {breaker.cooldown:g} s")
        self.attempts += 1
        try:
            if self._client is None:  # RedisCluster discovers its nodes when made
                with self._connecting:
                    if self._client is None:
                        self._client = self._make()
            result = op(self._client)
        except _UNREACHABLE as exc:
            breaker.failed(f"{type(exc).__name__}: {exc}")
            raise RedisUnavailable(f"Redis at {self.where} is unavailable ({breaker.reason}); "
                                   f"failing fast for {breaker.cooldown:g} s") from exc
        except Exception:
            breaker.succeeded(token)  # Redis answered, if with an error: it is reachable
            raise
        breaker.succeeded(token)
        return result

    def _pipeline(self, client: Any, atomic: bool = False) -> Any:
        return client.pipeline(transaction=atomic and not self._cluster)  # no MULTI across slots

    def _vkey(self, key: str) -> bytes:
        return self._vprefix + key.encode("utf-8", "surrogatepass")

    def _tkey(self, tag: str) -> bytes:
        return f"{self.prefix}:t:".encode() + tag.encode("utf-8", "surrogatepass")

    def _heads(self, client: Any, vkeys: Sequence[bytes]) -> list[tuple[float, bytes] | None]:
        """(expires_at, tags JSON) of each value; None where it is absent or not ours."""
        pipe = self._pipeline(client)
        for vkey in vkeys:
            pipe.getrange(vkey, 0, _PEEK - 1)
        raws = pipe.execute(raise_on_error=False)
        heads = []
        for vkey, raw in zip(vkeys, raws, strict=True):
            head = _unpack(raw) if isinstance(raw, bytes) else None
            if head is not None and _HEADER.size + head[1] > len(raw):  # a long tag list
                raw = client.get(vkey) or b""
                head = _unpack(raw)
            heads.append(None if head is None else (head[0], raw[_HEADER.size:_HEADER.size + head[1]]))
        return heads

    def _live(self, heads: Sequence[tuple[float, Any] | None]) -> list[bool]:
        now = self._clock()
        return [head is not None and now < head[0] for head in heads]

    def _delete(self, client: Any, keys: Sequence[bytes], live: Sequence[bool]) -> int:
        """Delete ``keys``; return how many of those flagged live were there."""
        if not keys:
            return 0
        pipe = self._pipeline(client)
        for key in keys:
            pipe.delete(key)
        return sum(bool(n) and ok for n, ok in zip(pipe.execute(), live, strict=True))

    def _scan(self, client: Any, kind: str) -> Iterator[list[bytes]]:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{self.prefix}:{kind}:*", count=_BATCH):
            batch.append(key)
            if len(batch) == _BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    # ---- the Tier protocol ---------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """Return the live value stored under ``key``, or None."""
        vkey = self._vkey(key)

        def op(client: Any) -> Any:
            try:
                return client.get(vkey)
            except ResponseError as exc:
                if str(exc).startswith("WRONGTYPE"):
                    return b""  # not a string: not ours
                raise

        raw = self._run(op)
        head = None if raw is None else _unpack(raw)
        if head is None:
            if raw is not None:
                level = logging.DEBUG if self._warned else logging.WARNING
                self._warned = True
                logger.log(level, "llm_memo: ignoring a value this tier did not write at %s:v:%s "
                           "(a miss; the next store replaces it)", self.prefix, key)
            return None
        expires_at, tags_length = head
        return raw[_HEADER.size + tags_length:] if self._clock() < expires_at else None

    def set(
        self, key: str, data: bytes, expires_at: float | None, tags: Sequence[str] = ()
    ) -> None:
        """Store ``data`` until ``expires_at``; a past expiry or an oversized value stores nothing."""
        tags = check_entry(data, tags)
        now = self._clock()
        deadline = math.inf if expires_at is None else expires_at
        vkey = self._vkey(key)
        blob = json.dumps(tags).encode("ascii")  # ensure_ascii escapes lone surrogates too
        if not now < deadline or _HEADER.size + len(blob) + len(data) > self.size_limit:
            self._run(lambda client: client.delete(vkey))  # and leave no older value behind
            return
        value = _HEADER.pack(_MAGIC, deadline, len(blob)) + blob + data
        lifetime = None if math.isinf(deadline) else max(1, math.ceil((deadline - now) * 1000))
        score = "inf" if lifetime is None else repr(deadline)

        def op(client: Any) -> None:
            pipe = self._pipeline(client, atomic=True)
            pipe.set(vkey, value, px=lifetime)
            for tag in tags:  # execute_command: ClusterPipeline has no eval() but routes EVAL
                pipe.execute_command("EVAL", _INDEX, 1, self._tkey(tag), vkey[len(self._vprefix):],
                                     score, repr(now))
            try:
                pipe.execute()
            except Exception:
                if self._cluster:  # the value may have landed without its index: take it back
                    with contextlib.suppress(Exception):
                        client.delete(vkey)
                raise

        self._run(op)

    def lease(self, key: str, token: str, seconds: float) -> bool:
        """Take the computation of ``key`` for ``seconds`` across machines (SET NX PX)."""
        lkey = f"{self.prefix}:l:{key}"
        ms = max(1, math.ceil(seconds * 1000))
        return bool(self._run(lambda client: client.set(lkey, token, nx=True, px=ms)))

    def release(self, key: str, token: str) -> None:
        """Give up the lease on ``key`` if ``token`` still holds it (compare and delete)."""
        lkey = f"{self.prefix}:l:{key}"
        self._run(lambda client: client.execute_command("EVAL", _RELEASE, 1, lkey, token))

    def holder(self, key: str) -> str | None:
        """The token of the live lease on ``key``, if any."""
        held = self._run(lambda client: client.get(f"{self.prefix}:l:{key}"))
        return None if held is None else held.decode("utf-8", "replace")

    def swap(self, key: str, old: str, new: str, seconds: float) -> bool:
        """Replace the lease ``old`` holds on ``key`` by ``new`` for ``seconds`` (compare and set);
        swapping a token for itself renews it."""
        lkey, ms = f"{self.prefix}:l:{key}", max(1, math.ceil(seconds * 1000))
        return bool(self._run(lambda client: client.execute_command("EVAL", _SWAP, 1, lkey, old, new, ms)))

    def delete(self, key: str) -> bool:
        """Remove ``key``; True when a live entry was removed."""
        vkey = self._vkey(key)

        def op(client: Any) -> bool:
            pipe = self._pipeline(client, atomic=True)
            pipe.getrange(vkey, 0, _HEADER.size - 1)
            pipe.delete(vkey)
            head, deleted = pipe.execute()
            return bool(deleted) and self._live([_unpack(head)])[0]

        return self._run(op)

    def invalidate(self, tag: str) -> int:
        """Remove every entry carrying ``tag``; return how many live entries went."""
        tkey = self._tkey(tag)

        def op(client: Any) -> int:
            removed = 0
            while batch := client.zrange(tkey, 0, _BATCH - 1, withscores=True):
                vkeys = [self._vprefix + member for member, _ in batch]
                heads = self._heads(client, vkeys)
                doomed = [(vkey, live) for vkey, head, live in zip(vkeys, heads, self._live(heads), strict=True)
                          if head is not None and tag in _tags(head[1])]
                removed += self._delete(client, [v for v, _ in doomed], [live for _, live in doomed])
                pairs = [part for member, score in batch for part in (member, repr(score))]
                if not client.execute_command("EVAL", _UNINDEX, 1, tkey, *pairs):
                    break  # every member was re-added meanwhile: newer writes, not ours to take
            return removed

        return self._run(op)

    def clear(self) -> int:
        """Remove every key under our prefix (never FLUSHDB); return how many live entries went."""

        def op(client: Any) -> int:
            removed = 0
            for vkeys in self._scan(client, "v"):
                removed += self._delete(client, vkeys, self._live(self._heads(client, vkeys)))
            for tkeys in self._scan(client, "t"):
                self._delete(client, tkeys, [False] * len(tkeys))
            return removed

        return self._run(op)

    def keys(self) -> Iterator[str]:
        """Iterate over a snapshot of the live keys (SCAN MATCH on our value prefix). A name that
        is not UTF-8 is no key this tier wrote: skipped (and logged), the others still listed."""

        def op(client: Any) -> list[str]:
            found: list[str] = []
            foreign = 0
            for vkeys in self._scan(client, "v"):
                live = self._live(self._heads(client, vkeys))
                for vkey, ok in zip(vkeys, live, strict=True):
                    try:
                        key = vkey[len(self._vprefix):].decode("utf-8", "surrogatepass")
                    except UnicodeDecodeError:
                        foreign += 1
                        continue
                    if ok:
                        found.append(key)
            if foreign:
                level = logging.DEBUG if self._warned else logging.WARNING
                self._warned = True
                logger.log(level, "llm_memo: skipped %d Redis key name(s) under %s:v: that are not UTF-8 "
                           "(not written by llm_memo)", foreign, self.prefix)
            return found

        return iter(self._run(op))

    # ---- the event stream (llm_memo._storage.events) -------------------------------------------

    def publish(self, event: dict[bytes, bytes]) -> bytes:
        """Append ``event`` to ``{prefix}:events``, a stream of the newest _EVENTS_KEPT; return its id."""
        return self._run(lambda client: client.xadd(self._ekey, event, maxlen=_EVENTS_KEPT, approximate=False))

    def events(self, since: bytes, count: int = _BATCH) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Up to ``count`` events from the stream id ``since`` on, ``since`` itself included when it
        is still there (that is how a reader tells it missed nothing), oldest first."""
        return self._run(lambda client: [(bytes(event_id), dict(fields)) for event_id, fields
                                         in client.xrange(self._ekey, min=since, count=count)])

    def newest_event(self) -> bytes | None:
        """The id of the newest event in the stream, or None when it is empty."""
        newest = self._run(lambda client: client.xrevrange(self._ekey, count=1))
        return bytes(newest[0][0]) if newest else None

    def close(self) -> None:
        """Close the connections this tier opened; the data stays in Redis."""
        if not self._closed:
            self._closed = True
            if self._owned and self._client is not None:
                self._client.close()


def _unpack(raw: bytes) -> tuple[float, int] | None:
    """(expires_at, tags length) of a value this tier wrote, else None."""
    if len(raw) >= _HEADER.size:
        magic, expires_at, tags_length = _HEADER.unpack_from(raw)
        if magic == _MAGIC and not math.isnan(expires_at):
            return expires_at, tags_length
    return None


def _tags(blob: bytes) -> list[str]:
    with contextlib.suppress(ValueError):
        tags = json.loads(blob)
        if isinstance(tags, list):
            return tags
    return []


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


def _redact(url: str) -> str:
    """The URL without credentials or query options, for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname or ""
    with contextlib.suppress(ValueError):
        netloc = f"[{netloc}]" if ":" in netloc else netloc
        netloc += f":{parts.port}" if parts.port is not None else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
