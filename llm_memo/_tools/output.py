"""Command output: Out (aligned tables on a terminal, tab-separated text when piped) and cell formats."""

from __future__ import annotations

import datetime as dt
import json
import os
import pprint
import re
import shutil
import sys
import unicodedata
from collections.abc import Collection
from typing import IO, Any

import orjson

from .._logic.codec import FLAG_PLAIN, CorruptEntry, UntrustedClass, decode_value
from .._logic.records import Stats
from .._semantic.report import SemanticSummary
from .._storage.cache import Stored

__all__ = ["Out", "byte_size", "call_preview", "safe", "safe_json", "semantic_fields", "semantic_rows", "shorten",
           "stats_fields", "stats_rows", "timestamp", "user_tags", "value_text", "width"]


# Characters that could drive a terminal from cached data: C0 controls (but \n and \t where a
# text keeps them), DEL, C1 controls (\x9b is a one-byte CSI), bidi embeddings, overrides,
# isolates and marks (U+202E makes "exe.txt" read "txt.exe"), line and paragraph separators,
# and lone surrogates (which no terminal encoding can write).
_OTHERS = "\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff"
_UNSAFE = re.compile(f"[\x00-\x1f{_OTHERS}]")
_UNSAFE_BUT_LINES = re.compile(f"[\x00-\x08\x0b-\x1f{_OTHERS}]")  # keeps \t and \n
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    c = match.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def safe(text: str, *, lines: bool = False) -> str:
    """`text` with every character that could drive a terminal shown as an escape (``\\x1b``,
    ``\\u202e``); with `lines`, newlines and tabs stay. Everything the CLI prints goes through it."""
    return (_UNSAFE_BUT_LINES if lines else _UNSAFE).sub(_escape, text)


def safe_json(text: str) -> str:
    """JSON text with the same characters as JSON escapes: the same data, harmless on a terminal."""
    return _UNSAFE.sub(lambda m: "\n" if m.group() == "\n" else f"\\u{ord(m.group()):04x}", text)


