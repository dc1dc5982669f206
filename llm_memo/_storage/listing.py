"""Looking at a chain's entries without serving them: keys, raw entries for listing and export,
expired rows left to purge, sizes, and the notebook display of a cache."""

from __future__ import annotations

import html
from collections.abc import Iterator, Sequence
from pathlib import Path

from .._logic.codec import CorruptEntry, Secret, decode_value, unpack
from .._logic.records import Entry, Stats
from .envelope import Stored, meta_json
from .faults import Faults
from .tier import Expiring, Sized, Tier, has, is_shared

__all__ = ["find_entry", "holds", "live_keys", "scan", "scan_expired", "shown_html", "usage"]


def live_keys(tiers: Sequence[Tier], faults: Faults) -> Iterator[str]:
    """Every live key, each once."""
    seen: set[str] = set()
    for tier in tiers:
        try:
            for key in tier.keys():  # noqa: SIM118 (a Tier, not a dict)
                if key not in seen:
                    seen.add(key)
                    yield key
        except Exception as exc:
            faults.fault(tier.name, "scan", exc, None)


def scan(tiers: Sequence[Tier], prefix: str, secret: Secret | None, faults: Faults) -> Iterator[Stored]:
    """Every live entry whose key starts with `prefix`, once, from the first tier holding it."""
    seen: set[str] = set()
    for tier in tiers:
        try:
            keys = [k for k in tier.keys() if k.startswith(prefix) and k not in seen]  # noqa: SIM118
        except Exception as exc:
            faults.fault(tier.name, "scan", exc, None)
            continue
        for key in keys:
            try:
                data = tier.get(key)
                if data is None:
                    continue
                header, meta, value_json = unpack(data, key, secret=secret)
            except Exception as exc:
                faults.fault(tier.name, "read", exc, None)
                continue
            seen.add(key)
            yield Stored(key, tier.name, header, meta_json(meta), value_json, len(data))


def scan_expired(tiers: Sequence[Tier], faults: Faults) -> Iterator[Stored]:
    """Entries past their lifetime that an Expiring tier still stores."""
    for tier in tiers:
        if not has(tier, Expiring):
            continue
        try:
            rows = tier.expired()
        except Exception as exc:
            faults.fault(tier.name, "scan", exc, None)
            continue
        for key, data in rows:
            try:
                header, meta, value_json = unpack(data, key)
            except CorruptEntry:
                continue  # damaged as well as expired: get() drops it when it meets it
            yield Stored(key, tier.name, header, meta_json(meta), value_json, len(data))


def holds(tiers: Sequence[Tier], key: str, faults: Faults) -> bool:
    """True if some tier holds a live entry under `key` (nothing decoded, nothing promoted)."""
    for tier in tiers:
        try:
            if tier.get(key) is not None:
                return True
        except Exception as exc:
            faults.fault(tier.name, "read", exc, None)
    return False


def find_entry(tiers: Sequence[Tier], key: str, now: float, secret: Secret | None, allow_pickle: bool,
               faults: Faults) -> Entry | None:
    """The stored entry under `key` with its metadata, from the first tier holding it live."""
    for tier in tiers:
        try:
            data = tier.get(key)
            if data is None:
                continue
            header, meta, value_json = unpack(data, key, secret=secret)
            if header.expires_at is not None and header.expires_at <= now:
                continue
            value = decode_value(value_json, header.flags, allow_pickle=allow_pickle and not is_shared(tier))
        except CorruptEntry as exc:
            faults.bad_entry(tier, key, exc, None)
            continue
        except Exception as exc:
            faults.fault(tier.name, "read", exc, None)
            continue
        metadata = meta_json(meta)
        tags = tuple(metadata.pop("tags", ()))
        return Entry(key, value, header.created_at, header.expires_at, tags, tier.name, metadata,
                     header.latency, header.tokens, header.cost)
    return None


def usage(tiers: Sequence[Tier]) -> dict[str, tuple[int, int]]:
    """{tier name: (entries, bytes)}; -1 where a tier cannot tell."""
    out = {}
    for tier in tiers:
        try:
            out[tier.name] = (len(tier), tier.volume()) if has(tier, Sized) else (-1, -1)
        except Exception:
            out[tier.name] = (-1, -1)
    return out


def shown_html(directory: Path, sizes: dict[str, tuple[int, int]], stats: Stats) -> str:
    """A cache as a notebook shows it: its directory, its tiers' sizes and its statistics."""
    tiers = "".join(f"<tr><td>{html.escape(name)}</td><td>{n:,}</td><td>{size:,}</td></tr>"
                    for name, (n, size) in sizes.items())
    return (f"<table><caption>llm_memo cache <code>{html.escape(str(directory))}</code></caption>"
            f"<tr><th>tier</th><th>entries</th><th>bytes</th></tr>{tiers}</table>" + stats._repr_html_())
