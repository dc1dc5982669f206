"""Entry and Stats: the read-only records llm_memo hands to users."""

from __future__ import annotations

import dataclasses
import html
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

    def _repr_html_(self) -> str:
        expires = "never" if self.expires_at is None else f"{self.expires_at:.0f}"
        rows = [("key", self.key[:16] + "…"), ("tier", self.tier), ("tags", ", ".join(self.tags)),
                ("created_at", f"{self.created_at:.0f}"), ("expires_at", expires),
                ("value", repr(self.value)[:200])]
        return _table("llm_memo entry", rows)


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
        )

    def _repr_html_(self) -> str:
        tiers = ", ".join(f"{k} {v}" for k, v in sorted(self.hits_by_tier.items())) or "-"
        rows = [("hits", f"{self.hits} ({self.hit_rate:.0%})"), ("misses", str(self.misses)),
                ("bypassed", str(self.bypassed)), ("errors", str(self.errors)), ("hits by tier", tiers),
                ("<b>time saved</b>", f"<b>{self.time_saved:.2f} s</b>"),
                ("<b>tokens saved</b>", f"<b>{self.tokens_saved}</b>"),
                ("<b>cost saved</b>", f"<b>${self.cost_saved:.4f}</b>")]
        return _table("llm_memo stats", rows, escape_keys=False)


def _table(title: str, rows: list[tuple[str, str]], escape_keys: bool = True) -> str:
    def cell(text: str, raw: bool) -> str:
        return text if raw else html.escape(text)

    body = "".join(
        f"<tr><th style='text-align:left'>{cell(k, not escape_keys)}</th>"
        f"<td style='text-align:left'>{v if v.startswith('<b>') else html.escape(v)}</td></tr>"
        for k, v in rows
    )
    return f"<table><caption>{html.escape(title)}</caption>{body}</table>"
