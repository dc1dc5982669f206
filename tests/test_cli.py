"""llm-memo, run the way people run it: real subprocesses, no terminal (plus a pty where it matters)."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from llm_memo import Cache, llm_cache

pytestmark = pytest.mark.slow
HEX = re.compile(r"[0-9a-f]{64}")


def cli(directory: Path, *args: str, cwd: Path | None = None, stdin: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "LLM_MEMO_DIR": str(directory), "NO_COLOR": "1", **(env or {})}
    environment.pop("LLM_MEMO_REDIS_URL", None)
    return subprocess.run([sys.executable, "-m", "llm_memo", *args], capture_output=True, text=True,
                          env=environment, cwd=cwd, timeout=60,
                          input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("llm-memo: error: ")
    for fragment in fragments:
        assert fragment in result.stderr


def tsv(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines()]


@pytest.fixture
def populated(tmp_path: Path) -> Path:
    """A cache with 3 entries of `ask` (2 models, one tagged) and 1 of `summarize`; 2 hits."""
    directory = tmp_path / "cache"
    with Cache(directory) as cache:

        @llm_cache(cache=cache, ttl=3600)
        def ask(prompt: str, model: str = "gpt-4o-mini") -> dict[str, str]:
            return {"answer": prompt.upper()}

        @llm_cache(cache=cache, ttl=3600, tags=["team-a"])
        def summarize(text: str) -> str:
            return text[:10]

        ask("What is a monad?")
        ask("What is a monad?")
        ask("What is a functor?")
        ask("What is a monad?", model="gpt-4.1")
        summarize("A long text to summarize")
        summarize("A long text to summarize")
    return directory


def export_line(key: str, *, created_at: float, expires_at: float | None = None, **extra: Any) -> str:
    record = {"llm_memo_export": 1, "key": key, "created_at": created_at, "expires_at": expires_at,
              "latency": 1.5, "tokens": 42, "cost": 0.001, "tags": ["fn:old.job", "legacy"],
              "metadata": {"function": "old.job", "policy": "long", "model": None, "args": {"q": "hello"}},
              "value": {"\u0000": "tuple", "v": [1, "two"]}, **extra}
    return json.dumps(record)


# ---- stats ---------------------------------------------------------------------------------

def test_stats_are_lifetime_and_plain_when_piped(populated: Path) -> None:
    result = cli(populated, "stats")
    assert result.returncode == 0, result.stderr
    rows = dict(tsv(result.stdout))
    assert rows["directory"] == str(populated)
    assert rows["calls"] == "6"
    assert rows["hits"] == "2 (33.3% of lookups)"
    assert rows["misses"] == "4"
    assert rows["hits by tier"] == "memory 2"
    assert rows["disk entries"].startswith("4 (")
    assert {"time saved", "tokens saved", "cost saved"} <= rows.keys()
    assert "\x1b" not in result.stdout


def test_stats_json(populated: Path) -> None:
    result = cli(populated, "stats", "--json")
    data = json.loads(result.stdout)
    assert (data["hits"], data["misses"], data["calls"]) == (2, 4, 6)
    assert data["hit_rate"] == pytest.approx(1 / 3, abs=1e-5)
    assert data["hits_by_tier"] == {"memory": 2}
    assert data["tiers"]["disk"]["entries"] == 4
    by_model = json.loads(cli(populated, "stats", "--json", "--by", "model").stdout)
    assert by_model["by"] == "model"
    assert {g["model"]: g["calls"] for g in by_model["groups"]} == {None: 2, "gpt-4.1": 1, "gpt-4o-mini": 3}


@pytest.mark.parametrize("by", ["day", "function", "model"])
def test_stats_by(populated: Path, by: str) -> None:
    result = cli(populated, "stats", "--by", by)
    assert result.returncode == 0, result.stderr
    header, *rows = tsv(result.stdout)
    assert header[:4] == [by.upper(), "CALLS", "HITS", "MISSES"]
    assert sum(int(row[1]) for row in rows) == 6
    if by == "function":
        assert sorted(row[0].rsplit(".", 1)[-1] for row in rows) == ["ask", "summarize"]


def test_stats_says_caching_is_off_instead_of_zeros(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    Cache(directory).close()
    result = cli(directory, "stats", env={"LLM_MEMO_DISABLE": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("caching is off")
    assert "LLM_MEMO_DISABLE=1" in result.stdout and "unset LLM_MEMO_DISABLE" in result.stdout
    assert "calls\t0" not in result.stdout and "hits" not in result.stdout
    data = json.loads(cli(directory, "stats", "--json", env={"LLM_MEMO_DISABLE": "1"}).stdout)
    assert data["enabled"] is False
    assert json.loads(cli(directory, "stats", "--json").stdout)["enabled"] is True


def test_stats_with_caching_off_still_shows_what_was_recorded(populated: Path) -> None:
    result = cli(populated, "stats", env={"LLM_MEMO_DISABLE": "true"})
    assert result.returncode == 0, result.stderr
    note, table = result.stdout.split("\n\n", 1)
    assert note.startswith("caching is off") and "LLM_MEMO_DISABLE=true" in note
    assert dict(tsv(table))["calls"] == "6"


# ---- ls / show -----------------------------------------------------------------------------

def test_ls_lists_entries_with_their_metadata(populated: Path) -> None:
    header, *rows = tsv(cli(populated, "ls").stdout)
    assert header == ["KEY", "FUNCTION", "MODEL", "CREATED", "EXPIRES", "TAGS", "SIZE", "CALL"]
    assert len(rows) == 4
    assert all(HEX.fullmatch(row[0]) for row in rows)  # whole keys when piped
    assert sorted(row[2] for row in rows) == ["-", "gpt-4.1", "gpt-4o-mini", "gpt-4o-mini"]
    assert any("prompt='What is a functor?'" in row[7] for row in rows)
    tagged = [row for row in rows if row[5] == "team-a"]
    assert len(tagged) == 1 and tagged[0][1].endswith(".summarize") and tagged[0][2] == "-"


@pytest.mark.parametrize(("args", "count"), [
    (["--function", "ask"], 3), (["--function", "*summ*"], 1), (["--model", "gpt-4.1"], 1),
    (["--tag", "team-a"], 1), (["--limit", "2"], 2), (["--expired"], 0), (["--function", "nothing"], 0),
])
def test_ls_filters(populated: Path, args: list[str], count: int) -> None:
    result = cli(populated, "ls", *args)
    assert result.returncode == 0, result.stderr
    assert len(tsv(result.stdout)) - 1 == count
    if args == ["--limit", "2"]:
        assert result.stderr.strip() == "2 more (raise --limit)"


def test_show_by_unique_prefix(populated: Path) -> None:
    rows = tsv(cli(populated, "ls", "--model", "gpt-4.1").stdout)
    key = rows[1][0]
    result = cli(populated, "show", key[:10])
    assert result.returncode == 0, result.stderr
    assert f"key\t{key}" in result.stdout
    assert "model\tgpt-4.1" in result.stdout
    assert '"answer": "WHAT IS A MONAD?"' in result.stdout
    record = json.loads(cli(populated, "show", key[:10], "--json").stdout)
    assert record["key"] == key and record["value"] == {"answer": "WHAT IS A MONAD?"}


def test_show_errors(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    with Cache(directory) as cache:

        @llm_cache(cache=cache, ttl=60)
        def echo(i: int) -> int:
            return i

        for i in range(17):  # 17 keys: two of them share a first hex digit
            echo(i)
        keys = list(cache.keys())
    first = [k[0] for k in keys]
    shared = next(c for c in first if first.count(c) > 1)
    one_line_error(cli(directory, "show", shared), 1, "ambiguous", "give more digits")
    missing = next(c for c in "0123456789abcdef" * 4 if not any(k.startswith(c * 3) for k in keys)) * 3
    one_line_error(cli(directory, "show", missing), 1, "no entry with key")
    one_line_error(cli(directory, "show", "not-hex"), 2, "bad key 'not-hex'")
    one_line_error(cli(directory, "show", "A" * 70), 2, "bad key")


# ---- clear -----------------------------------------------------------------------------------

def test_clear_by_filters(populated: Path) -> None:
    result = cli(populated, "clear", "--function", "ask", "--model", "gpt-4o-mini", "--yes")
    assert (result.returncode, result.stdout) == (0, "removed 2 entries\n")
    assert len(tsv(cli(populated, "ls").stdout)) - 1 == 2
    assert cli(populated, "clear", "--tag", "team-a", "--yes").stdout == "removed 1 entry\n"
    assert cli(populated, "clear", "--expired").stdout == "removed 0 entries\n"  # nothing to ask about
    result = cli(populated, "clear", "--all", "--yes")  # no terminal: --yes, or nothing is removed
    assert (result.returncode, result.stdout) == (0, "removed 1 entry\n")
    assert cli(populated, "ls").stdout.splitlines()[1:] == []


def test_expired_entries_are_listed_and_cleared(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    with Cache(directory, clock=lambda: time.time() - 7200) as past:  # written two hours ago

        @llm_cache(cache=past, ttl=60)
        def ask(prompt: str) -> str:
            return prompt.upper()

        ask("stale one")
        ask("stale two")
    with Cache(directory) as now:
        @llm_cache(cache=now, ttl=3600)
        def fresh(prompt: str) -> str:
            return prompt

        fresh("still good")
    listed = tsv(cli(directory, "ls", "--expired").stdout)[1:]
    assert sorted(row[-1] for row in listed) == ["prompt='stale one'", "prompt='stale two'"]
    assert len(tsv(cli(directory, "ls").stdout)) - 1 == 1  # ls alone shows the live one only
    assert cli(directory, "clear", "--expired", "--function", "ask", "-y").stdout == "removed 2 entries\n"
    assert tsv(cli(directory, "ls", "--expired").stdout)[1:] == []
    assert len(tsv(cli(directory, "ls").stdout)) - 1 == 1


def test_clear_older_than(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    now = time.time()
    lines = [export_line("a" * 64, created_at=now - 10 * 86400), export_line("b" * 64, created_at=now - 3600)]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    assert cli(directory, "import", str(tmp_path / "in.jsonl")).returncode == 0
    assert cli(directory, "clear", "--older-than", "7d", "--yes").stdout == "removed 1 entry\n"
    assert [row[0] for row in tsv(cli(directory, "ls").stdout)[1:]] == ["b" * 64]
    assert cli(directory, "clear", "--older-than", "1d12h").stdout == "removed 0 entries\n"


@pytest.mark.parametrize(("args", "fragment"), [
    (["clear"], "clear takes --all, or filters"),
    (["clear", "--all", "--tag", "x"], "clear takes --all, or filters"),
    (["clear", "--older-than", "7x"], "bad duration '7x'"),
    (["clear", "--older-than", "d7"], "bad duration 'd7'"),
    (["ls", "--limit", "0"], "expected a whole number >= 1"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    ([], "required: COMMAND"),
    (["stats", "--by", "week"], "invalid choice: 'week'"),
    (["warm", "nocolon", "f.jsonl"], "use MODULE:FUNCTION"),
])
def test_usage_errors_are_one_line_and_exit_2(tmp_path: Path, args: list[str], fragment: str) -> None:
    (tmp_path / "cache").mkdir()
    one_line_error(cli(tmp_path / "cache", *args), 2, fragment)


def test_a_missing_directory_is_an_error_not_a_new_cache(tmp_path: Path) -> None:
    for command in (["stats"], ["ls"], ["show", "ab"], ["clear", "--all"], ["export", "-"]):
        one_line_error(cli(tmp_path / "nowhere", *command), 1, "no llm_memo cache at")
    assert not (tmp_path / "nowhere").exists()


def test_dir_option_beats_the_environment(populated: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for args in (["--dir", str(populated), "ls"], ["ls", "--dir", str(populated)]):
        assert len(tsv(cli(tmp_path / "empty", *args).stdout)) == 5
    one_line_error(cli(tmp_path / "empty", "ls"), 1, "no llm_memo cache at")


# ---- export / import -------------------------------------------------------------------------

def test_export_then_import_into_another_directory(populated: Path, tmp_path: Path) -> None:
    target = tmp_path / "colleague"
    out = tmp_path / "entries.jsonl"
    result = cli(populated, "export", str(out))
    assert (result.returncode, result.stderr) == (0, f"exported 4 entries to {out}\n")
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert {r["metadata"]["function"].rsplit(".", 1)[-1] for r in records} == {"ask", "summarize"}
    assert all(set(r) >= {"key", "created_at", "expires_at", "latency", "tokens", "cost", "tags", "value"}
               for r in records)
    result = cli(target, "import", str(out))
    assert (result.returncode, result.stdout) == (0, "imported 4, already stored 0\n")
    assert cli(target, "import", str(out)).stdout == "imported 0, already stored 4\n"
    assert sorted(cli(target, "ls").stdout.splitlines()) == sorted(cli(populated, "ls").stdout.splitlines())
    with Cache(populated) as before, Cache(target) as after:
        for record in records:
            a, b = before.get_entry(record["key"]), after.get_entry(record["key"])
            assert a is not None and b is not None
            assert (a.value, a.created_at, a.expires_at, a.tags, a.metadata) == \
                   (b.value, b.created_at, b.expires_at, b.tags, b.metadata)


def test_export_to_stdout_with_a_filter(populated: Path) -> None:
    result = cli(populated, "export", "-", "--model", "gpt-4.1")
    [line] = result.stdout.splitlines()
    assert orjson.loads(line)["metadata"]["model"] == "gpt-4.1"
    assert result.stderr == "exported 1 entry to stdout\n"


def test_import_validates_every_line_and_reports_what_it_rejected(tmp_path: Path) -> None:
    now = time.time()
    good = export_line("c" * 64, created_at=now)
    lines = [
        good,
        "not json at all",
        "[1, 2]",
        json.dumps({"key": "d" * 64}),
        export_line("short", created_at=now),
        export_line("e" * 64, created_at=now, tokens=-3),
        export_line("f" * 64, created_at=now - 100, expires_at=now - 10),
        export_line("1" * 64, created_at=now, value={"\u0000": "pickle", "v": "gASVAAAAAAAAAAA="}),
        export_line("2" * 64, created_at=now, value={"\u0000": "no-such-tag", "v": 1}),
        "",
        export_line("3" * 64, created_at=now, tags="legacy"),
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = cli(tmp_path / "cache", "import", str(path))
    assert result.returncode == 1
    assert result.stdout == "imported 1, already stored 0, expired 1, rejected 8\n"
    rejected = result.stderr.splitlines()
    assert rejected[0].startswith("rejected line 2: not JSON")
    assert rejected[1] == "rejected line 3: not a JSON object"
    assert rejected[2] == "rejected line 4: not an llm_memo export line (llm_memo_export must be 1)"
    assert rejected[3] == "rejected line 5: key is not 64 hex digits"
    assert rejected[4] == "rejected line 6: tokens is not a number >= 0"
    assert rejected[5] == "rejected line 8: value: a pickle (code that runs when loaded)"
    assert rejected[6] == "rejected line 9: value: unknown value tag 'no-such-tag'"
    assert rejected[7] == "rejected line 11: tags is not a list of strings"
    with Cache(tmp_path / "cache") as cache:
        entry = cache.get_entry("c" * 64)
    assert entry is not None
    assert entry.value == (1, "two")
    assert entry.tags == ("fn:old.job", "legacy")


def test_import_of_only_expired_lines_succeeds(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(export_line("f" * 64, created_at=1.0, expires_at=2.0) + "\n")
    result = cli(tmp_path / "cache", "import", str(path))
    assert (result.returncode, result.stdout) == (0, "imported 0, already stored 0, expired 1\n")


def test_import_of_a_missing_file(tmp_path: Path) -> None:
    one_line_error(cli(tmp_path / "cache", "import", str(tmp_path / "nope.jsonl")), 1, "cannot read")


# ---- warm ------------------------------------------------------------------------------------

MODULE = textwrap.dedent("""
    import llm_memo

    CALLS = []

    @llm_memo.llm_cache(ttl=3600)
    def ask(prompt, model="gpt-4o-mini"):
        if prompt == "boom":
            raise RuntimeError("provider down")
        return prompt.upper()

    def plain(prompt):
        return prompt
