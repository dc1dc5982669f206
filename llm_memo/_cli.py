"""llm-memo: manage a cache from a terminal (stats, ls, show, clear, export, import, warm, serve, demo).

Every command reads ``--dir``, else ``$LLM_MEMO_DIR``, else the default cache directory.
Output is an aligned table on a terminal and tab-separated text when piped. Mistakes
end in one line on stderr: exit 2 for usage (unknown command, bad key, bad duration),
1 for everything else; never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import importlib
import json
import math
import os
import pprint
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from ._cache import Cache, Stored, default_directory
from ._codec import FLAG_PICKLE, FLAG_PLAIN, CorruptEntry, Header, decode_value
from ._records import Stats

__all__ = ["CommandError", "Out", "UsageError", "build_parser", "main", "run"]

EXPORT_VERSION = 1
_KEY = re.compile(r"[0-9a-f]{64}")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class UsageError(Exception):
    """A mistake in the command line (exit status 2)."""


class CommandError(Exception):
    """A command that could not do its job (exit status 1)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse prints usage and exits; we want one line
        raise UsageError(message)


def duration(text: str) -> float:
    """Seconds in "90s", "30m", "12h", "7d", "2w" or a sum like "1d12h"."""
    parts = _DURATION.findall(text.strip().lower())
    if not parts or "".join(n + u for n, u in parts) != text.strip().lower():
        raise argparse.ArgumentTypeError(f"bad duration {text!r}: use a number and a unit, e.g. 30m, 12h, 7d, 2w")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def _key_prefix(text: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{1,64}", text):
        raise argparse.ArgumentTypeError(f"bad key {text!r}: a key (or its prefix) is hex digits 0-9a-f")
    return text


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def build_parser(prog: str = "llm-memo") -> argparse.ArgumentParser:
    """The command line of llm-memo (also parsed by the %llm_memo magic)."""
    common = _Parser(add_help=False)
    common.add_argument("--dir", default=argparse.SUPPRESS, metavar="DIR",
                        help="cache directory (default: $LLM_MEMO_DIR, else ~/.cache/llm_memo)")
    parser = _Parser(prog=prog, description=__doc__.splitlines()[0], parents=[common])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=help, parents=[common])

    def filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--function", metavar="NAME", help="module.qualname, its last part, or a glob")
        p.add_argument("--tag", help="entries carrying this tag")
        p.add_argument("--model", help="entries of calls naming this model")
        p.add_argument("--expired", action="store_true", help="entries past their expiry that a tier still holds")
        p.add_argument("--older-than", type=duration, metavar="AGE", help="entries created longer ago, e.g. 7d")

    p = command("stats", "lifetime hits, misses, savings, and entries per tier")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--by", choices=("day", "function", "model"), help="one row per day, function or model")
    p = command("ls", "list entries")
    filters(p)
    p.add_argument("--limit", type=_positive, metavar="N", help="show the N newest only")
    p = command("show", "one entry's metadata and value (a unique key prefix is enough)")
    p.add_argument("key", type=_key_prefix, metavar="KEY")
    p.add_argument("--json", action="store_true", help="the entry as an export line")
    p = command("clear", "remove entries by filter, or all of them")
    filters(p)
    p.add_argument("--all", action="store_true", help="remove every entry")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p = command("export", "write entries with their metadata as JSON lines (FILE - is stdout)")
    p.add_argument("file", metavar="FILE")
    filters(p)
    p = command("import", "read entries written by export (FILE - is stdin)")
    p.add_argument("file", metavar="FILE")
    p = command("warm", 'run JSON lines of calls {"args": [...], "kwargs": {...}} through a cached function')
    p.add_argument("function", metavar="MODULE:FUNCTION")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--concurrency", type=_positive, default=4)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar (default: on a terminal)")
    # Listed for --help only: run() hands their arguments to _server.main / _demo.main untouched.
    commands.add_parser("serve", help="run the local OpenAI-compatible server (llm-memo serve --help)")
    commands.add_parser("demo", help="run the offline demo workload (llm-memo demo --help)")
    return parser


# ---- output ---------------------------------------------------------------------------

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


# ---- formatting -----------------------------------------------------------------------

def _when(ts: float | None, seconds: bool = True) -> str:
    if ts is None:
        return "never"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def _size(n: int) -> str:
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


