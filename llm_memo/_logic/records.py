"""Entry and Stats: the read-only records llm_memo hands to users."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["Entry", "Stats"]

_EMPTY: Mapping[str, int] = MappingProxyType({})


@dataclasses.dataclass(frozen=True)
class Entry:
    """One stored result: its value and where, when and why it was stored."""

    key: str
    value: Any
    created_at: float
    expires_at: float | None  # epoch seconds; None never expires
    tags: tuple[str, ...]
    tier: str  # the tier it was read from
    metadata: Mapping[str, Any]
    latency: float = 0.0  # seconds the original call took: what each hit saves
    tokens: int = 0  # tokens the original call used (when a front-end recorded them)
    cost: float = 0.0  # USD the original call cost

    def _repr_html_(self) -> str:
        args = self.metadata.get("args")
        call = ", ".join(f"{k}={v!r}" for k, v in args.items()) if isinstance(args, Mapping) else ""
        rows = [("key", self.key[:16] + "…"), ("function", str(self.metadata.get("function") or "-")),
                ("model", str(self.metadata.get("model") or "-")), ("policy", str(self.metadata.get("policy") or "-")),
                ("tier", self.tier), ("tags", ", ".join(self.tags) or "-"),
                ("created", _utc(self.created_at)), ("expires", _utc(self.expires_at)),
                ("saves per hit", f"{self.latency:.3f} s, {self.tokens} tokens, ${self.cost:.6f}"),
                ("call", call[:300]), ("value", repr(self.value)[:300])]
        return _table("llm_memo entry", rows, bold={"saves per hit"})


def _utc(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclasses.dataclass(frozen=True)
class Stats:
    """Counters of a cache or of one cached function."""

    hits: int = 0
    misses: int = 0
    bypassed: int = 0
    errors: int = 0
    hits_by_tier: Mapping[str, int] = dataclasses.field(default_factory=lambda: _EMPTY)
    tokens_saved: int = 0
    cost_saved: float = 0.0  # USD
    time_saved: float = 0.0  # seconds: the original latency of every hit
    # Prompt tokens the provider's own prompt cache read and wrote on the calls it answered (misses)
    provider_cached_tokens: int = 0
    provider_cache_write_tokens: int = 0

    @property
    def calls(self) -> int:
        """Every call seen: hits, misses and bypasses."""
        return self.hits + self.misses + self.bypassed

    @property
    def hit_rate(self) -> float:
        """Hits over lookups (hits + misses); 0.0 before the first lookup."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    def __add__(self, other: Stats) -> Stats:
        tiers = dict(self.hits_by_tier)
        for tier, n in other.hits_by_tier.items():
            tiers[tier] = tiers.get(tier, 0) + n
        return Stats(
            self.hits + other.hits, self.misses + other.misses, self.bypassed + other.bypassed,
            self.errors + other.errors, MappingProxyType(tiers), self.tokens_saved + other.tokens_saved,
            self.cost_saved + other.cost_saved, self.time_saved + other.time_saved,
            self.provider_cached_tokens + other.provider_cached_tokens,
            self.provider_cache_write_tokens + other.provider_cache_write_tokens,
        )

    def _repr_html_(self) -> str:
        tiers = ", ".join(f"{k} {v}" for k, v in sorted(self.hits_by_tier.items())) or "-"
        rows = [("hits", f"{self.hits} ({self.hit_rate:.0%})"), ("misses", str(self.misses)),
                ("bypassed", str(self.bypassed)), ("errors", str(self.errors)), ("hits by tier", tiers),
                ("time saved", f"{self.time_saved:.2f} s"), ("tokens saved", str(self.tokens_saved)),
                ("cost saved", f"${self.cost_saved:.4f}"),
                ("provider prompt cache", f"{self.provider_cached_tokens} tokens read, "
                                          f"{self.provider_cache_write_tokens} written")]
        return _table("llm_memo stats", rows, bold={"time saved", "tokens saved", "cost saved"})


def _table(title: str, rows: list[tuple[str, str]], bold: frozenset[str] | set[str] = frozenset()) -> str:
    """A two-column HTML table, every cell escaped; the `bold` rows (savings) stand out."""
    import html  # notebooks only
    def cell(text: str, strong: bool) -> str:
        return f"<b>{html.escape(text)}</b>" if strong else html.escape(text)

    body = "".join(
        f"<tr><th style='text-align:left'>{cell(k, k in bold)}</th>"
        f"<td style='text-align:left'>{cell(v, k in bold)}</td></tr>"
        for k, v in rows
    )
    return f"<table><caption>{html.escape(title)}</caption>{body}</table>"