def width(text: str) -> int:
    """Terminal columns of `text`: wide East Asian characters take two, combining marks none."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in text)


def shorten(text: str, columns: int) -> str:
    """`text` cut in the middle to at most `columns` terminal columns: "start…end"."""
    if width(text) <= columns:
        return text
    room = max(columns - 1, 0)
    head = _prefix(text, (room + 1) // 2)
    tail = _prefix(text[::-1], room - width(head))[::-1]
    return head + "…" + tail


def _prefix(text: str, columns: int) -> str:
    used = 0
    for i, c in enumerate(text):
        used += width(c)
        if used > columns:
            return text[:i]
    return text


def _fit(widths: list[int], keep: Collection[int], limit: int) -> tuple[list[int], int]:
    """Column widths and the gap between columns that fit `limit` columns when possible.

    Columns not in `keep` give way first, the widest first, to 10 columns; then the gap
    narrows to one space; then they go down to 3; only then do the kept columns give way.
    """
    widths, gap = list(widths), 2
    flexible = [i for i in range(len(widths)) if i not in keep]
    for floor, movable, new_gap in ((10, flexible, 2), (10, flexible, 1), (3, flexible, 1),
                                    (3, range(len(widths)), 1)):
        gap = new_gap
        excess = sum(widths) + gap * (len(widths) - 1) - limit
        while excess > 0:
            candidates = [i for i in movable if widths[i] > floor]
            if not candidates:
                break
            i = max(candidates, key=widths.__getitem__)
            widths[i] -= 1
            excess -= 1
        if excess <= 0:
            break
    return widths, gap


class Out:
    """Where commands write: tables, text blocks and notes (progress and summaries), all passed
    through `safe`: cached content never reaches the terminal as control characters."""

    def __init__(self, stdout: IO[str] | None = None, stderr: IO[str] | None = None,
                 tty: bool | None = None) -> None:
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.tty = self.stdout.isatty() if tty is None else tty
        self.fits = self.tty or os.environ.get("COLUMNS", "").strip().isdigit()  # tables fit a width
        self.interactive = True  # False where no one can be asked and the command line is the confirmation
        self.color = (self.tty and self.stdout.isatty() and not os.environ.get("NO_COLOR")
                      and os.environ.get("TERM") != "dumb")

    def table(self, columns: list[str], rows: list[list[str]], *, align: str = "", header: bool = True,
              title: str = "", keep: Collection[int] = ()) -> None:
        """Aligned columns on a terminal, or wherever $COLUMNS sets a width, cut in the middle to fit
        it (80 when unknown), except the columns in `keep` (dates, keys) unless nothing else can give
        way; tab-separated and whole when piped without $COLUMNS (scripts read whole keys)."""
        lines = ([columns] if header else []) + [[safe(str(c).replace("\t", " ").replace("\n", " ")) for c in row]
                                                  for row in rows]
        if not self.fits:
            self.stdout.write("".join("\t".join(line) + "\n" for line in lines))
            return
        natural = [max(width(line[i]) for line in lines) for i in range(len(columns))] if lines else []
        widths, gap = _fit(natural, keep, shutil.get_terminal_size((80, 24)).columns)
        if title:
            self.stdout.write(safe(title) + "\n")
        for n, line in enumerate(lines):
            cells = []
            for i, cell in enumerate(line):
                cell = shorten(cell, widths[i])
                pad = " " * (widths[i] - width(cell))
                cells.append(pad + cell if i < len(align) and align[i] == "r" else cell + pad)
            text = (" " * gap).join(cells).rstrip()
            if header and n == 0 and self.color:
                text = f"\x1b[1m{text}\x1b[0m"
            self.stdout.write(text + "\n")

    def text(self, text: str) -> None:
        text = safe(text, lines=True)
        self.stdout.write(text if text.endswith("\n") else text + "\n")

    def data(self, text: str) -> None:
        """Machine-readable JSON text, written as the same data with harmless escapes."""
        text = safe_json(text)
        self.stdout.write(text if text.endswith("\n") else text + "\n")

    def note(self, text: str) -> None:
        self.stderr.write(safe(text, lines=True) + "\n")

    def can_ask(self) -> bool:
        """True where a person can answer a question (a terminal on stdin)."""
        return sys.stdin is not None and sys.stdin.isatty()

    def confirm(self, question: str) -> bool:
        """Ask on a terminal (no is the default); without one, no: a script passes --yes.

        Where the command line itself is the confirmation (``interactive`` False), yes."""
        if not self.interactive:
            return True
        if not self.can_ask():
            return False
        self.stderr.write(f"{safe(question)} [y/N] ")
        self.stderr.flush()
        return sys.stdin.readline().strip().lower() in ("y", "yes")


def timestamp(ts: float | None, seconds: bool = True) -> str:
    """Local date and time of `ts`, "never", or "invalid (…)" for a time no calendar holds."""
    if ts is None:
        return "never"
    try:
        return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    except (ValueError, OverflowError, OSError):  # NaN, inf, 1e20: a damaged or planted entry
        return f"invalid ({ts:.4g})"


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
    """The value, readable: JSON as JSON, other types as their repr, else the tagged JSON
    (or, for a value that is not even JSON, its bytes and why)."""
    try:
        if stored.header.flags & FLAG_PLAIN:
            return json.dumps(orjson.loads(stored.value_json), indent=2, ensure_ascii=False)
        try:
            return pprint.pformat(decode_value(stored.value_json, stored.header.flags, allow_pickle=allow_pickle))
        except (CorruptEntry, UntrustedClass) as exc:
            tagged = json.dumps(orjson.loads(stored.value_json), indent=2, ensure_ascii=False)
            return f"{tagged}\n(tagged JSON: {exc})"
    except orjson.JSONDecodeError as exc:
        return f"{stored.value_json[:2000]!r}\n(not JSON: {exc})"