def _call(metadata: dict[str, Any], limit: int = 200) -> str:
    args = metadata.get("args")
    if not isinstance(args, dict):
        return ""
    text = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _user_tags(metadata: dict[str, Any]) -> list[str]:
    tags = metadata.get("tags")
    return [t for t in tags if isinstance(t, str) and not t.startswith(("fn:", "model:"))] if isinstance(tags, list) else []


def _stats_fields(stats: Stats) -> dict[str, Any]:
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


# ---- entries ----------------------------------------------------------------------------

def _function_matches(name: Any, pattern: str) -> bool:
    if not isinstance(name, str):
        return False
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return name == pattern or name.endswith("." + pattern)


def select(cache: Cache, args: argparse.Namespace, now: float) -> Iterator[Stored]:
    """The entries the filter options of `args` pick (all of them without filters)."""
    for stored in cache.scan():
        meta, header = stored.metadata, stored.header
        if args.function and not _function_matches(meta.get("function"), args.function):
            continue
        if args.tag and args.tag not in (meta.get("tags") or ()):
            continue
        if args.model and meta.get("model") != args.model:
            continue
        if args.expired and (header.expires_at is None or header.expires_at > now):
            continue
        if args.older_than is not None and now - header.created_at < args.older_than:
            continue
        yield stored


def _filtered(args: argparse.Namespace) -> bool:
    return bool(args.function or args.tag or args.model or args.expired or args.older_than is not None)


def export_record(stored: Stored) -> dict[str, Any]:
    """One entry as a portable JSON object: the envelope's fields, the value as tagged JSON."""
    meta = dict(stored.metadata)
    tags = meta.pop("tags", [])
    h = stored.header
    return {"llm_memo_export": EXPORT_VERSION, "key": stored.key, "created_at": h.created_at,
            "expires_at": h.expires_at, "latency": h.latency, "tokens": h.tokens, "cost": h.cost,
            "tags": tags, "metadata": meta, "value": orjson.loads(stored.value_json)}


def parse_record(line: bytes, now: float) -> tuple[str, Header, dict[str, Any], bytes]:
    """(key, header, metadata with tags, value JSON) of an export line; ValueError says what is wrong."""
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(rec, dict):
        raise ValueError("not a JSON object")
    if rec.get("llm_memo_export") != EXPORT_VERSION:
        raise ValueError(f"not an llm_memo export line (llm_memo_export must be {EXPORT_VERSION})")
    missing = {"key", "created_at", "expires_at", "value"} - rec.keys()
    if missing:
        raise ValueError(f"missing {', '.join(sorted(missing))}")
    key = rec["key"]
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError("key is not 64 hex digits")
    numbers = {name: rec.get(name, 0) for name in ("created_at", "latency", "cost", "tokens")}
    for name, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} is not a number >= 0")
    if not isinstance(numbers["tokens"], int) or numbers["tokens"] >= 2**32:
        raise ValueError("tokens is not a whole number below 2**32")
    expires = rec["expires_at"]
    if expires is not None and (isinstance(expires, bool) or not isinstance(expires, (int, float))):
        raise ValueError("expires_at is neither null nor a number")
    if expires is not None and expires <= now:
        raise ValueError("expired")
    tags, meta = rec.get("tags", []), rec.get("metadata", {})
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValueError("tags is not a list of strings")
    if not isinstance(meta, dict):
        raise ValueError("metadata is not an object")
    value_json = orjson.dumps(rec["value"])
    flags = 0 if b"\\u0000" in value_json else FLAG_PLAIN
    try:
        decode_value(value_json, flags)
    except CorruptEntry as exc:
        # A class is rebuilt only where it is allowed (the process that calls the function).
        if not str(exc).startswith("class "):
            raise ValueError(f"value: {exc}") from None
    header = Header(None if expires is None else float(expires), float(numbers["created_at"]),
                    float(numbers["latency"]), numbers["tokens"], float(numbers["cost"]), flags)
    return key, header, {**meta, "tags": tags}, value_json


# ---- commands --------------------------------------------------------------------------

