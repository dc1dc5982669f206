"""%llm_memo in a real IPython shell, the HTML reprs, and notebook badges."""

from __future__ import annotations

import html
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import llm_memo
from llm_memo import Cache, Stats, llm_cache


@pytest.fixture(scope="module")
def shell() -> InteractiveShell:
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "llm_memo")
    return ip


@pytest.fixture
def ask(shell: InteractiveShell) -> Iterator[Any]:
    """A cached function in the shell's namespace, on the default cache; 1 miss and 1 hit."""
    shell.run_cell(
        "import llm_memo\n"
        "@llm_memo.llm_cache(ttl=3600, tags=['nb'])\n"
        "def ask(prompt, model='gpt-4o-mini'):\n"
        "    return prompt.upper()\n"
        "ask('What is a monad?'); ask('What is a monad?'); ask('What is a functor?', model='gpt-4.1')\n"
    )
    yield shell.user_ns["ask"]


def magic(shell: InteractiveShell, line: str) -> Any:
    with capture_output() as captured:
        shell.run_line_magic("llm_memo", line)
    return captured


def test_stats_renders_an_html_table_with_savings_highlighted(shell: InteractiveShell, ask: Any) -> None:
    captured = magic(shell, "stats")
    [output] = captured.outputs
    html, text = output.data["text/html"], output.data["text/plain"]
    assert html.startswith("<table")
    assert "<th style='text-align:left;padding:2px 10px'>hits</th>" in html
    assert "1 (33.3% of lookups)" in html  # this kernel's unwritten counts are included
    assert html.count("background:#e6f6ea;font-weight:bold") == 3 * 2  # time, tokens, cost saved rows
    assert "hits          1 (33.3% of lookups)" in text
    assert "\x1b" not in text
    assert captured.stderr == ""


def test_stats_by_function(shell: InteractiveShell, ask: Any) -> None:
    html = magic(shell, "stats --by function").outputs[0].data["text/html"]
    assert "<thead>" in html and ">FUNCTION</th>" in html
    assert ask.cache_function_name in html


def test_ls_show_and_clear(shell: InteractiveShell, ask: Any) -> None:
    html = magic(shell, "ls --model gpt-4.1").outputs[0].data["text/html"]
    assert html.count("<tr>") == 2  # the header and one entry
    assert "What is a functor?" in html
    key = ask.cache_key("What is a functor?", model="gpt-4.1")
    shown = magic(shell, f"show {key[:8]}").outputs[0].data
    assert key in shown["text/html"] and "WHAT IS A FUNCTOR?" in shown["text/html"]
    cleared = magic(shell, "clear --function ask --model gpt-4.1")  # no question in a cell
    assert "removed 1 entry" in cleared.outputs[0].data["text/plain"]
    assert key not in llm_memo.default_cache()


def test_mistakes_print_one_line(shell: InteractiveShell, ask: Any) -> None:
    for line, fragment in [("bogus", "invalid choice: 'bogus'"), ("show zz", "bad key 'zz'"),
                           ("warm nowhere calls.jsonl", "__main__ has no attribute 'nowhere'"),
                           ("serve", "serve is not available here"), ("show 'unclosed", "No closing quotation"),
                           ("clear", "clear takes --all, or filters"), ("--dir /tmp", "required: COMMAND")]:
        captured = magic(shell, line)
        assert captured.outputs == []
        assert captured.stderr.startswith("%llm_memo: error: ") and fragment in captured.stderr, (line, captured.stderr)
        assert len(captured.stderr.strip().splitlines()) == 1


def test_warm_takes_a_function_of_the_notebook_by_name(shell: InteractiveShell, ask: Any,
                                                      tmp_path: Path) -> None:
    calls = tmp_path / "calls.jsonl"
    calls.write_text('{"args": ["What is a monad?"]}\n{"args": ["What is a lens?"]}\n'
                     '{"kwargs": {"prompt": "What is a prism?", "model": "gpt-4.1"}}\n')
    captured = magic(shell, f"warm ask {calls} --no-progress")
    assert "warmed 2, already cached 1, failed 0" in captured.outputs[0].data["text/plain"]
    assert ask.cache_key("What is a lens?") in llm_memo.default_cache()


def test_help_does_not_leave_the_shell(shell: InteractiveShell) -> None:
    captured = magic(shell, "--help")
    assert "usage: llm-memo" in captured.stdout


