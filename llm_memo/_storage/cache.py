"""Cache: the tier chain (memory -> disk -> redis) and the process-wide default cache.

Reads walk the tiers in order; a hit in a lower tier is promoted to the tiers above it
with the entry's own absolute expiry, so promotion never extends a lifetime. Writes go
through to every tier. A tier that fails (full disk, locked database, Redis down) or
holds a bad entry never fails the call: the fault is logged once, counted, and the
chain goes on to the next tier or, in the end, to the real function.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .._logic.codec import (
    FLAG_PICKLE,
    FORMAT,
    CorruptEntry,
    Header,
    NewerFormat,
    Secret,
    UnencodableValue,
    UntrustedClass,
    decode_value,
    encode_value,
    pack,
    peek,
    unpack,
)
from .._logic.records import Entry, Stats
from .lease import (
    FAILED_FOR,
    RELEASED,
    RELEASED_FOR,
    Heartbeat,
    failed_marker,
    holder_alive,
    is_failed,
    new_token,
)
from .ledger import Counters, Ledger
from .memory import MemoryTier
from .tier import Tier

if TYPE_CHECKING:
    from .events import Invalidations

_KEYS_PER_EVENT = 500  # delete_many: keys named by one invalidation event

__all__ = ["Cache", "Hit", "Stored", "default_directory"]

logger = logging.getLogger("llm_memo")


class Hit(NamedTuple):
    """A value found in a tier, with what serving it saved."""

    value: Any
    tier: str
    latency: float
    tokens: int
    cost: float
    expires_at: float | None = None  # epoch seconds; None: never (or not known)


def default_directory() -> Path:
    """$LLM_MEMO_DIR, else $XDG_CACHE_HOME/llm_memo, else ~/.cache/llm_memo."""
    env = os.environ.get("LLM_MEMO_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llm_memo"


class Cache:
    """The tier hierarchy: memory, then disk, then (optionally) Redis.

    Every entry is bound to its key. With `secret` (or $LLM_MEMO_SECRET) entries are signed
    with HMAC-SHA256 and only entries signed with it are served; without one, signed entries
    are served unverified, as every entry is.

    read_only=True opens an existing disk tier and its savings ledger without writing a byte
    (a read-only mount too) and starts no invalidation listener: for looking at a cache.
    Writes to the disk tier then fail (counted, as any tier fault); no directory is created.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        memory_maxsize: int = 64 * 2**20,
        disk_size_limit: int = 2**30,
        redis_url: str | None = None,
        redis_prefix: str = "llm_memo",
        disk: bool = True,
        allow_pickle: bool = False,
        clock: Callable[[], float] | None = None,
        read_only: bool = False,
        secret: str | bytes | None = None,
    ) -> None:
        _check_size("memory_maxsize", memory_maxsize)
        _check_size("disk_size_limit", disk_size_limit)
        self._secret = _secret(secret)
        # The secret travels in the pickle (spawn workers must read signed entries); never to disk.
        self._config = dict(memory_maxsize=memory_maxsize, disk_size_limit=disk_size_limit, redis_url=redis_url,
                            redis_prefix=redis_prefix, disk=disk, allow_pickle=allow_pickle, clock=clock,
                            read_only=read_only, secret=self._secret)
        self.clock = clock or time.time
        self.allow_pickle = allow_pickle
        self.directory = Path(directory).expanduser() if directory is not None else default_directory()
        self.counters = Counters()
        self.ledger: Ledger | None = None  # lifetime savings, kept beside the disk tier's files
        self.invalidations: Invalidations | None = None  # with Redis: other machines' deletions reach us
        self._reported: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()
        self._heartbeat = Heartbeat(self._renew)
        self.memory = MemoryTier(memory_maxsize, clock=self.clock, timer=clock or time.monotonic,
                                 tags_of=_envelope_tags)
        self.tiers: list[Tier] = [self.memory]
        if disk:
            self._add_disk(disk_size_limit, read_only)
        if redis_url or os.environ.get("LLM_MEMO_REDIS_URL"):
            self._add_redis(redis_url or os.environ["LLM_MEMO_REDIS_URL"], redis_prefix, read_only)

    def _add_disk(self, size_limit: int, read_only: bool) -> None:
        from .disk import DiskTier  # diskcache and sqlite3 load only when a disk tier is wanted
        from .disk_read import ReadOnlyDiskTier

        try:
            self.tiers.append(ReadOnlyDiskTier(self.directory, clock=self.clock) if read_only
                              else DiskTier(self.directory, size_limit=size_limit, clock=self.clock))
        except Exception as exc:  # read-only or unusable directory: memory keeps working
            self._fault("disk", "open", exc, None)
        else:
            # opens its file on first write (read_only: never writes it)
            self.ledger = Ledger(self.directory, clock=self.clock, read_only=read_only)

    def _add_redis(self, url: str, prefix: str, read_only: bool) -> None:
        try:
            from .redis import RedisTier
        except ImportError as exc:
            raise ImportError(
                "a Redis tier needs the redis package: pip install 'llm_memo[redis]'"
            ) from exc
        from .events import Invalidations

        shared = RedisTier(url, prefix=prefix, clock=self.clock)
        if read_only:
            self.tiers.append(shared)
            return
        disk = any(tier.name == "disk" for tier in self.tiers)
        self.invalidations = Invalidations(shared, list(self.tiers), self.directory if disk else None,
                                           report=lambda op, exc: self._warn("redis", op, exc))
        self.tiers.append(shared)
        self.invalidations.start()

    # ---- the hot path ------------------------------------------------------------------

    def get(self, key: str, stats: Counters | None = None) -> Hit | None:
        """The live value under `key` from the first tier that has it, promoted upwards."""
        return self.get_memory(key, stats) or self._get(key, self.tiers, stats, start=1)

    def get_memory(self, key: str, stats: Counters | None = None) -> Hit | None:
        """Like get, from the memory tier only (never blocks: safe inside an event loop).

        The hot path: the memory tier holds envelopes this process wrote, so there is no
        checksum to verify and no metadata to read, just the header and the value.
        """
        data = self.memory.get(key)
        if data is None:
            return None
        try:
            expiry, latency, tokens, cost, flags, value_json = peek(data, key)
            if expiry <= self.clock():  # NaN (never expires) compares False
                return None
            value = decode_value(value_json, flags, allow_pickle=self.allow_pickle)
        except (CorruptEntry, UntrustedClass) as exc:
            self._bad_entry(self.memory, key, exc, stats)
            return None
        return Hit(value, "memory", latency, tokens, cost, None if expiry != expiry else expiry)

    def get_lower(self, key: str, stats: Counters | None = None) -> Hit | None:
        """Like get, skipping the memory tier (for a worker thread; promotes into memory)."""
        return self._get(key, self.tiers, stats, start=1)

    def _get(self, key: str, tiers: Sequence[Tier], stats: Counters | None, start: int = 0) -> Hit | None:
        now = self.clock()
        for i in range(start, len(tiers)):
            tier = tiers[i]
            try:
                data = tier.get(key)
            except Exception as exc:
                self._fault(tier.name, "read", exc, stats)
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
                self._bad_entry(tier, key, exc, stats, meta)
                continue
            if i:
                if data[2] != FORMAT:  # written by 0.1.0: the copies above are bound to the key
                    data = pack(key, value_json, meta, header, secret=self._secret)
                self._promote(key, data, header, meta, tiers[:i], stats)
            return Hit(value, tier.name, header.latency, header.tokens, header.cost, header.expires_at)
        return None

    def _promote(self, key: str, data: bytes, header: Header, meta: bytes, upper: Sequence[Tier],
                 stats: Counters | None) -> None:
        tags = _tags_of(meta) if len(upper) > 1 else None  # None: memory alone reads them when asked
        for tier in upper:
            try:
                tier.set(key, data, header.expires_at, tags)
            except Exception as exc:
                self._fault(tier.name, "write", exc, stats)

    def set(self, key: str, value: Any, *, lifetime: float | None, tags: Sequence[str] = (),
            metadata: Mapping[str, Any] | None = None, latency: float = 0.0, tokens: int = 0,
            cost: float = 0.0, stats: Counters | None = None) -> bool:
        """Store `value` for `lifetime` seconds (None: no expiry) in every tier; False if not stored."""
        built = self._envelope(key, value, lifetime, tags, metadata, latency, tokens, cost, stats)
        if built is None:
            return False
        data, expires_at, tags, flags = built
        return self._write(key, data, expires_at, tags, flags, stats)

    def _write(self, key: str, data: bytes, expires_at: float | None, tags: Sequence[str], flags: int,
               stats: Counters | None) -> bool:
        stored = False
        for tier in self.tiers:
            if flags & FLAG_PICKLE and getattr(tier, "shared", False):
                continue  # pickles never go to a server other machines read
            try:
                tier.set(key, data, expires_at, tags)
                stored = True
            except Exception as exc:
                self._fault(tier.name, "write", exc, stats)
        return stored

    def _envelope(self, key: str, value: Any, lifetime: float | None, tags: Sequence[str],
                  metadata: Mapping[str, Any] | None, latency: float, tokens: int, cost: float,
                  stats: Counters | None) -> tuple[bytes, float | None, tuple[str, ...], int] | None:
        try:
            value_json, flags = encode_value(value, allow_pickle=self.allow_pickle)
        except UnencodableValue as exc:
            self._fault("codec", "encode", exc, stats)
            return None
        now = self.clock()
        expires_at = None if lifetime is None else now + lifetime
        tags = tuple(dict.fromkeys(tags))
        meta = {**(metadata or {}), "tags": list(tags)}
        data = pack(key, value_json, meta, Header(expires_at, now, latency, tokens, cost, flags), secret=self._secret)
        return data, expires_at, tags, flags

    def _pickles_from(self, tier: Tier) -> bool:
        """Pickles load only from this machine's own tiers, and only when allowed."""
        return self.allow_pickle and not getattr(tier, "shared", False)

    # ---- faults ------------------------------------------------------------------------

    def _fault(self, tier: str, op: str, exc: BaseException, stats: Counters | None) -> None:
        self._count_error(stats)
        self._warn(tier, op, exc)

    def _count_error(self, stats: Counters | None) -> None:
        self.counters.error()
        if stats is not None:
            stats.error()
        if self.ledger is not None:
            self.ledger.error()

    def _warn(self, tier: str, op: str, exc: BaseException) -> None:
        """Log a fault: a warning the first time per tier and kind, DEBUG after."""
        signature = (tier, type(exc).__name__)  # one outage is one warning, whatever it interrupts
        with self._lock:
            first = signature not in self._reported
            self._reported.add(signature)
        level = logging.WARNING if first else logging.DEBUG
        logger.log(level, "llm_memo: %s tier %s failed (%s: %s); the call goes on without it",
                   tier, op, type(exc).__name__, exc)

    def _bad_entry(self, tier: Tier, key: str, exc: CorruptEntry | UntrustedClass, stats: Counters | None,
                   meta: bytes = b"") -> None:
        """Count and log a bad entry, and delete it (a newer format's entry and a refused class stay)."""
        if isinstance(exc, UntrustedClass):
            self._refused(tier.name, exc, meta, stats)
            return  # not corrupt: a process that allows the class can read it
        self._fault(tier.name, "decode", exc, stats)
        if isinstance(exc, NewerFormat):
            return  # a newer llm_memo sharing this cache can still read it
        try:
            tier.delete(key)
        except Exception as err:
            self._fault(tier.name, "delete", err, stats)

    def _refused(self, tier: str, exc: UntrustedClass, meta: bytes, stats: Counters | None) -> None:
        """A stored class this process does not rebuild: counted, and a warning the first time for
        each function and class (every function it happens to hears of it)."""
        self._count_error(stats)
        function = _json(meta).get("function") if meta else None
        function = function[:200] if isinstance(function, str) and function.isprintable() else "a cached function"
        with self._lock:
            first = ("class", function, exc.path) not in self._reported
            self._reported.add(("class", function, exc.path))
        logger.log(logging.WARNING if first else logging.DEBUG,
                   "llm_memo: %s: the stored answer in the %s tier was not served, because its class %s %s. "
                   "The function ran instead. To serve it, call %s once before calling %s.",
                   function, tier, exc.path, exc.reason, exc.fix, function)

    # ---- management --------------------------------------------------------------------

    def get_entry(self, key: str) -> Entry | None:
        """The stored entry under `key` with its metadata, without promoting it."""
        now = self.clock()
        for tier in self.tiers:
            try:
                data = tier.get(key)
                if data is None:
                    continue
                header, meta, value_json = unpack(data, key, secret=self._secret)
                if header.expires_at is not None and header.expires_at <= now:
                    continue
                value = decode_value(value_json, header.flags, allow_pickle=self._pickles_from(tier))
            except CorruptEntry as exc:
                self._bad_entry(tier, key, exc, None)
                continue
            except Exception as exc:
                self._fault(tier.name, "read", exc, None)
                continue
            metadata = _json(meta)
            tags = tuple(metadata.pop("tags", ()))
            return Entry(key, value, header.created_at, header.expires_at, tags, tier.name, metadata,
                         header.latency, header.tokens, header.cost)
        return None

    def lease(self, key: str, seconds: float) -> str | None:
        """Claim the computation of `key` across processes (and machines, with Redis).

        Returns a token to hand back to `release` when this process should compute, and None
        while another live holder has it. The lowest tier that can arbitrate decides (Redis
        over disk); when none can, or it fails, the answer is "compute": a lease only saves
        duplicate work, it must never stop a call. A holder on this host that died is replaced
        at once; a holder whose call failed lets every waiter compute at once; a held lease is
        renewed while this process lives, so a call longer than `seconds` still runs once.
        """
        return self.claim(key, seconds)[0]

    def claim(self, key: str, seconds: float) -> tuple[str | None, bool]:
        """`lease`, and whether another holder let the key go in the last few seconds: its answer may
        have been stored after this caller read the tiers, which it then reads again."""
        token = new_token()
        tier = self._arbiter()
        if tier is None:
            return token, False
        recent = False
        try:
            if not tier.lease(key, token, seconds):  # type: ignore[attr-defined]
                holder = tier.holder(key)  # type: ignore[attr-defined]
                if holder is not None and is_failed(holder):
                    return token, False  # not held: every waiter runs now rather than one after another
                recent = holder == RELEASED
                if holder is None or (not recent and holder_alive(holder)) \
                        or not tier.swap(key, holder, token, seconds):  # type: ignore[attr-defined]
                    return None, False
        except Exception as exc:
            self._fault(tier.name, "lease", exc, None)
            return token, False
        self._heartbeat.hold(key, token, seconds)
        return token, recent

    def release(self, key: str, token: str, failed: bool = False) -> None:
        """Give back a lease taken with `lease`. It is left as a short-lived marker: of a finished
        call (the next taker reads the tiers again), or of a failed one (`failed`: the waiters run
        at once instead of taking the lease in turn)."""
        self._heartbeat.drop(key, token)
        tier = self._arbiter()
        if tier is not None:
            marker, seconds = (failed_marker(token), FAILED_FOR) if failed else (RELEASED, RELEASED_FOR)
            try:
                tier.swap(key, token, marker, seconds)  # type: ignore[attr-defined]
            except Exception as exc:
                self._fault(tier.name, "release", exc, None)

    def _renew(self, key: str, token: str, seconds: float) -> bool:
        tier = self._arbiter()
        try:
            return tier is not None and bool(tier.swap(key, token, token, seconds))  # type: ignore[attr-defined]
        except Exception as exc:
            self._fault(tier.name, "lease", exc, None)  # type: ignore[union-attr]
            return False

    def _arbiter(self) -> Tier | None:
        """The tier whose leases every process sharing this cache sees: the lowest that has them."""
        return next((tier for tier in reversed(self.tiers) if hasattr(tier, "lease")), None)

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
                self._broadcast("keys", _json_list(batch))
                batch = []
        if batch:
            self._broadcast("keys", _json_list(batch))
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
        seen: set[str] = set()
        for tier in self.tiers:
            try:
                for key in tier.keys():  # noqa: SIM118 (a Tier, not a dict)
                    if key not in seen:
                        seen.add(key)
                        yield key
            except Exception as exc:
                self._fault(tier.name, "scan", exc, None)

    # ---- raw entries (listing, export and import, without decoding values) -------------

    def scan(self, prefix: str = "") -> Iterator[Stored]:
        """Every live entry whose key starts with `prefix`, once, from the first tier holding it."""
        seen: set[str] = set()
        for tier in self.tiers:
            try:
                keys = [k for k in tier.keys() if k.startswith(prefix) and k not in seen]  # noqa: SIM118
            except Exception as exc:
                self._fault(tier.name, "scan", exc, None)
                continue
            for key in keys:
                try:
                    data = tier.get(key)
                    if data is None:
                        continue
                    header, meta, value_json = unpack(data, key, secret=self._secret)
                except Exception as exc:
                    self._fault(tier.name, "read", exc, None)
                    continue
                seen.add(key)
                yield Stored(key, tier.name, header, _json(meta), value_json, len(data))

    def scan_expired(self) -> Iterator[Stored]:
        """Entries past their lifetime that a tier still stores (the disk tier keeps them until
        read or culled; memory and Redis drop them themselves). Never served; listed to purge."""
        for tier in self.tiers:
            if not hasattr(tier, "expired"):
                continue
            try:
                rows = tier.expired()
            except Exception as exc:
                self._fault(tier.name, "scan", exc, None)
                continue
            for key, data in rows:
                try:
                    header, meta, value_json = unpack(data, key)
                except CorruptEntry:
                    continue  # damaged as well as expired: get() drops it when it meets it
                yield Stored(key, tier.name, header, _json(meta), value_json, len(data))

    def __contains__(self, key: object) -> bool:
        """True if some tier holds a live entry under `key` (nothing decoded, nothing promoted)."""
        if not isinstance(key, str):
            return False
        for tier in self.tiers:
            try:
                if tier.get(key) is not None:
                    return True
            except Exception as exc:
                self._fault(tier.name, "read", exc, None)
        return False

    def restore(self, key: str, header: Header, metadata: Mapping[str, Any], value_json: bytes) -> bool:
        """Store an exported entry as it was (its own times and savings); False if no tier took it."""
        tags = tuple(t for t in metadata.get("tags", ()) if isinstance(t, str))
        data = pack(key, value_json, metadata, header, secret=self._secret)
        return self._write(key, data, header.expires_at, tags, header.flags, None)

    def usage(self) -> dict[str, tuple[int, int]]:
        """{tier name: (entries, bytes)}; -1 where a tier cannot tell."""
        out = {}
        for tier in self.tiers:
            try:
                out[tier.name] = (len(tier), tier.volume())  # type: ignore[arg-type, attr-defined]
            except Exception:
                out[tier.name] = (-1, -1)
        return out

    def _each(self, op: Callable[[Tier], int]) -> int:
        """Run `op` on every tier; the largest count (tiers hold copies of the same entries)."""
        counts = [0]
        for tier in self.tiers:
            try:
                counts.append(op(tier))
            except Exception as exc:
                self._fault(tier.name, "manage", exc, None)
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
        self._heartbeat.clear()
        if self.invalidations is not None:
            self.invalidations.close()
        if self.ledger is not None:
            self.ledger.close()
        for tier in self.tiers:
            try:
                tier.close()
            except Exception as exc:
                self._fault(tier.name, "close", exc, None)

    def __reduce__(self) -> Any:
        """Pickled (spawn, forkserver, joblib workers) as its configuration: the copy reopens the
        same directory and servers with connections of its own; memory contents stay behind."""
        return _rebuild, (str(self.directory), self._config)

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Cache({str(self.directory)!r}, tiers={[t.name for t in self.tiers]})"

    def _repr_html_(self) -> str:
        import html

        stats = self.stats()
        tiers = "".join(f"<tr><td>{html.escape(name)}</td><td>{n:,}</td><td>{size:,}</td></tr>"
                        for name, (n, size) in self.usage().items())
        return (f"<table><caption>llm_memo cache <code>{html.escape(str(self.directory))}</code></caption>"
                f"<tr><th>tier</th><th>entries</th><th>bytes</th></tr>{tiers}</table>" + stats._repr_html_())


