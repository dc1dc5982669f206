"""Command output: Out (aligned tables on a terminal, tab-separated text when piped) and cell formats."""

from __future__ import annotations

import datetime as dt
import json
import os
import pprint
import shutil
import sys
from typing import IO, Any

import orjson

from ._cache import Stored
from ._codec import FLAG_PLAIN, CorruptEntry, UntrustedClass, decode_value
from ._records import Stats
from ._semantic import SemanticSummary

__all__ = ["Out", "byte_size", "call_preview", "semantic_fields", "semantic_rows", "stats_fields", "stats_rows",
           "timestamp", "user_tags", "value_text"]


class Out:
    """Where commands write: tables, text blocks and notes (progress and summaries)."""

    def __init__(self, stdout: IO[str] | None = None, stderr: IO[str] | None = None,
                 tty: bool | None = None) -> None:
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.tty = self.stdout.isatty() if tty is None else tty
        self.interactive = self.tty
        self.color = (self.tty and self.stdout.isatty() and not os.environ.get("NO_COLOR")
                      and os.environ.get("TERM") != "dumb")

    def table(self, columns: list[str], rows: list[list[str]], *, align: str = "", header: bool = True,
              title: str = "") -> None:
        """Aligned columns on a terminal (cut to fit its width); tab-separated when piped."""
        clean = [[str(c).replace("\t", " ").replace("\n", " ") for c in row] for row in rows]
        if not self.tty:
            lines = ([columns] if header else []) + clean
            self.stdout.write("".join("\t".join(line) + "\n" for line in lines))
            return
        lines = ([columns] if header else []) + clean
        widths = [max(len(line[i]) for line in lines) for i in range(len(columns))] if lines else []
        excess = sum(widths) + 2 * (len(widths) - 1) - shutil.get_terminal_size((120, 24)).columns
        if excess > 0 and widths:  # the last column (a call's preview) gives way first, then the widest
            cut = min(excess, max(widths[-1] - 16, 0))
            widths[-1] -= cut
            excess -= cut
        while excess > 0 and max(widths, default=0) > 12:
            widths[widths.index(max(widths))] -= 1
            excess -= 1
        if title:
            self.stdout.write(title + "\n")
        for n, line in enumerate(lines):
            cells = []
            for i, cell in enumerate(line):
                cell = cell if len(cell) <= widths[i] else cell[:widths[i] - 1] + "…"
                right = i < len(align) and align[i] == "r"
                cells.append(cell.rjust(widths[i]) if right else cell.ljust(widths[i]))
            text = "  ".join(cells).rstrip()
            if header and n == 0 and self.color:
                text = f"\x1b[1m{text}\x1b[0m"
            self.stdout.write(text + "\n")

    def text(self, text: str) -> None:
        self.stdout.write(text if text.endswith("\n") else text + "\n")

    def note(self, text: str) -> None:
        self.stderr.write(text + "\n")

    def confirm(self, question: str) -> bool:
        """Ask on a terminal; without one, go ahead (scripts pass --yes or run without a TTY)."""
        if not (self.interactive and sys.stdin.isatty()):
            return True
        self.stderr.write(f"{question} [y/N] ")
        self.stderr.flush()
        return sys.stdin.readline().strip().lower() in ("y", "yes")


def timestamp(ts: float | None, seconds: bool = True) -> str:
    """Local date and time of `ts`, or "never"."""
    if ts is None:
        return "never"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def byte_size(n: int) -> str:
    """`n` bytes in B, KiB, MiB or GiB ("?" when unknown)."""
    if n < 0:
        return "?"
    if n < 1024:
        return f"{n} B"
    value, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


def call_preview(metadata: dict[str, Any], limit: int = 200) -> str:
    """The recorded arguments as ``name=value, ...``, cut at `limit` characters."""
    args = metadata.get("args")
    if not isinstance(args, dict):
        return ""
    text = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def user_tags(metadata: dict[str, Any]) -> list[str]:
    """The tags a user gave (not the automatic fn: and model: ones)."""
    tags = metadata.get("tags")
    return [t for t in tags if isinstance(t, str) and not t.startswith(("fn:", "model:"))] if isinstance(tags, list) else []


def stats_fields(stats: Stats) -> dict[str, Any]:
    """Stats as the fields of `stats --json`."""
    return {"calls": stats.calls, "hits": stats.hits, "misses": stats.misses, "bypassed": stats.bypassed,
            "errors": stats.errors, "hit_rate": round(stats.hit_rate, 6), "hits_by_tier": dict(stats.hits_by_tier),
            "tokens_saved": stats.tokens_saved, "cost_saved": stats.cost_saved, "time_saved": stats.time_saved}


def stats_rows(stats: Stats) -> list[list[str]]:
    """Stats as (label, value) rows, the same in the terminal and in a notebook."""
    tiers = ", ".join(f"{k} {v}" for k, v in sorted(stats.hits_by_tier.items())) or "-"
    return [["calls", f"{stats.calls:,}"], ["hits", f"{stats.hits:,} ({stats.hit_rate:.1%} of lookups)"],
            ["misses", f"{stats.misses:,}"], ["bypassed", f"{stats.bypassed:,}"], ["errors", f"{stats.errors:,}"],
            ["hits by tier", tiers], ["time saved", f"{stats.time_saved:,.2f} s"],
            ["tokens saved", f"{stats.tokens_saved:,}"], ["cost saved", f"${stats.cost_saved:,.4f}"]]


def semantic_rows(summary: SemanticSummary | None) -> list[list[str]]:
    """Semantic mode's figures as (label, value) rows; none when it never ran in the directory."""
    if summary is None or not summary.requests:
        return []
    return [["semantic hits", f"{summary.served:,} of {summary.requests:,} exact misses ({summary.hit_rate:.1%}), "
                              f"mean similarity {summary.mean_similarity:.3f}"],
            ["semantic checks", f"{summary.verified:,} verified against the function, {summary.wrong:,} "
                                f"differed ({summary.observed_error:.1%}); error bound of hits "
                                f"{summary.error_bound:.2%} of requests"]]


def semantic_fields(summary: SemanticSummary | None) -> dict[str, Any] | None:
    """Semantic mode's figures as the "semantic" field of `stats --json`."""
    if summary is None:
        return None
    return {"requests": summary.requests, "served": summary.served, "verified": summary.verified,
            "wrong": summary.wrong, "spent": round(summary.spent, 6), "hit_rate": round(summary.hit_rate, 6),
            "error_bound": round(summary.error_bound, 6),
            "observed_error": round(summary.observed_error, 6), "mean_similarity": round(summary.mean_similarity, 6)}


def value_text(stored: Stored, allow_pickle: bool = False) -> str:
    """The value, readable: JSON as JSON, other types as their repr, else the tagged JSON."""
    if stored.header.flags & FLAG_PLAIN:
        return json.dumps(orjson.loads(stored.value_json), indent=2, ensure_ascii=False)
    try:
        return pprint.pformat(decode_value(stored.value_json, stored.header.flags, allow_pickle=allow_pickle))
    except (CorruptEntry, UntrustedClass) as exc:
        tagged = json.dumps(orjson.loads(stored.value_json), indent=2, ensure_ascii=False)
        return f"{tagged}\n(tagged JSON: {exc})"
