"""RedisTier: entries shared through Redis or Redis Cluster, with server-side TTLs and a breaker."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from redis.exceptions import ResponseError

from .._logic.redact import public_url
from .redis_format import _HEADER, _INDEX, _MAGIC, _SWAP, _UNINDEX, _tags, _unpack
from .redis_link import Link, RedisUnavailable, _cluster_option, _is_cluster
from .tier import check_entry

__all__ = ["RedisTier", "RedisUnavailable"]

logger = logging.getLogger("llm_memo")
T = TypeVar("T")

_PEEK = _HEADER.size + 512  # bytes read to learn an entry's tags (longer lists: a second read)
_BATCH = 500  # keys per round trip when scanning, invalidating or clearing
_EVENTS_KEPT = 10_000  # invalidation events the stream keeps for machines that were away
_PREFIX = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
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
        # pickled as this call (a ready client cannot travel: None)
        self._made = None if client is not None else functools.partial(
            RedisTier, url, prefix=prefix, clock=clock, socket_timeout=socket_timeout, connect_timeout=connect_timeout,
            breaker_cooldown=breaker_cooldown, cluster=cluster, timer=timer, size_limit=size_limit)
        url, cluster = _cluster_option(url, cluster)
        self.prefix = prefix
        self.where = public_url(url) if client is None else repr(client)
        self.size_limit = size_limit
        self._clock = clock
        self._vprefix = f"{prefix}:v:".encode()
        self._ekey = f"{prefix}:events".encode()
        self._cluster = cluster if client is None else _is_cluster(client)
        self._link = Link(url, self._cluster, client, self.where, breaker_cooldown, timer,
                          socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout)
        self._warned = False

    def __repr__(self) -> str:
        return f"RedisTier({self.where!r}, prefix={self.prefix!r})"

    def __reduce__(self) -> Any:
        """Pickled as its configuration: the copy opens connections of its own."""
        if self._made is None:
            raise TypeError(f"{self!r} was made with client= and cannot be pickled: a client's connections "
                            "cannot travel; make the tier from a URL, or in the process that uses it")
        return self._made, ()

    @property
    def attempts(self) -> int:
        """Calls that went to the network (exact in one thread; threads racing may lose one)."""
        return self._link.attempts

    @property
    def refused(self) -> int:
        """Calls failed fast by the open breaker, without touching the network."""
        return self._link.breaker.refused

    # ---- plumbing ------------------------------------------------------------------------

    def _run(self, op: Callable[[Any], T]) -> T:
        return self._link.run(op)

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
        self._link.close()