""")


def test_warm_from_a_jsonl_file(tmp_path: Path) -> None:
    (tmp_path / "prompts.py").write_text(MODULE)
    calls = tmp_path / "calls.jsonl"
    calls.write_text("\n".join([
        '{"args": ["What is a monad?"]}',
        '{"kwargs": {"prompt": "What is a functor?", "model": "gpt-4.1"}}',
        '{"args": ["boom"]}',
        '["not", "a", "call"]',
        '{"args": ["What is a monad?"]}',
    ]) + "\n")
    directory = tmp_path / "cache"
    result = cli(directory, "warm", "prompts:ask", str(calls), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == "warmed 2, already cached 1, failed 1\n"
    assert result.stderr.splitlines() == ['skipped line 4: expected {"args": [...], "kwargs": {...}}',
                                          "failed line 3: RuntimeError: provider down"]
    again = cli(directory, "warm", "prompts:ask", str(calls), cwd=tmp_path)
    assert again.stdout == "warmed 0, already cached 3, failed 1\n"
    listed = tsv(cli(directory, "ls", "--function", "prompts.ask").stdout)
    assert len(listed) == 3


def test_warm_errors(tmp_path: Path) -> None:
    (tmp_path / "prompts.py").write_text(MODULE)
    (tmp_path / "calls.jsonl").write_text('{"args": ["x"]}\n')
    directory = tmp_path / "cache"
    one_line_error(cli(directory, "warm", "prompts:plain", "calls.jsonl", cwd=tmp_path), 1,
                   "prompts:plain is not decorated with @llm_cache")
    one_line_error(cli(directory, "warm", "prompts:nope", "calls.jsonl", cwd=tmp_path), 1, "no attribute 'nope'")
    one_line_error(cli(directory, "warm", "no_such_module:f", "calls.jsonl", cwd=tmp_path), 1,
                   "cannot import no_such_module")
    one_line_error(cli(directory, "warm", "prompts:ask", "missing.jsonl", cwd=tmp_path), 1, "cannot read")


@pytest.mark.parametrize("function", ["slow", "aslow"])
def test_ctrl_c_while_warming_keeps_what_was_warmed(tmp_path: Path, function: str) -> None:
    (tmp_path / "slowmod.py").write_text(textwrap.dedent("""
        import asyncio, time, llm_memo

        @llm_memo.llm_cache(ttl=3600)
        def slow(i):
            time.sleep(0.2)
            return i

        @llm_memo.llm_cache(ttl=3600)
        async def aslow(i):
            await asyncio.sleep(0.2)
            return i
    """))
    (tmp_path / "calls.jsonl").write_text("".join(f'{{"args": [{i}]}}\n' for i in range(100)))
    env = {**os.environ, "LLM_MEMO_DIR": str(tmp_path / "cache")}
    with subprocess.Popen([sys.executable, "-m", "llm_memo", "warm", f"slowmod:{function}", "calls.jsonl"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path) as proc:
        time.sleep(1.5)  # the interpreter starts, then a few rounds of 4 calls finish
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
    warmed = int(re.fullmatch(r"interrupted: warmed (\d+), already cached 0, failed 0\n", out).group(1))  # type: ignore[union-attr]
    assert 0 < warmed < 100
    stored = len(tsv(cli(tmp_path / "cache", "ls").stdout)) - 1
    assert warmed <= stored <= warmed + 4  # a call cancelled while its result was being written may land too


# ---- serve / demo ----------------------------------------------------------------------------

def test_serve_delegates_to_the_local_server(tmp_path: Path) -> None:
    assert "--latency" in cli(tmp_path, "serve", "--help").stdout
    with subprocess.Popen([sys.executable, "-m", "llm_memo", "serve", "--port", "0"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env={**os.environ, "LLM_MEMO_DIR": str(tmp_path)}) as proc:
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            assert re.match(r"OpenAI-style base_url: http://127\.0\.0\.1:\d+/v1$", first.strip()), first
        finally:
            proc.send_signal(signal.SIGINT)  # Ctrl-C: the server's own clean stop, or llm-memo's 130
            assert proc.wait(timeout=30) in (0, 130)
            assert proc.stderr is not None
            assert "Traceback" not in proc.stderr.read()


def test_demo_delegates_and_a_missing_demo_is_one_line(tmp_path: Path) -> None:
    result = cli(tmp_path, "demo", "--help")
    assert result.returncode == 0 and "usage: llm-memo demo" in result.stdout
    code = ("import sys; sys.modules['llm_memo._tools.demo'] = None; from llm_memo._tools.cli import main; "
            "sys.exit(main(['demo']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    one_line_error(result, 1, "the demo is not part of this install")


# ---- the terminal ------------------------------------------------------------------------------

def run_in_pty(args: list[str], directory: Path, answer: bytes | None = None) -> tuple[int, str]:
    import pty

    leader, follower = pty.openpty()
    env = {**os.environ, "LLM_MEMO_DIR": str(directory), "COLUMNS": "100", "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "llm_memo", *args], stdin=follower, stdout=follower,
                            stderr=follower, env=env, close_fds=True)
    os.close(follower)
    output = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
            if answer is not None and b"[y/N]" in output:
                os.write(leader, answer)
                answer = None
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(timeout=30), output.decode().replace("\r\n", "\n")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pty")
def test_a_terminal_gets_an_aligned_table(populated: Path) -> None:
    code, text = run_in_pty(["ls"], populated)
    assert code == 0
    header, *rows = text.splitlines()
    assert header.startswith("\x1b[1mKEY ")  # bold header
    assert "\t" not in text
    assert len(rows) == 4
    assert all(re.match(r"[0-9a-f]{12}  ", row) for row in rows)  # short keys
    assert all(len(row) <= 100 for row in rows)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pty")
def test_clear_asks_on_a_terminal(populated: Path) -> None:
    code, text = run_in_pty(["clear", "--all"], populated, answer=b"n\n")
    assert code == 0  # declining is no error
    assert "remove all 4 entries" in text and "nothing removed" in text
    assert len(tsv(cli(populated, "ls").stdout)) == 5
    code, text = run_in_pty(["clear", "--all"], populated, answer=b"y\n")
    assert (code, text.strip().splitlines()[-1]) == (0, "removed 4 entries")
    code, text = run_in_pty(["clear", "--tag", "x", "--yes"], populated)
    assert (code, text.strip()) == (0, "removed 0 entries")


# ---- packaging ---------------------------------------------------------------------------------

def test_console_script_and_module_agree(populated: Path) -> None:
    script = Path(sys.executable).with_name("llm-memo")
    if not script.exists():
        pytest.skip("llm-memo console script not installed in this environment")
    env = {**os.environ, "LLM_MEMO_DIR": str(populated)}
    by_script = subprocess.run([str(script), "stats", "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert json.loads(by_script.stdout)["hits"] == json.loads(cli(populated, "stats", "--json").stdout)["hits"]


def test_importing_llm_memo_loads_no_tool() -> None:
    code = ("import sys, llm_memo; print(sorted(m for m in ('llm_memo._tools.cli', 'llm_memo._tools.jupyter', 'argparse', "
            "'IPython', 'tqdm', 'llm_memo.testing.server') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout
