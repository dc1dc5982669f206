"""llm-memo: manage a cache from a terminal (stats, ls, show, clear, export, import, warm, serve, demo).

Every command reads ``--dir``, else ``$LLM_MEMO_DIR``, else the default cache directory;
every command but ``import`` needs a cache there (exit 1 "no llm_memo cache at ..." when there
is none), and the read-only ones (stats, ls, show, export) open it read-only: they create and
write nothing, and they read a cache on a read-only mount. ``clear`` asks on a terminal and,
without one, removes nothing unless given ``--yes``.
Output is an aligned table on a terminal (cut in the middle to its width) and tab-separated
text when piped; control characters in cached content are shown escaped, never sent. Mistakes
end in one line on stderr: exit 2 for usage (unknown command, bad key, bad duration),
1 for everything else; never a traceback.
This module parses and dispatches; ``_cli_commands`` does the work and ``_cli_output`` shows it.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from .._storage.cache import Cache, default_directory
from .._storage.disk_read import has_database
from .commands import COMMANDS, CommandError, UsageError, check_usage, cmd_warm
from .output import Out

__all__ = ["CommandError", "Out", "UsageError", "build_parser", "main", "run"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


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
        from ..testing.server import main as serve

        return serve(rest)
    try:
        from .demo import main as demo
    except ModuleNotFoundError as exc:
        if exc.name == "llm_memo._tools.demo":
            raise CommandError("the demo is not part of this install (llm_memo._tools.demo is missing)") from None
        raise CommandError(f"the demo needs {exc.name}: pip install 'llm_memo[demo]'") from None
    if directory and "--dir" not in rest:
        rest = ["--dir", directory, *rest]
    return demo(rest)


READ_ONLY = ("stats", "ls", "show", "export")


def open_cache(args: argparse.Namespace) -> Cache:
    """The cache --dir / $LLM_MEMO_DIR names (read-only for READ_ONLY commands); CommandError
    when there is none, so that no command but import creates one."""
    directory = Path(args.dir).expanduser() if getattr(args, "dir", None) else default_directory()
    if args.command != "import" and not has_database(directory):
        raise CommandError(f"no llm_memo cache at {directory} (give --dir or set LLM_MEMO_DIR)")
    return Cache(directory, memory_maxsize=0, read_only=args.command in READ_ONLY)


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
            from .._engine.config import configure

            configure(args.dir)
        return cmd_warm(args, out)
    check_usage(args)
    if cache is not None and not getattr(args, "dir", None):
        return COMMANDS[args.command](cache, args, out)
    with open_cache(args) as opened:
        return COMMANDS[args.command](opened, args, out)


class _NoteHandler(logging.Handler):
    """The library's warnings (a tier fault, a skipped entry) as notes: escaped like the rest."""

    def __init__(self, out: Out) -> None:
        super().__init__(logging.WARNING)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.out.note(record.getMessage())
        except Exception:
            self.handleError(record)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `llm-memo` and `python -m llm_memo`."""
    out = Out()
    logger = logging.getLogger("llm_memo")
    handler = _NoteHandler(out)
    logger.addHandler(handler)
    try:
        return _main(sys.argv[1:] if argv is None else argv, out)
    finally:
        logger.removeHandler(handler)


def _main(argv: list[str], out: Out) -> int:
    try:
        return run(argv, out)
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