def cmd_stats(cache: Cache, args: argparse.Namespace, out: Out) -> int:
    if args.by:
        groups = cache.ledger.totals(by=args.by) if cache.ledger is not None else None
        if groups is None:
            raise CommandError(f"no readable savings ledger in {cache.directory}")
        if args.json:
            out.text(json.dumps({"directory": str(cache.directory), "by": args.by,
                                 "groups": [{args.by: k or None, **_stats_fields(s)} for k, s in sorted(groups.items())]},
                                indent=2))
            return 0
        rows = [[k or "-", f"{s.calls:,}", f"{s.hits:,}", f"{s.misses:,}", f"{s.bypassed:,}", f"{s.errors:,}",
                 f"{s.hit_rate:.1%}", f"{s.time_saved:,.2f} s", f"{s.tokens_saved:,}", f"${s.cost_saved:,.4f}"]
                for k, s in sorted(groups.items())]
        out.table([args.by.upper(), "CALLS", "HITS", "MISSES", "BYPASSED", "ERRORS", "HIT RATE", "TIME SAVED",
                   "TOKENS SAVED", "COST SAVED"], rows, align="lrrrrrrrrr")
        return 0
    stats, usage = cache.stats(), cache.usage()
    if args.json:
        out.text(json.dumps({"directory": str(cache.directory), **_stats_fields(stats),
                             "tiers": {k: {"entries": n, "bytes": b} for k, (n, b) in usage.items()}}, indent=2))
        return 0
    rows = [["directory", str(cache.directory)], *stats_rows(stats)]
    rows += [[f"{tier} entries", f"{n:,} ({_size(b)})"] for tier, (n, b) in usage.items() if tier != "memory"]
    out.table(["", ""], rows, header=False)
    return 0


def cmd_ls(cache: Cache, args: argparse.Namespace, out: Out) -> int:
    entries = sorted(select(cache, args, cache.clock()), key=lambda s: s.header.created_at, reverse=True)
    shown = entries[:args.limit] if args.limit else entries
    rows = [[s.key[:12] if out.tty else s.key, str(s.metadata.get("function") or "-"),
             str(s.metadata.get("model") or "-"), _when(s.header.created_at, not out.tty),
             _when(s.header.expires_at, not out.tty),
             ",".join(_user_tags(s.metadata)) or "-", _size(s.size), _call(s.metadata)] for s in shown]
    if not rows and out.tty:
        out.note("no entries" + (" match" if _filtered(args) else f" in {cache.directory}"))
        return 0
    out.table(["KEY", "FUNCTION", "MODEL", "CREATED", "EXPIRES", "TAGS", "SIZE", "CALL"], rows, align="llllllrl")
    if len(shown) < len(entries):
        out.note(f"{len(entries) - len(shown)} more (raise --limit)")
    return 0


def find(cache: Cache, prefix: str) -> Stored:
    """The one entry whose key starts with `prefix`; CommandError when none or several."""
    found = list(cache.scan(prefix))
    if not found:
        raise CommandError(f"no entry with key {prefix}… in {cache.directory}")
    if len(found) > 1:
        raise CommandError(f"key prefix {prefix} is ambiguous: {len(found)} entries "
                           f"({', '.join(s.key[:16] + '…' for s in found[:3])}); give more digits")
    return found[0]


def cmd_show(cache: Cache, args: argparse.Namespace, out: Out) -> int:
    stored = find(cache, args.key)
    if args.json:
        out.text(orjson.dumps(export_record(stored), option=orjson.OPT_INDENT_2).decode())
        return 0
    h, meta = stored.header, stored.metadata
    rows = [["key", stored.key], ["function", str(meta.get("function") or "-")],
            ["model", str(meta.get("model") or "-")], ["policy", str(meta.get("policy") or "-")],
            ["tier", stored.tier], ["created", _when(h.created_at)], ["expires", _when(h.expires_at)],
            ["tags", ", ".join(t for t in meta.get("tags") or () if isinstance(t, str)) or "-"],
            ["size", _size(stored.size)], ["latency", f"{h.latency:.3f} s"], ["tokens", f"{h.tokens:,}"],
            ["cost", f"${h.cost:.6f}"], ["call", _call(meta, limit=10_000)]]
    out.table(["", ""], rows, header=False)
    out.text("value:\n" + value_text(stored, cache.allow_pickle))
    return 0


