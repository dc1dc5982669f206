"""The llm-memo commands: each reads its parsed arguments, works on a cache and writes to an Out."""

from __future__ import annotations

import argparse
import fnmatch
import importlib
import json
import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from .._engine.config import caching_enabled
from .._logic.codec import FLAG_PICKLE
from .._semantic.report import semantic_hits, semantic_matches, semantic_summary
from .._storage.cache import Cache, Stored
from .output import (
    Out,
    byte_size,
    call_preview,
    semantic_fields,
    semantic_rows,
    stats_fields,
    stats_rows,
    timestamp,
    user_tags,
    value_text,
)
from .portable import export_record, parse_record

__all__ = [
    "COMMANDS", "CommandError", "UsageError", "check_usage", "cmd_clear", "cmd_export", "cmd_import", "cmd_ls", "cmd_show",
    "cmd_stats", "cmd_warm", "find", "select",
]


class UsageError(Exception):
    """A mistake in the command line (exit status 2)."""


class CommandError(Exception):
    """A command that could not do its job (exit status 1)."""


def _function_matches(name: Any, pattern: str) -> bool:
    if not isinstance(name, str):
        return False
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return name == pattern or name.endswith("." + pattern)


def select(cache: Cache, args: argparse.Namespace, now: float) -> Iterator[Stored]:
    """The entries the filter options of `args` pick (all of them without filters).

    Live entries, or with --expired those past their lifetime that a tier still stores.
    """
    for stored in cache.scan_expired() if args.expired else cache.scan():
        meta, header = stored.metadata, stored.header
        if args.function and not _function_matches(meta.get("function"), args.function):
            continue
        if args.tag and args.tag not in _tags(meta):
            continue
        if args.model and meta.get("model") != args.model:
            continue
        if args.older_than is not None and now - header.created_at < args.older_than:
            continue
        yield stored