class Stored(NamedTuple):
    """An entry as stored: header, metadata (with "tags") and the undecoded value JSON."""

    key: str
    tier: str
    header: Header
    metadata: dict[str, Any]
    value_json: bytes
    size: int  # bytes of the envelope


def _rebuild(directory: str, config: dict[str, Any]) -> Cache:
    return Cache(directory, **config)


def function_tag(function: Any) -> str:
    """The tag every entry of a cached function carries: "fn:[namespace/]module.qualname"."""
    if isinstance(function, str):
        return f"fn:{function}"
    tag = getattr(function, "__llm_memo_tag__", None)
    if isinstance(tag, str):
        return tag
    target = getattr(function, "__wrapped__", function)
    name = f"{target.__module__}.{target.__qualname__}"
    return f"fn:{name}"


def _json(meta: bytes) -> dict[str, Any]:
    import orjson

    try:
        loaded = orjson.loads(meta)
    except orjson.JSONDecodeError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _json_list(keys: list[str]) -> str:
    import orjson

    return orjson.dumps(keys).decode()


def _envelope_tags(data: bytes) -> tuple[str, ...]:
    return _tags_of(unpack(data, None, verify=False)[1])


def _tags_of(meta: bytes) -> tuple[str, ...]:
    tags = _json(meta).get("tags", ())
    return tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else ()


def _secret(secret: object) -> Secret | None:
    """The HMAC key: `secret` (str or bytes), else $LLM_MEMO_SECRET, else None (entries unsigned)."""
    if secret is None:
        secret = os.environ.get("LLM_MEMO_SECRET") or None
        if secret is None:
            return None
    if not isinstance(secret, (str, bytes)):
        raise TypeError(f"secret must be a str or bytes (the key entries are signed with); "
                        f"got secret of type {type(secret).__name__}")
    if not secret:
        raise ValueError("secret must not be empty: pass a long random string, or secret=None for unsigned entries")
    return Secret(secret.encode("utf-8", "surrogatepass") if isinstance(secret, str) else secret)


def _check_size(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a whole number of bytes >= 0; got {name}={value!r}")