def value_text(stored: Stored, allow_pickle: bool = False) -> str:
    """The value, readable: JSON as JSON, other types as their repr, else the tagged JSON."""
    if stored.header.flags & FLAG_PLAIN:
        return json.dumps(orjson.loads(stored.value_json), indent=2, ensure_ascii=False)
    try:
        return pprint.pformat(decode_value(stored.value_json, stored.header.flags, allow_pickle=allow_pickle))
    except CorruptEntry as exc:
        tagged = json.dumps(orjson.loads(stored.value_json), indent=2, ensure_ascii=False)
        return f"{tagged}\n(tagged JSON: {exc})"


def cmd_clear(cache: Cache, args: argparse.Namespace, out: Out) -> int:
    if args.all == _filtered(args):
        raise UsageError("clear takes --all, or filters (--tag, --function, --model, --expired, --older-than)")
    if args.all:
        count = sum(1 for _ in cache.keys())  # noqa: SIM118 (a Cache, not a dict)
        if count and not args.yes and not out.confirm(f"remove all {count} entries from {cache.directory}?"):
            raise CommandError("nothing removed")
        removed = cache.clear()
    else:
        keys = [s.key for s in select(cache, args, cache.clock())]
        if keys and not args.yes and not out.confirm(f"remove {len(keys)} entries from {cache.directory}?"):
            raise CommandError("nothing removed")
        removed = sum(cache.delete(key) for key in keys)
    out.text(f"removed {removed} {'entry' if removed == 1 else 'entries'}")
    return 0


def cmd_export(cache: Cache, args: argparse.Namespace, out: Out) -> int:
    count = pickled = 0
    lines = []
    for stored in select(cache, args, cache.clock()):
        if stored.header.flags & FLAG_PICKLE:
            pickled += 1  # a pickle runs code when loaded: never handed to someone else
            continue
        lines.append(orjson.dumps(export_record(stored)) + b"\n")
        count += 1
    data = b"".join(lines)
    if args.file == "-":
        if data:
            out.text(data.decode())
    else:
        try:
            Path(args.file).write_bytes(data)
        except OSError as exc:
            raise CommandError(f"cannot write {args.file}: {exc.strerror or exc}") from None
    where = "stdout" if args.file == "-" else args.file
    out.note(f"exported {count} {'entry' if count == 1 else 'entries'} to {where}"
             + (f"; skipped {pickled} pickled (not portable)" if pickled else ""))
    return 0


def cmd_import(cache: Cache, args: argparse.Namespace, out: Out) -> int:
    try:
        raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    now = cache.clock()
    imported = present = 0
    skipped: list[str] = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            key, header, meta, value_json = parse_record(line, now)
        except ValueError as exc:
            skipped.append(f"line {n}: {exc}")
            continue
        if key in cache:
            present += 1
        elif cache.restore(key, header, meta, value_json):
            imported += 1
        else:
            skipped.append(f"line {n}: no tier could store it")
    for reason in skipped[:20]:
        out.note(f"skipped {reason}")
    if len(skipped) > 20:
        out.note(f"skipped {len(skipped) - 20} more lines")
    out.text(f"imported {imported}, already stored {present}, skipped {len(skipped)}")
    invalid = [s for s in skipped if not s.endswith(": expired")]
    return 1 if invalid else 0


def cmd_warm(args: argparse.Namespace, out: Out) -> int:
    from ._warm import Call

    fn = _load_function(args.function)
    try:
        raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    calls: list[Call] = []
    bad: list[str] = []
    lines: dict[int, int] = {}  # id(call) -> its line in FILE
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            bad.append(f"line {n}: not JSON ({exc})")
            continue
        if (not isinstance(rec, dict) or not set(rec) <= {"args", "kwargs"}
                or not isinstance(rec.get("args", []), list) or not isinstance(rec.get("kwargs", {}), dict)):
            bad.append(f'line {n}: expected {{"args": [...], "kwargs": {{...}}}}')
            continue
        call = Call(tuple(rec.get("args", [])), rec.get("kwargs", {}))
        lines[id(call)] = n
        calls.append(call)
    for reason in bad:
        out.note(f"skipped {reason}")
    progress = out.stderr.isatty() if args.progress is None else args.progress
    interrupted = False
    try:
        report = fn.warm(calls, concurrency=args.concurrency, progress=progress)
    except KeyboardInterrupt as exc:
        report, interrupted = exc.report, True  # type: ignore[attr-defined]
    out.text(("interrupted: " if interrupted else "")
             + f"warmed {report.warmed}, already cached {report.already_cached}, failed {len(report.failed)}")
    for call, reason in report.failed:
        out.note(f"failed line {lines[id(call)]}: {reason}")
    return 130 if interrupted else 1 if report.failed or bad else 0


