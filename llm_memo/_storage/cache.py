"""Cache: the tier chain (memory -> disk -> redis, or the tiers it is given) and its entries.

Reads walk the tiers in order; a hit in a lower tier is promoted to the tiers above it
with the entry's own absolute expiry, so promotion never extends a lifetime. Writes go
through to every tier. A tier that fails (full disk, locked database, Redis down) or
holds a bad entry never fails the call: the fault is logged once, counted, and the
chain goes on to the next tier or, in the end, to the real function.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._logic.codec import (
    FLAG_PICKLE,
    FORMAT,
    CorruptEntry,
    Header,
    UnencodableValue,
    UntrustedClass,
    decode_value,
    pack,
    peek,
    unpack,
)
from .._logic.records import Entry, Stats
from . import listing
from .chain import DEFAULTS, check_picklable, default_directory, default_tiers, given_tiers, listen
from .counters import Counters
from .envelope import Hit, Stored, build, function_tag, keys_json, signing_key, tags_of
from .faults import Faults
from .lease import Leasing
from .ledger import Ledger
from .memory import MemoryTier
from .tier import Persistent, Tier, has, is_shared

_KEYS_PER_EVENT = 500  # delete_many: keys named by one invalidation event

__all__ = ["Cache", "Hit", "Stored", "default_directory"]


class Cache:
    """A chain of tiers: memory, then disk, then (optionally) Redis, or the tiers it is given.

    Every entry is bound to its key. With `secret` (or $LLM_MEMO_SECRET) entries are signed
    with HMAC-SHA256 and only entries signed with it are served; without one, signed entries
    are served unverified, as every entry is.

    read_only=True opens an existing disk tier and its savings ledger without writing a byte
    (a read-only mount too) and starts no invalidation listener: for looking at a cache.
    Writes to the disk tier then fail (counted, as any tier fault); no directory is created.

    tiers=[...] replaces the default chain with exactly these tiers, fastest first: objects with
    a ``name`` and the methods get, set, delete, invalidate, clear, close and keys (see
    llm_memo._storage.tier.Tier). A MemoryTier first serves the hot path. The savings ledger
    lives in the directory of a disk tier among them; without one, ``stats()`` counts this
    process only. memory_maxsize, disk_size_limit, redis_url, redis_prefix, disk and
    read_only describe the default tiers and are refused with tiers=. A Cache with tiers=
    pickles its tier objects (a tier that cannot be pickled makes pickling the cache raise
    TypeError); the default chain pickles as its configuration.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        memory_maxsize: int = DEFAULTS["memory_maxsize"],
        disk_size_limit: int = DEFAULTS["disk_size_limit"],
        redis_url: str | None = None,
        redis_prefix: str = DEFAULTS["redis_prefix"],
        disk: bool = True,
        allow_pickle: bool = False,
        clock: Callable[[], float] | None = None,
        read_only: bool = False,
        secret: str | bytes | None = None,
        tiers: Sequence[Tier] | None = None,
    ) -> None:
        _check_size("memory_maxsize", memory_maxsize)
        _check_size("disk_size_limit", disk_size_limit)
        self._secret = signing_key(secret)
        options = dict(memory_maxsize=memory_maxsize, disk_size_limit=disk_size_limit, redis_url=redis_url,
                       redis_prefix=redis_prefix, disk=disk, read_only=read_only)
        # The secret travels in the pickle (spawn workers must read signed entries); never to disk.
        self._config = dict(options, allow_pickle=allow_pickle, clock=clock, secret=self._secret, tiers=None)
        self.clock = clock or time.time
        self.allow_pickle = allow_pickle
        self.counters = Counters()
        self._faults = Faults(self.counters)
        if tiers is None:
            self.directory = Path(directory).expanduser() if directory is not None else default_directory()
            self.tiers = default_tiers(self.directory, options, clock, self._faults)
        else:
            self.tiers, self.directory = given_tiers(tiers, directory, options)
            self._config["tiers"] = tuple(self.tiers)  # pickled with the cache
        self._leases = Leasing(self.tiers, self._faults.fault)
        first = self.tiers[0]
        self.memory = first if isinstance(first, MemoryTier) else None  # the hot path's tier
        self._own_memory = first if tiers is None else None  # reads an entry's tags when it must
        self._below = 0 if self.memory is None else 1  # where get_lower starts
        # lifetime savings, kept beside a disk tier's files (read_only: never written)
        persistent = any(has(tier, Persistent) for tier in self.tiers)
        self.ledger = Ledger(self.directory, clock=self.clock, read_only=read_only) if persistent else None
        self._faults.ledger = self.ledger
        # with Redis: other machines' deletions reach our local tiers
        self.invalidations = None if read_only else listen(self.tiers, self.directory if persistent else None,
                                                           self._faults.warn)

    # ---- the hot path ------------------------------------------------------------------

    def get(self, key: str, stats: Counters | None = None) -> Hit | None:
        """The live value under `key` from the first tier that has it, promoted upwards."""
        return self.get_memory(key, stats) or self._get(key, stats, self._below)

    def get_memory(self, key: str, stats: Counters | None = None) -> Hit | None:
        """Like get, from the memory tier only (never blocks: safe inside an event loop).

        The hot path: the memory tier holds envelopes this process wrote, so there is no
        checksum to verify and no metadata to read, just the header and the value. None
        when the chain has no memory tier first.
        """
        memory = self.memory
        if memory is None:
            return None
        data = memory.get(key)
        if data is None:
            return None
        try:
            expiry, latency, tokens, cost, flags, value_json = peek(data, key)
            if expiry <= self.clock():  # NaN (never expires) compares False
                return None
            value = decode_value(value_json, flags, allow_pickle=self.allow_pickle)
        except (CorruptEntry, UntrustedClass) as exc:
            self._faults.bad_entry(memory, key, exc, stats)
            return None
        return Hit(value, memory.name, latency, tokens, cost, None if expiry != expiry else expiry)

    def get_lower(self, key: str, stats: Counters | None = None) -> Hit | None:
        """Like get, skipping the memory tier (for a worker thread; promotes into memory)."""
        return self._get(key, stats, self._below)

    def _get(self, key: str, stats: Counters | None, start: int) -> Hit | None:
        now, tiers = self.clock(), self.tiers
        for i in range(start, len(tiers)):
            tier = tiers[i]
            try:
                data = tier.get(key)
            except Exception as exc:
                self._faults.fault(tier.name, "read", exc, stats)
                continue
            if data is None:
                continue
            meta = b""
            try:
                header, meta, value_json = unpack(data, key, verify=tier is not self.memory, secret=self._secret)
                if header.expires_at is not None and header.expires_at <= now:
                    continue
                value = decode_value(value_json, header.flags, allow_pickle=self._pickles_from(tier))
            except (CorruptEntry, UntrustedClass) as exc:
                self._faults.bad_entry(tier, key, exc, stats, meta)
                continue
            if i:
                if data[2] != FORMAT:  # written by 0.1.0: the copies above are bound to the key
                    data = pack(key, value_json, meta, header, secret=self._secret)
                self._promote(key, data, header, meta, tiers[:i], stats)
            return Hit(value, tier.name, header.latency, header.tokens, header.cost, header.expires_at)
        return None

    def _promote(self, key: str, data: bytes, header: Header, meta: bytes, upper: Sequence[Tier],
                 stats: Counters | None) -> None:
        # None: the memory tier the cache made reads the tags from the entry when asked
        tags = None if len(upper) == 1 and upper[0] is self._own_memory else tags_of(meta)
        for tier in upper:
            try:
                tier.set(key, data, header.expires_at, tags)  # type: ignore[arg-type]
            except Exception as exc:
                self._faults.fault(tier.name, "write", exc, stats)

    def set(self, key: str, value: Any, *, lifetime: float | None, tags: Sequence[str] = (),
            metadata: Mapping[str, Any] | None = None, latency: float = 0.0, tokens: int = 0,
            cost: float = 0.0, stats: Counters | None = None) -> bool:
        """Store `value` for `lifetime` seconds (None: no expiry) in every tier; False if not stored."""
        try:
            data, expires_at, unique, flags = build(key, value, self.clock(), lifetime, tags, metadata,
                                                    (latency, tokens, cost), allow_pickle=self.allow_pickle,
                                                    secret=self._secret)
        except UnencodableValue as exc:
            self._faults.fault("codec", "encode", exc, stats)
            return False
        return self._write(key, data, expires_at, unique, flags, stats)

    def _write(self, key: str, data: bytes, expires_at: float | None, tags: Sequence[str], flags: int,
               stats: Counters | None) -> bool:
        stored = False
        for tier in self.tiers:
            if flags & FLAG_PICKLE and is_shared(tier):
                continue  # pickles never go to a server other machines read
            try:
                tier.set(key, data, expires_at, tags)
                stored = True
            except Exception as exc:
                self._faults.fault(tier.name, "write", exc, stats)
        return stored

    def _pickles_from(self, tier: Tier) -> bool:
        """Pickles load only from this machine's own tiers, and only when allowed."""
        return self.allow_pickle and not is_shared(tier)

    # ---- leases ------------------------------------------------------------------------

    def lease(self, key: str, seconds: float) -> str | None:
        """Claim the computation of `key` across processes (and machines, with Redis).

        Returns a token to hand back to `release` when this process should compute, and None
        while another live holder has it. The lowest tier that can arbitrate decides (Redis
        over disk); when none can, or it fails, the answer is "compute": a lease only saves
        duplicate work, it must never stop a call. A holder on this host that died is replaced
        at once; a holder whose call failed lets every waiter compute at once; a held lease is
        renewed while this process lives, so a call longer than `seconds` still runs once.
        """
        return self._leases.take(key, seconds)[0]

    def claim(self, key: str, seconds: float, renew: bool = True) -> tuple[str | None, bool]:
        """`lease`, and whether another holder let the key go in the last few seconds: its answer may
        have been stored after this caller read the tiers, which it then reads again. `renew`: keep
        the lease while this process lives (a stream's lease is not: its reader may never finish).
        Unlike `lease`, a lease this process holds already does not make the caller wait."""
        return self._leases.take(key, seconds, renew, mine=True)

    def release(self, key: str, token: str, failed: bool = False) -> None:
        """Give back a lease taken with `lease`. It is left as a short-lived marker: of a finished
        call (the next taker reads the tiers again), or of a failed one (`failed`: the waiters run
        at once instead of taking the lease in turn)."""
        self._leases.give_back(key, token, failed)

    # ---- management --------------------------------------------------------------------

    def get_entry(self, key: str) -> Entry | None:
        """The stored entry under `key` with its metadata, without promoting it."""
        return listing.find_entry(self.tiers, key, self.clock(), self._secret, self.allow_pickle, self._faults)

    def delete(self, key: str) -> bool:
        """Remove `key` from every tier (other machines' copies too, with Redis); True if any tier had it."""
        return self.delete_many([key]) > 0

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove each of `keys` from every tier, telling other machines in a few events rather than
        one per key; return how many live entries went."""
        removed, batch = 0, []
        for key in keys:
            removed += self._each(lambda tier, key=key: int(tier.delete(key))) > 0
            batch.append(key)
            if len(batch) == _KEYS_PER_EVENT:
                self._broadcast("keys", keys_json(batch))
                batch = []
        if batch:
            self._broadcast("keys", keys_json(batch))
        return removed

    def invalidate(self, *, tag: str | None = None, function: Any = None, model: str | None = None) -> int:
        """Remove entries by tag, by cached function (object or "module.qualname") or by model."""
        chosen = [t for t in (tag, function_tag(function) if function is not None else None,
                              f"model:{model}" if model is not None else None) if t is not None]
        if not chosen:
            raise ValueError("invalidate() needs tag=, function= or model=; to remove everything use clear()")
        removed = sum(self._each(lambda tier, t=t: tier.invalidate(t)) for t in chosen)
        for t in chosen:
            self._broadcast("tag", t)
        return removed

    def clear(self) -> int:
        """Remove every entry from every tier (other machines' copies too, with Redis); return how many went."""
        removed = self._each(lambda tier: tier.clear())
        self._broadcast("clear")
        return removed

    def _broadcast(self, op: str, arg: str = "") -> None:
        if self.invalidations is not None:
            self.invalidations.publish(op, arg)

    def keys(self) -> Iterator[str]:
        """Every live key, each once."""
        return listing.live_keys(self.tiers, self._faults)

    # ---- raw entries (listing, export and import, without decoding values) -------------

    def scan(self, prefix: str = "") -> Iterator[Stored]:
        """Every live entry whose key starts with `prefix`, once, from the first tier holding it."""
        return listing.scan(self.tiers, prefix, self._secret, self._faults)

    def scan_expired(self) -> Iterator[Stored]:
        """Entries past their lifetime that a tier still stores (the disk tier keeps them until
        read or culled; memory and Redis drop them themselves). Never served; listed to purge."""
        return listing.scan_expired(self.tiers, self._faults)

    def __contains__(self, key: object) -> bool:
        """True if some tier holds a live entry under `key` (nothing decoded, nothing promoted)."""
        return isinstance(key, str) and listing.holds(self.tiers, key, self._faults)

    def restore(self, key: str, header: Header, metadata: Mapping[str, Any], value_json: bytes) -> bool:
        """Store an exported entry as it was (its own times and savings); False if no tier took it."""
        tags = tuple(t for t in metadata.get("tags", ()) if isinstance(t, str))
        data = pack(key, value_json, metadata, header, secret=self._secret)
        return self._write(key, data, header.expires_at, tags, header.flags, None)

    def usage(self) -> dict[str, tuple[int, int]]:
        """{tier name: (entries, bytes)}; -1 where a tier cannot tell."""
        return listing.usage(self.tiers)

    def _each(self, op: Callable[[Tier], int]) -> int:
        """Run `op` on every tier; the largest count (tiers hold copies of the same entries)."""
        counts = [0]
        for tier in self.tiers:
            try:
                counts.append(op(tier))
            except Exception as exc:
                self._faults.fault(tier.name, "manage", exc, None)
        return max(counts)

    def stats(self) -> Stats:
        """Lifetime hits, misses, bypasses, errors and savings of this cache's directory.

        Sums every process that used the directory (the persisted ledger, plus what this
        process has not written yet). ``cache.counters.snapshot()`` is this process alone;
        a cache without a disk tier has only that.
        """
        totals = self.ledger.totals() if self.ledger is not None else None
        return totals[""] if totals is not None else self.counters.snapshot()

    def close(self) -> None:
        """Close every tier (persistent tiers keep their data) and write the savings ledger."""
        self._leases.stop()
        if self.invalidations is not None:
            self.invalidations.close()
        if self.ledger is not None:
            self.ledger.close()
        for tier in self.tiers:
            try:
                tier.close()
            except Exception as exc:
                self._faults.fault(tier.name, "close", exc, None)

    def __reduce__(self) -> Any:
        """Pickled (spawn, forkserver, joblib workers) as its configuration: the copy reopens the
        same directory and servers with connections of its own; memory contents stay behind.
        With tiers=, the tier objects are pickled: each must be picklable."""
        check_picklable(self._config["tiers"] or ())
        return _rebuild, (str(self.directory), self._config)

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Cache({str(self.directory)!r}, tiers={[t.name for t in self.tiers]})"

    def _repr_html_(self) -> str:
        return listing.shown_html(self.directory, self.usage(), self.stats())


def _rebuild(directory: str, config: dict[str, Any]) -> Cache:
    return Cache(directory, **config)


def _check_size(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a whole number of bytes >= 0; got {name}={value!r}")