def _tags(metadata: dict[str, Any]) -> list[str]:
    tags = metadata.get("tags")
    return [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []


def _filtered(args: argparse.Namespace) -> bool:
    return bool(args.function or args.tag or args.model or args.expired or args.older_than is not None)


def cmd_stats(cache: Cache, args: argparse.Namespace, out: Out) -> int:
    off = None if caching_enabled() else _caching_off()
    if args.by:
        groups = cache.ledger.totals(by=args.by) if cache.ledger is not None else None
        if groups is None:
            raise CommandError(f"no readable savings ledger in {cache.directory}")
        if args.json:
            out.data(json.dumps({"directory": str(cache.directory), "enabled": off is None, "by": args.by,
                                 "groups": [{args.by: k or None, **stats_fields(s)} for k, s in sorted(groups.items())]},
                                indent=2))
            return 0
        if off is not None:
            out.text(off)
            if not groups:
                return 0
            out.text("")
        rows = [[k or "-", f"{s.calls:,}", f"{s.hits:,}", f"{s.misses:,}", f"{s.bypassed:,}", f"{s.errors:,}",
                 f"{s.hit_rate:.1%}", f"{s.time_saved:,.2f} s", f"{s.tokens_saved:,}", f"${s.cost_saved:,.4f}"]
                for k, s in sorted(groups.items())]
        out.table([args.by.upper(), "CALLS", "HITS", "MISSES", "BYPASSED", "ERRORS", "HIT RATE", "TIME SAVED",
                   "TOKENS SAVED", "COST SAVED"], rows, align="lrrrrrrrrr", keep=range(1, 10))
        return 0
    stats, usage, semantic = cache.stats(), cache.usage(), semantic_summary(cache.directory)
    if args.json:
        out.data(json.dumps({"directory": str(cache.directory), "enabled": off is None, **stats_fields(stats),
                             "tiers": {k: {"entries": n, "bytes": b} for k, (n, b) in usage.items()},
                             "semantic": semantic_fields(semantic)}, indent=2))
        return 0
    if off is not None:
        out.text(off)
        if stats.calls == 0 and not any(n for n, _ in usage.values()):
            return 0  # a table of zeros would say only that nothing happened
        out.text("")
    rows = [["directory", str(cache.directory)], *stats_rows(stats), *semantic_rows(semantic)]
    rows += [[f"{tier} entries", f"{n:,} ({byte_size(b)})"] for tier, (n, b) in usage.items() if tier != "memory"]
    out.table(["", ""], rows, header=False, keep={0})
    return 0


def _caching_off() -> str:
    """Why caching is off in this process, and how to turn it on."""
    value = os.environ.get("LLM_MEMO_DISABLE", "").strip()
    if value.lower() not in ("", "0", "false", "no"):
        return (f"caching is off: LLM_MEMO_DISABLE={value} is set, so calls run uncached and are not counted.\n"
                "To turn it on, unset LLM_MEMO_DISABLE (or set LLM_MEMO_DISABLE=0).")
    return ("caching is off: llm_memo.configure(enabled=False) turned it off in this process.\n"
            "To turn it on: llm_memo.configure(enabled=True).")


def cmd_ls(cache: Cache, args: argparse.Namespace, out: Out) -> int:
    entries = sorted(select(cache, args, cache.clock()), key=lambda s: s.header.created_at, reverse=True)
    shown = entries[:args.limit] if args.limit else entries
    rows = [[s.key[:12] if out.fits else s.key, str(s.metadata.get("function") or "-"),
             str(s.metadata.get("model") or "-"), timestamp(s.header.created_at, not out.fits),
             timestamp(s.header.expires_at, not out.fits),
             ",".join(user_tags(s.metadata)) or "-", byte_size(s.size), call_preview(s.metadata)] for s in shown]
    if not rows and out.tty:
        out.note("no entries" + (" match" if _filtered(args) else f" in {cache.directory}"))
        return 0
    columns, align = ["KEY", "FUNCTION", "MODEL", "CREATED", "EXPIRES", "TAGS", "SIZE", "CALL"], "llllllrl"
    matches = semantic_matches(cache.directory)
    if matches:  # entries that answered paraphrases: how often, and the newest prompt they matched
        columns, align = [*columns, "SEMANTIC HITS"], align + "l"
        for row, s in zip(rows, shown, strict=True):
            count, prompt = matches.get(s.key, (0, ""))
            row.append(f"{count}: {prompt!r}" if count else "-")
    out.table(columns, rows, align=align, keep={0, 3, 4, 6})  # key, dates and size are never cut first
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
        out.data(orjson.dumps(export_record(stored), option=orjson.OPT_INDENT_2).decode())
        return 0
    h, meta = stored.header, stored.metadata
    rows = [["key", stored.key], ["function", str(meta.get("function") or "-")],
            ["model", str(meta.get("model") or "-")], ["policy", str(meta.get("policy") or "-")],
            ["tier", stored.tier], ["created", timestamp(h.created_at)], ["expires", timestamp(h.expires_at)],
            ["tags", ", ".join(_tags(meta)) or "-"],
            ["size", byte_size(stored.size)], ["latency", f"{h.latency:.3f} s"], ["tokens", f"{h.tokens:,}"],
            ["cost", f"${h.cost:.6f}"], ["call", call_preview(meta, limit=10_000)]]
    rows += [["semantic hit", f"{prompt!r} (similarity {similarity:.3f}, {timestamp(at)})"]
             for prompt, similarity, at in semantic_hits(cache.directory, stored.key)]
    out.table(["", ""], rows, header=False, keep={0})
    out.text("value:\n" + value_text(stored, cache.allow_pickle))
    return 0


def check_usage(args: argparse.Namespace) -> None:
    """Mistakes argparse cannot see, found before any cache is opened (UsageError)."""
    if args.command == "clear" and args.all == _filtered(args):
        raise UsageError("clear takes --all, or filters (--tag, --function, --model, --expired, --older-than)")


def cmd_clear(cache: Cache, args: argparse.Namespace, out: Out) -> int:
    if args.all:
        count = sum(1 for _ in cache.keys())  # noqa: SIM118 (a Cache, not a dict)
        if not _confirmed(out, args, count, f"remove all {count} entries from {cache.directory}?"):
            return 0
        removed = cache.clear()
    else:
        keys = [s.key for s in select(cache, args, cache.clock())]
        if not _confirmed(out, args, len(keys), f"remove {len(keys)} entries from {cache.directory}?"):
            return 0
        deleted = cache.delete_many(keys)  # how many were live
        removed = len(keys) if args.expired else deleted
    out.text(f"removed {removed} {'entry' if removed == 1 else 'entries'}")
    return 0


def _confirmed(out: Out, args: argparse.Namespace, count: int, question: str) -> bool:
    """True to go ahead; else says nothing was removed and how to remove it (declining is no error)."""
    if not count or args.yes or out.confirm(question):
        return True
    why = "" if out.can_ask() else " (no terminal to confirm on)"
    out.text(f"nothing removed{why}: add --yes to remove {count} {'entry' if count == 1 else 'entries'}")
    return False


def cmd_export(cache: Cache, args: argparse.Namespace, out: Out) -> int:
    count = pickled = unreadable = 0
    lines = []
    for stored in select(cache, args, cache.clock()):
        if stored.header.flags & FLAG_PICKLE:
            pickled += 1  # a pickle runs code when loaded: never handed to someone else
            continue
        try:
            lines.append(orjson.dumps(export_record(stored)) + b"\n")
        except (orjson.JSONDecodeError, orjson.JSONEncodeError):
            unreadable += 1  # a damaged value: the others still go out
            continue
        count += 1
    data = b"".join(lines)
    if args.file == "-":
        if data:
            out.data(data.decode())
    else:
        try:
            _write_private(args.file, data)
        except OSError as exc:
            raise CommandError(f"cannot write {args.file}: {exc.strerror or exc}") from None
    where = "stdout" if args.file == "-" else args.file
    out.note(f"exported {count} {'entry' if count == 1 else 'entries'} to {where}"
             + (f"; skipped {pickled} pickled (not portable)" if pickled else "")
             + (f"; skipped {unreadable} whose value is not JSON" if unreadable else ""))
    return 0


def _write_private(path: str, data: bytes) -> None:
    """Write an export 0600 (it holds prompts and answers), an existing file included."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(descriptor, "wb") as file:
        if stat.S_ISREG(os.fstat(descriptor).st_mode):  # not /dev/stdout or a pipe
            os.fchmod(descriptor, 0o600)
        file.write(data)


def cmd_import(cache: Cache, args: argparse.Namespace, out: Out) -> int:
    try:
        raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    now = cache.clock()
    imported = present = expired = 0
    rejected: list[str] = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            key, header, meta, value_json = parse_record(line, now)
        except ValueError as exc:
            if str(exc) == "expired":
                expired += 1  # stale, not wrong: skipped quietly
            else:
                rejected.append(f"line {n}: {exc}")
            continue
        if key in cache:
            present += 1
        elif cache.restore(key, header, meta, value_json):
            imported += 1
        else:
            rejected.append(f"line {n}: no tier could store it")
    for reason in rejected[:20]:
        out.note(f"rejected {reason}")
    if len(rejected) > 20:
        out.note(f"rejected {len(rejected) - 20} more lines")
    out.text(f"imported {imported}, already stored {present}"
             + (f", expired {expired}" if expired else "") + (f", rejected {len(rejected)}" if rejected else ""))
    return 1 if rejected else 0


def cmd_warm(args: argparse.Namespace, out: Out) -> int:
    from .._engine.warm import Call

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


COMMANDS: dict[str, Callable[[Cache, argparse.Namespace, Out], int]] = {
    "stats": cmd_stats, "ls": cmd_ls, "show": cmd_show, "clear": cmd_clear, "export": cmd_export,
    "import": cmd_import,
}
