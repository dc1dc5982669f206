"""The Tier protocol (a store of bytes under opaque keys, with an absolute expiry and tags) and the
small capability protocols a tier may add: the cache looks each one up with isinstance."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["EventStream", "Expiring", "Leases", "Persistent", "Shared", "Sized", "Tier", "check_entry",
           "check_tiers", "has", "is_shared"]


@runtime_checkable
class Tier(Protocol):
    """A byte store the cache engine chains (memory -> disk -> redis).

    Keys are opaque strings (the engine's 64-char hex digests) and tags are short opaque
    strings ("fn:app.ask"); a tier never interprets either. ``expires_at`` is absolute epoch
    seconds on the cache's wall clock (the tier's injected ``clock``); ``None`` never expires.

    - ``get`` returns ``None`` when the key is absent, expired, or holds a row the tier did
      not write (it drops such rows). It returns the bytes as stored: checking the payload
      (checksum, format) is the codec's job, so that the engine sees and counts damage.
    - ``set`` replaces the value and the tags. An ``expires_at`` not after now, or a value
      larger than the tier's limit, stores nothing and removes any older value for the key.
    - ``delete``/``invalidate``/``clear`` return how many live entries they removed.
    - ``keys`` yields live keys (a snapshot).
    - ``close`` is idempotent; any other call on a closed tier raises ``RuntimeError``.

    Caller mistakes (``data`` not bytes, ``tags`` a bare str) raise ``TypeError``.
    Infrastructure faults raise (``OSError`` including ``TimeoutError``, ``sqlite3.Error``,
    redis errors); the engine catches them, counts them and falls through.
    """

    name: str

    def get(self, key: str) -> bytes | None:
        """Return the live value stored under ``key``, or None."""
        ...

    def set(
        self, key: str, data: bytes, expires_at: float | None, tags: Sequence[str] = ()
    ) -> None:
        """Store ``data`` under ``key`` until ``expires_at``, carrying ``tags``."""
        ...

    def delete(self, key: str) -> bool:
        """Remove ``key``; True when a live entry was removed."""
        ...

    def invalidate(self, tag: str) -> int:
        """Remove every entry carrying ``tag``; return how many live entries went."""
        ...

    def clear(self) -> int:
        """Remove everything; return how many live entries went."""
        ...

    def close(self) -> None:
        """Release the tier's resources (persistent tiers keep their data)."""
        ...

    def keys(self) -> Iterator[str]:
        """Iterate over a snapshot of the live keys."""
        ...


@runtime_checkable
class Leases(Protocol):
    """A tier that arbitrates who computes a key: every process (or machine) sharing it sees its
    leases. The cache asks the lowest tier that has them. Tokens are opaque strings."""

    def lease(self, key: str, token: str, seconds: float) -> bool:
        """Take the computation of ``key`` for ``seconds`` unless a live lease holds it."""
        ...

    def holder(self, key: str) -> str | None:
        """The token of the live lease on ``key``, if any."""
        ...

    def swap(self, key: str, old: str, new: str, seconds: float) -> bool:
        """Replace the lease ``old`` holds on ``key`` by ``new`` for ``seconds`` (compare and set):
        renewing is swapping a token for itself, and a holder gives a lease back by swapping in a
        short-lived marker."""
        ...


@runtime_checkable
class Expiring(Protocol):
    """A tier that keeps entries past their expiry until read or culled (the disk tier): the
    cache lists them so that they can be purged."""

    def expired(self) -> list[tuple[str, bytes]]:
        """(key, data) of the entries that expired but are still stored."""
        ...


@runtime_checkable
class Sized(Protocol):
    """A tier that can tell how many live entries and how many bytes it holds."""

    def volume(self) -> int:
        """Bytes held."""
        ...

    def __len__(self) -> int:
        ...


@runtime_checkable
class Shared(Protocol):
    """A tier that other machines read too (Redis) when its ``shared`` is true: the cache never
    writes pickled entries to it, nor unpickles what it reads from it."""

    shared: bool


@runtime_checkable
class Persistent(Protocol):
    """A tier that keeps its entries in ``directory`` on this machine (the disk tier): the cache
    keeps its savings ledger and its invalidation records there too."""

    directory: str


@runtime_checkable
class EventStream(Protocol):
    """A shared tier that carries invalidation events between machines (a Redis stream), read by
    llm_memo._storage.events. ``where`` (no credentials) and ``prefix`` name the stream."""

    where: str
    prefix: str

    def publish(self, event: dict[bytes, bytes]) -> bytes:
        """Append ``event``; return its id."""
        ...

    def events(self, since: bytes, count: int = ...) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Up to ``count`` events from the id ``since`` on, ``since`` included, oldest first."""
        ...

    def newest_event(self) -> bytes | None:
        """The id of the newest event, or None when there is none."""
        ...


_HAS: dict[tuple[type, type], bool] = {}


def has(tier: object, capability: type) -> bool:
    """isinstance(tier, capability) for a capability protocol, decided once per tier class: a
    runtime protocol check walks every member each time, which the lease path cannot afford."""
    known = _HAS.get((type(tier), capability))
    if known is None:
        known = _HAS[type(tier), capability] = isinstance(tier, capability)
    return known


def is_shared(tier: object) -> bool:
    """True for a tier other machines read too."""
    return has(tier, Shared) and tier.shared is True  # type: ignore[attr-defined]


_TIER_METHODS = ("get", "set", "delete", "invalidate", "clear", "close", "keys")


def check_tiers(tiers: Any) -> list[Tier]:
    """The tiers a Cache is given with ``tiers=``, checked: a non-empty sequence of distinct
    objects with the Tier methods, each with its own non-empty ``name``."""
    if isinstance(tiers, (str, bytes)) or not isinstance(tiers, Sequence):
        raise TypeError(f"tiers must be a list of tier objects, fastest first; got tiers={tiers!r}")
    if not tiers:
        raise ValueError("tiers must name at least one tier; for the default chain leave tiers=None")
    names: set[str] = set()
    for position, tier in enumerate(tiers):
        if isinstance(tier, type):
            raise TypeError(f"tiers[{position}] is the class {tier.__name__}; pass a tier object: {tier.__name__}(...)")
        name = getattr(tier, "name", None)
        lacks = [method for method in _TIER_METHODS if not callable(getattr(tier, method, None))]
        if not isinstance(name, str) or not name:
            lacks.append("name (a non-empty str)")
        if lacks:
            raise TypeError(f"tiers[{position}] is not a tier: {type(tier).__name__} lacks {', '.join(lacks)}; a tier "
                            f"has a name and the methods {', '.join(_TIER_METHODS)} (see llm_memo's README, "
                            "\"Adding a tier\")")
        if name in names:
            raise ValueError(f"tiers[{position}] is named {name!r} like an earlier tier; give each tier its own "
                             "name (statistics count hits by tier name)")
        names.add(name)
    return list(tiers)


def check_entry(data: object, tags: Iterable[str]) -> tuple[str, ...]:
    """Reject the caller mistakes every tier rejects alike; return the tags, deduplicated."""
    if type(data) is not bytes:
        raise TypeError(f"a tier stores bytes, got data of type {type(data).__name__}")
    if isinstance(tags, (str, bytes)):
        raise TypeError(f"tags must be a sequence of str, got a bare {type(tags).__name__}")
    unique = tuple(dict.fromkeys(tags))
    for tag in unique:
        if type(tag) is not str:
            raise TypeError(f"each tag must be a str, got {tag!r}")
    return unique
