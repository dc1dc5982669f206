"""Notebooks: the %llm_memo magic (the llm-memo commands, as HTML tables) and hit badges.

``%load_ext llm_memo`` registers ``%llm_memo stats|ls|show|clear|export|import|warm ...``,
parsed by the llm-memo command line's own parser (``warm`` also takes a function defined in
the notebook by its bare name). Without ``--dir`` the magic works on
this process's default cache (so it sees what this kernel has not written yet). IPython
is imported here only, and only when a notebook asks for it.
"""

from __future__ import annotations

import html
import io
import logging
import shlex
import sys
import threading
from collections.abc import Collection
from typing import Any

from .._engine.config import default_cache
from .._storage.cache import Hit
from .cli import CommandError, Out, UsageError, build_parser, run

__all__ = ["load_ipython_extension", "show_badge"]

logger = logging.getLogger("llm_memo")
# serve and demo belong in a terminal; in a notebook: LocalServer, and the demo notebook.
_VERBS = ("stats", "ls", "show", "clear", "export", "import", "warm")
_STYLE = "border-collapse:collapse;font-size:90%"
_CELL = "text-align:left;padding:2px 10px"
_SAVED = "background:#e6f6ea"


def load_ipython_extension(ipython: Any) -> None:
    """Register %llm_memo with `ipython` (called by ``%load_ext llm_memo``)."""
    ipython.register_magic_function(llm_memo_magic, magic_kind="line", magic_name="llm_memo")


def llm_memo_magic(line: str) -> None:
    """%llm_memo stats|ls|show|clear|export|import|warm [options]: the llm-memo commands (see --help)."""
    try:
        argv = shlex.split(line)
    except ValueError as exc:
        print(f"%llm_memo: error: {exc}", file=sys.stderr)
        return
    if not argv:
        print(_usage())
        return
    if len(argv) > 1 and argv[0] == "warm" and ":" not in argv[1] and not argv[1].startswith("-"):
        argv[1] = f"__main__:{argv[1]}"  # the notebook's own namespace is the kernel's __main__
    out = HtmlOut()
    try:
        run(argv, out, cache=default_cache(), only=_VERBS)
    except (UsageError, CommandError) as exc:
        print(f"%llm_memo: error: {exc}", file=sys.stderr)
    except SystemExit:  # --help printed its text
        pass
    out.show()


def _usage() -> str:
    """What %llm_memo alone prints: the commands a notebook has, described by the CLI's own parser."""
    parser = build_parser(prog="%llm_memo")
    commands = next(action for action in parser._actions if action.dest == "command")  # the subcommands
    lines = ["%llm_memo COMMAND [options]: the llm-memo commands, on this kernel's default cache "
             "(or another with --dir DIR)", ""]
    lines += [f"  {verb:8} {commands.choices[verb].description}" for verb in _VERBS]
    lines += ["", "Each command's options: %llm_memo stats --help, %llm_memo ls --help, ..."]
    return "\n".join(lines)


class HtmlOut(Out):
    """Collects a command's output, then displays it as HTML (with a plain-text twin)."""

    def __init__(self) -> None:
        self._text = io.StringIO()
        super().__init__(stdout=self._text, stderr=sys.stderr, tty=True)
        self.interactive = False  # no prompts in a cell: the command line itself is the confirmation
        self._html: list[str] = []

    def table(self, columns: list[str], rows: list[list[str]], *, align: str = "", header: bool = True,
              title: str = "", keep: Collection[int] = ()) -> None:
        super().table(columns, rows, align=align, header=header, title=title, keep=keep)
        self._html.append(html_table(columns if header else None, rows, align))

    def text(self, text: str) -> None:
        super().text(text)
        self._html.append(f"<pre>{html.escape(text)}</pre>")

    def data(self, text: str) -> None:
        super().data(text)
        self._html.append(f"<pre>{html.escape(text)}</pre>")

    def show(self) -> None:
        if not self._html:
            return
        from IPython.display import display

        display({"text/html": "".join(self._html), "text/plain": self._text.getvalue().rstrip("\n")}, raw=True)


def html_table(columns: list[str] | None, rows: list[list[str]], align: str = "") -> str:
    """A compact HTML table; savings (a "saved" row or column) highlighted."""
    saved_columns = {i for i, c in enumerate(columns or ()) if "SAVED" in c.upper()}

    def cell(tag: str, text: str, i: int, saved: bool) -> str:
        style = _CELL + (";text-align:right" if i < len(align) and align[i] == "r" else "")
        if saved:
            style += f";{_SAVED};font-weight:bold"
        return f"<{tag} style='{style}'>{html.escape(text)}</{tag}>"

    head = ("<thead><tr>" + "".join(cell("th", c, i, False) for i, c in enumerate(columns)) + "</tr></thead>"
            if columns else "")
    body = "".join(
        "<tr>" + "".join(cell("th" if columns is None and i == 0 else "td", c, i,
                              i in saved_columns or (columns is None and "saved" in row[0]))
                         for i, c in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<table style='{_STYLE}'>{head}<tbody>{body}</tbody></table>"


def _seconds(seconds: float) -> str:
    if seconds < 0.001:
        return "<1 ms"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def show_badge(function: str, hit: Hit) -> None:
    """Under IPython, on the main thread: a small "⚡ cached (tier, saved …)" note. Never raises."""
    try:
        module = sys.modules.get("IPython")
        if module is None or module.get_ipython() is None or threading.current_thread() is not threading.main_thread():
            return
        from IPython.display import display

        saved = f", saved {_seconds(hit.latency)}" if hit.latency > 0 else ""
        text = f"⚡ cached ({hit.tier}{saved})"
        badge = (f"<span title='{html.escape(function)}' style='font-size:80%;color:#1a7f37;"
                 f"background:#e6f6ea;border-radius:4px;padding:1px 6px'>{html.escape(text)}</span>")
        display({"text/plain": text, "text/html": badge}, raw=True)
    except Exception as exc:  # a badge is decoration: it never fails the call
        logger.debug("llm_memo: notebook badge failed (%s: %s)", type(exc).__name__, exc)