def _load_function(spec: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"bad function {spec!r}: use MODULE:FUNCTION, e.g. myapp.prompts:summarize")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: modules in the current directory import
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise CommandError(f"cannot import {module_name}: {type(exc).__name__}: {exc}") from None
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise CommandError(f"{module_name} has no attribute {attribute!r}")
    if not callable(getattr(target, "warm", None)) or not callable(getattr(target, "cache_key", None)):
        raise CommandError(f"{spec} is not decorated with @llm_cache (it has no .warm)")
    return target


def _delegated(argv: list[str]) -> tuple[str, str | None, list[str]] | None:
    """(command, --dir, its own arguments) for serve and demo, which parse their arguments themselves."""
    directory, i = None, 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--dir" and i + 1 < len(argv):
            directory, i = argv[i + 1], i + 2
        elif arg.startswith("--dir="):
            directory, i = arg.partition("=")[2], i + 1
        elif arg in ("serve", "demo"):
            return arg, directory, argv[i + 1:]
        else:
            return None
    return None


def _delegate(command: str, directory: str | None, rest: list[str]) -> int:
    if command == "serve":
        from ._server import main as serve

        return serve(rest)
    try:
        from ._demo import main as demo
    except ModuleNotFoundError as exc:
        if exc.name == "llm_memo._demo":
            raise CommandError("the demo is not part of this install (llm_memo._demo is missing)") from None
        raise CommandError(f"the demo needs {exc.name}: pip install 'llm_memo[demo]'") from None
    if directory and "--dir" not in rest:
        rest = ["--dir", directory, *rest]
    return demo(rest)


COMMANDS: dict[str, Callable[[Cache, argparse.Namespace, Out], int]] = {
    "stats": cmd_stats, "ls": cmd_ls, "show": cmd_show, "clear": cmd_clear, "export": cmd_export,
    "import": cmd_import,
}


def open_cache(args: argparse.Namespace) -> Cache:
    """The cache --dir / $LLM_MEMO_DIR names; CommandError when there is none to read."""
    directory = Path(args.dir).expanduser() if getattr(args, "dir", None) else default_directory()
    if args.command != "import" and not directory.is_dir():
        raise CommandError(f"no llm_memo cache at {directory} (give --dir or set LLM_MEMO_DIR)")
    return Cache(directory, memory_maxsize=0)


def run(argv: list[str], out: Out, cache: Cache | None = None, only: tuple[str, ...] = ()) -> int:
    """Parse and run one command (one of `only`, if given) on `cache` unless --dir names another.

    Raises UsageError / CommandError for the caller to show.
    """
    delegated = _delegated(argv)
    if delegated is not None and not only:
        return _delegate(*delegated)
    args = build_parser().parse_args(argv)
    if only and args.command not in only:
        raise UsageError(f"{args.command} is not available here (use: {', '.join(only)})")
    if args.command == "warm":
        if getattr(args, "dir", None):
            os.environ["LLM_MEMO_DIR"] = args.dir  # for modules that build their cache on import
            from ._cache import configure

            configure(args.dir)
        return cmd_warm(args, out)
    if cache is not None and not getattr(args, "dir", None):
        return COMMANDS[args.command](cache, args, out)
    with open_cache(args) as opened:
        return COMMANDS[args.command](opened, args, out)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `llm-memo` and `python -m llm_memo`."""
    out = Out()
    try:
        return run(sys.argv[1:] if argv is None else argv, out)
    except UsageError as exc:
        out.note(f"llm-memo: error: {exc} (see llm-memo --help)")
        return 2
    except CommandError as exc:
        out.note(f"llm-memo: error: {exc}")
        return 1
    except KeyboardInterrupt:
        out.note("llm-memo: interrupted")
        return 130
    except BrokenPipeError:  # `llm-memo ls | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        if os.environ.get("LLM_MEMO_DEBUG"):
            raise
        out.note(f"llm-memo: error: {type(exc).__name__}: {exc} (LLM_MEMO_DEBUG=1 shows the traceback)")
        return 1