@pytest.mark.parametrize("line", ["", "   "])
def test_no_arguments_prints_the_help(shell: InteractiveShell, line: str) -> None:
    captured = magic(shell, line)
    assert captured.stderr == ""
    text = captured.stdout
    assert text.startswith("%llm_memo COMMAND")
    for verb in ("stats", "ls", "show", "clear", "export", "import", "warm"):
        assert f"\n  {verb} " in text, verb
    assert "lifetime hits, misses" in text  # each command with what it does
    assert "serve" not in text and "demo" not in text  # terminal-only commands are not offered
    assert "%llm_memo stats --help" in text


def test_stats_says_when_this_kernel_turned_caching_off(shell: InteractiveShell) -> None:
    llm_memo.configure(enabled=False)
    try:
        [output] = magic(shell, "stats").outputs
    finally:
        llm_memo.configure(enabled=True)
    text = output.data["text/plain"]
    assert text.startswith("caching is off: llm_memo.configure(enabled=False)")
    assert "llm_memo.configure(enabled=True)" in text


def test_dir_reads_another_cache(shell: InteractiveShell, tmp_path: Path) -> None:
    with Cache(tmp_path / "other") as other:

        @llm_cache(cache=other, ttl=60)
        def elsewhere(x: int) -> int:
            return x

        for i in range(3):
            elsewhere(i)
    html = magic(shell, f"ls --dir {tmp_path / 'other'}").outputs[0].data["text/html"]
    assert html.count("<tr>") == 4


# ---- reprs -------------------------------------------------------------------------------------

def test_html_reprs(tmp_path: Path) -> None:
    stats_html = Stats(hits=3, misses=1, tokens_saved=120, cost_saved=0.25, time_saved=4.5)._repr_html_()
    assert "75%" in stats_html and "<b>$0.2500</b>" in stats_html
    with Cache(tmp_path / "c") as cache:

        @llm_cache(cache=cache, ttl=60)
        def ask(prompt: str) -> str:
            return "<b>not markup</b>"

        ask("q")
        ask("q")
        entry = cache.get_entry(ask.cache_key("q"))
        assert entry is not None
        entry_html = entry._repr_html_()
        assert "&lt;b&gt;not markup&lt;/b&gt;" in entry_html
        assert "UTC" in entry_html and html.escape(ask.cache_function_name) in entry_html and "prompt=&#x27;q&#x27;" in entry_html
        assert entry.latency > 0 and "<b>saves per hit</b>" in entry_html
        cache_html = cache._repr_html_()
    assert "llm_memo cache" in cache_html and str(tmp_path / "c") in cache_html
    assert "<td>disk</td><td>1</td>" in cache_html
    assert "<td>memory</td><td>1</td>" in cache_html
    assert "hits" in cache_html and "<b>time saved</b>" in cache_html


# ---- badges ------------------------------------------------------------------------------------

@pytest.fixture
def badges() -> Iterator[None]:
    llm_memo.configure(notebook_badges=True)
    try:
        yield
    finally:
        llm_memo.configure(notebook_badges=False)


def test_a_hit_shows_a_badge_when_asked(shell: InteractiveShell, badges: None) -> None:
    shell.run_cell("import llm_memo\n@llm_memo.llm_cache(ttl=60)\ndef slow(x):\n    import time; time.sleep(0.02); return x\n")
    with capture_output() as first:
        shell.run_cell("slow(1)")
    assert first.outputs == []  # a miss: no badge
    with capture_output() as second:
        shell.run_cell("slow(1)")
    [badge] = second.outputs
    text = badge.data["text/plain"]
    assert text.startswith("⚡ cached (memory, saved ") and text.endswith(" ms)")
    assert "slow" in badge.data["text/html"] and "⚡ cached" in badge.data["text/html"]


def test_no_badge_by_default_or_off_the_main_thread(shell: InteractiveShell) -> None:
    shell.run_cell("import llm_memo\n@llm_memo.llm_cache(ttl=60)\ndef quiet(x):\n    return x\nquiet(1)\n")
    with capture_output() as captured:
        shell.run_cell("quiet(1)")
    assert captured.outputs == []
    llm_memo.configure(notebook_badges=True)
    try:
        quiet = shell.user_ns["quiet"]
        quiet(2)
        with capture_output() as captured:
            worker = threading.Thread(target=quiet, args=(2,))
            worker.start()
            worker.join()
        assert captured.outputs == []
    finally:
        llm_memo.configure(notebook_badges=False)


def test_a_failing_badge_never_fails_the_call(shell: InteractiveShell, badges: None,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import IPython.display

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("display is broken")

    monkeypatch.setattr(IPython.display, "display", broken)

    @llm_cache(ttl=60)
    def ask(x: int) -> int:
        return x

    assert [ask(1), ask(1)] == [1, 1]
