"""llm-memo as a good citizen: cached content cannot drive the terminal, `clear` asks or does nothing,
read-only commands write nothing (and read a read-only cache), `ls` fits the terminal, and one
bad entry (absurd times, a corrupt value, a non-UTF-8 Redis key name) cannot break the rest."""

from __future__ import annotations

import contextlib
import math
import os
import re
import select
import shutil
import subprocess
import sys
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from llm_memo import Cache, llm_cache
from llm_memo._logic.codec import FLAG_PLAIN, Header, pack
from llm_memo._tools.output import safe, safe_json, shorten

pytestmark = pytest.mark.slow
HEX = re.compile(r"[0-9a-f]{64}")
# What must never reach a terminal from cached data: C0 controls but \n and \t, DEL, C1 controls,
# bidi embeddings, overrides, isolates and marks, and Unicode line/paragraph separators.
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
EVIL = "\x1b[2J\x1b]0;pwned\x07\r\b\x9b31m\u202egnp.exe\x7f"
DATE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}")


def cli(directory: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None,
        drop_root: bool = False) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "LLM_MEMO_DIR": str(directory), "NO_COLOR": "1", **(env or {})}
    if "LLM_MEMO_REDIS_URL" not in (env or {}):
        environment.pop("LLM_MEMO_REDIS_URL", None)
    command = [sys.executable, "-m", "llm_memo", *args]
    if drop_root and os.geteuid() == 0:  # root ignores chmod: drop what lets it (as conftest.run_python)
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv, so chmod 0500 cannot stop writes")
        drop = "-dac_override,-dac_read_search"
        command = [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}", *command]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=60,
                            input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)
    if drop_root and result.returncode and result.stderr.startswith("setpriv"):
        pytest.skip(f"cannot drop root's file capabilities here: {result.stderr.strip()}")
    return result


def run_in_pty(args: list[str], directory: Path, *, columns: int = 100,
               answer: bytes | None = None) -> tuple[int, str]:
    import pty

    leader, follower = pty.openpty()
    env = {**os.environ, "LLM_MEMO_DIR": str(directory), "COLUMNS": str(columns), "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    env.pop("LLM_MEMO_REDIS_URL", None)
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


def tsv(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines()]


def width(line: str) -> int:
    """Columns a terminal gives `line` (wide East Asian characters take two)."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in line)


def assert_safe(text: str) -> None:
    found = UNSAFE.findall(text)
    assert not found, (found, text)


@pytest.fixture
def populated(tmp_path: Path) -> Path:
    """4 entries of 2 functions, 2 hits (as tests/test_cli.py's)."""
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


# ---- the pure pieces: escaping and shortening ----------------------------------------------------

@given(st.text())
def test_safe_leaves_nothing_a_terminal_obeys(text: str) -> None:
    assert not UNSAFE.search(safe(text)) and "\t" not in safe(text) and "\n" not in safe(text)
    kept = safe(text, lines=True)
    assert not UNSAFE.search(kept)
    assert kept.count("\n") == text.count("\n") and kept.count("\t") == text.count("\t")
    if not re.search(r"[\x00-\x1f\x7f-\x9f]|[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]"
                     r"|[\ud800-\udfff]", text):
        assert safe(text) == text  # harmless text is untouched


@given(st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=10))
def test_safe_json_is_the_same_data(value: object) -> None:
    try:
        encoded = orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONEncodeError:
        return  # lone surrogates: not JSON orjson writes
    escaped = safe_json(encoded)
    assert not UNSAFE.search(escaped)
    assert orjson.loads(escaped) == value


@given(st.text(), st.integers(1, 120))
def test_shorten_fits_and_keeps_both_ends(text: str, columns: int) -> None:
    short = shorten(text, columns)
    assert width(short) <= columns
    if width(text) <= columns:
        assert short == text
    else:
        head, _, tail = short.partition("…")
        assert text.startswith(head) and text.endswith(tail)


# ---- control characters ------------------------------------------------------------------------

@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    """Entries whose values, arguments, tags, model, function name and metadata carry escape sequences."""
    directory = tmp_path / "cache"
    with Cache(directory) as cache:

        def ask(prompt: str, model: str = "gpt-4o") -> dict[str, str]:
            return {"answer": EVIL + prompt, EVIL: "key too"}

        ask.__qualname__ = f"ask{EVIL}"
        cached = llm_cache(cache=cache, ttl=3600, tags=[f"tag{EVIL}"])(ask)
        cached(f"prompt{EVIL}")
        cached("plain", model=f"gpt{EVIL}")
        cached(f"{EVIL}\n" * 3)
        header = Header(time.time() + 3600, time.time(), 1.0, 10, 0.01, FLAG_PLAIN)
        assert cache.restore("e" * 64, header, {"function": f"planted{EVIL}", "model": EVIL, "policy": EVIL,
                                                "args": {f"name{EVIL}": EVIL}, "tags": [EVIL, f"x{EVIL}"]},
                             orjson.dumps(f"value{EVIL}"))
    return directory


def _all_commands(directory: Path) -> Iterator[tuple[list[str], subprocess.CompletedProcess[str]]]:
    keys = [row[0] for row in tsv(cli(directory, "ls").stdout)[1:]]
    assert len(keys) == 4
    for args in (["ls"], ["ls", "--tag", f"tag{EVIL}"], ["stats"], ["stats", "--by", "function"],
                 ["stats", "--json"], ["export", "-"], *(["show", key] for key in keys),
                 *(["show", key, "--json"] for key in keys), ["show", "0" * 64]):
        yield args, cli(directory, *args)


def test_nothing_printed_carries_a_control_character(hostile: Path) -> None:
    for args, result in _all_commands(hostile):
        assert result.returncode == (1 if args == ["show", "0" * 64] else 0), (args, result.stderr)
        assert_safe(result.stdout)
        assert_safe(result.stderr)
    listing = cli(hostile, "ls").stdout
    assert "pwned" in listing and "planted" in listing  # shown, escaped, not dropped
    assert "\\x1b[2J" in listing


def test_json_output_stays_the_same_data(hostile: Path) -> None:
    exported = cli(hostile, "export", "-").stdout
    assert_safe(exported)
    records = {r["key"]: r for r in map(orjson.loads, exported.splitlines())}
    assert records["e" * 64]["value"] == f"value{EVIL}"  # escaped as JSON, so parsing gives it back
    assert records["e" * 64]["metadata"]["function"] == f"planted{EVIL}"
    shown = orjson.loads(cli(hostile, "show", "e" * 64, "--json").stdout)
    assert shown["metadata"]["args"] == {f"name{EVIL}": EVIL}


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pty")
def test_a_terminal_gets_no_control_character_but_ours(hostile: Path) -> None:
    keys = [row[0] for row in tsv(cli(hostile, "ls").stdout)[1:]]
    for args in (["ls"], ["stats"], ["stats", "--by", "function"], ["show", keys[0]], ["show", "e" * 64]):
        code, text = run_in_pty(args, hostile)
        assert code == 0, text
        assert_safe(text.replace("\x1b[1m", "").replace("\x1b[0m", ""))  # the bold header is ours


# ---- clear -----------------------------------------------------------------------------------

def ls_count(directory: Path) -> int:
    return len(tsv(cli(directory, "ls").stdout)) - 1


def test_clear_without_a_terminal_removes_nothing_unless_told(populated: Path) -> None:
    for args, stdin in ((["--all"], None), (["--tag", "team-a"], None), (["--all"], "y\n")):
        result = cli(populated, "clear", *args, stdin=stdin)
        assert result.returncode == 0, result.stderr
        assert "nothing removed" in result.stdout + result.stderr
        assert "--yes" in result.stdout + result.stderr
        assert ls_count(populated) == 4
    result = cli(populated, "clear", "--tag", "team-a", "--yes")
    assert (result.returncode, result.stdout) == (0, "removed 1 entry\n")
    result = cli(populated, "clear", "--all", "-y")
    assert (result.returncode, result.stdout) == (0, "removed 3 entries\n")
    assert ls_count(populated) == 0


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pty")
def test_declining_at_the_prompt_is_not_an_error(populated: Path) -> None:
    code, text = run_in_pty(["clear", "--all"], populated, answer=b"n\n")
    assert code == 0, text
    assert "remove all 4 entries" in text and "nothing removed" in text and "--yes" in text
    assert ls_count(populated) == 4
    code, text = run_in_pty(["clear", "--function", "ask"], populated, answer=b"\n")  # Enter: the default, no
    assert code == 0 and "nothing removed" in text
    assert ls_count(populated) == 4
    code, text = run_in_pty(["clear", "--function", "ask"], populated, answer=b"y\n")
    assert (code, text.strip().splitlines()[-1]) == (0, "removed 3 entries")


# ---- read-only commands ------------------------------------------------------------------------

READ_ONLY = (["stats"], ["stats", "--json"], ["stats", "--by", "day"], ["ls"], ["show", "ab"], ["export", "-"])


def tree(directory: Path) -> dict[str, tuple[int, int, float]]:
    """Every path under `directory` with its mode, size and modification time."""
    return {str(p.relative_to(directory)): (p.stat().st_mode, p.stat().st_size, p.stat().st_mtime)
            for p in [directory, *directory.rglob("*")]}


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_read_only_commands_create_nothing(tmp_path: Path, state: str) -> None:
    directory = tmp_path / "not-a-cache"
    if state == "empty":
        directory.mkdir(mode=0o755)
    before = tree(directory) if directory.exists() else None
    for args in (*READ_ONLY, ["clear", "--all", "--yes"], ["export", str(tmp_path / "out.jsonl")]):
        result = cli(directory, *args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert result.stdout == ""
        assert result.stderr == f"llm-memo: error: no llm_memo cache at {directory} (give --dir or set LLM_MEMO_DIR)\n"
    assert (tree(directory) if directory.exists() else None) == before
    assert not (tmp_path / "out.jsonl").exists()


def test_a_read_only_cache_is_read(populated: Path) -> None:
    key = tsv(cli(populated, "ls", "--model", "gpt-4.1").stdout)[1][0]
    for path in populated.iterdir():
        path.chmod(0o400)
    populated.chmod(0o500)
    before = tree(populated)
    try:
        listed = cli(populated, "ls", drop_root=True)
        assert listed.returncode == 0, listed.stderr
        assert len(tsv(listed.stdout)) == 5
        assert listed.stderr == ""
        stats = cli(populated, "stats", drop_root=True)
        assert stats.returncode == 0, stats.stderr
        rows = dict(tsv(stats.stdout))
        assert (rows["calls"], rows["hits"]) == ("6", "2 (33.3% of lookups)")  # the ledger, read
        assert rows["disk entries"].startswith("4 (")
        by_day = cli(populated, "stats", "--by", "day", drop_root=True)
        assert by_day.returncode == 0 and sum(int(row[1]) for row in tsv(by_day.stdout)[1:]) == 6
        shown = cli(populated, "show", key[:12], drop_root=True)
        assert shown.returncode == 0 and '"answer": "WHAT IS A MONAD?"' in shown.stdout
        exported = cli(populated, "export", "-", drop_root=True)
        assert exported.returncode == 0 and len(exported.stdout.splitlines()) == 4
        assert exported.stderr == "exported 4 entries to stdout\n"
        assert tree(populated) == before  # nothing written, nothing created
    finally:
        populated.chmod(0o700)


def test_read_only_commands_leave_a_writable_cache_alone(populated: Path) -> None:
    before = tree(populated)
    for args in (*READ_ONLY, ["ls", "--expired"], ["stats", "--by", "function"]):
        assert cli(populated, *args).returncode in (0, 1)  # show ab: no such entry
    assert tree(populated) == before  # not a byte, not even SQLite's -wal and -shm files


def test_read_only_commands_read_what_a_live_writer_holds(populated: Path) -> None:
    with Cache(populated) as cache:  # open: its -wal file holds what it wrote

        @llm_cache(cache=cache, ttl=3600)
        def late(prompt: str) -> str:
            return prompt

        late("written while the cache is open")
        assert len(tsv(cli(populated, "ls").stdout)) == 6
        assert len(cli(populated, "export", "-").stdout.splitlines()) == 5


# ---- 80 columns ----------------------------------------------------------------------------

@pytest.fixture
def wide(tmp_path: Path) -> Path:
    directory = tmp_path / "cache"
    with Cache(directory) as cache:

        def answer(question: str, model: str = "gpt-4o-mini") -> str:
            return "一二三四五" * 40 + question

        answer.__qualname__ = "a_function_with_a_very_long_name_" * 3 + "ending_in_tail"
        cached = llm_cache(cache=cache, ttl=3600, tags=["a-rather-long-tag-name", "日本語のタグ"])(answer)
        cached("x" * 500)
        cached("質問" * 100, model="provider/some-extremely-long-model-name-v2")
        cached("short")
    return directory


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pty")
@pytest.mark.parametrize("columns", [80, 100, 120])
def test_ls_fits_the_terminal_and_keeps_the_dates(wide: Path, columns: int) -> None:
    code, text = run_in_pty(["ls"], wide, columns=columns)
    assert code == 0, text
    header, *rows = text.replace("\x1b[1m", "").replace("\x1b[0m", "").splitlines()
    assert len(rows) == 3
    for line in (header, *rows):
        assert width(line) <= columns, (width(line), line)
    for row in rows:
        assert len(DATE.findall(row)) == 2, row  # created and expires, whole
        assert re.match(r"[0-9a-f]{12} ", row)
        assert "…" in row
    if columns == 120:
        assert all(re.search(r"  test_\S*…\S*_tail ", row) for row in rows), rows  # cut in the middle


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pty")
def test_ls_uses_a_wider_terminal(wide: Path) -> None:
    code, text = run_in_pty(["ls"], wide, columns=400)
    assert code == 0, text
    assert max(width(line) for line in text.splitlines()) > 200
    assert "a_function_with_a_very_long_name_" * 3 + "ending_in_tail" in text


def test_piped_ls_keeps_whole_values(wide: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)  # no width asked for: scripts read whole keys
    rows = tsv(cli(wide, "ls").stdout)[1:]
    assert all(HEX.fullmatch(row[0]) for row in rows)
    assert all(row[1].endswith("a_function_with_a_very_long_name_" * 3 + "ending_in_tail") for row in rows)


def test_piped_ls_fits_the_columns_it_is_given(wide: Path) -> None:
    listed = cli(wide, "ls", env={"COLUMNS": "80"})
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert len(rows) == 3
    assert all(width(line) <= 80 for line in (header, *rows)), listed.stdout
    assert all(len(DATE.findall(row)) == 2 and "…" in row for row in rows), rows  # dates whole, the middle cut


# ---- entries that are not what they should be --------------------------------------------------

def test_absurd_times_and_corrupt_values_break_nothing_else(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    with Cache(directory) as cache:

        @llm_cache(cache=cache, ttl=3600)
        def ask(prompt: str) -> str:
            return prompt.upper()

        ask("good")
        [good] = list(cache.keys())
        now = time.time()
        meta = {"function": "planted.job", "args": {"q": "x"}, "tags": []}
        bad = {
            "1" * 64: Header(now + 3600, 1e20, 0.0, 0, 0.0, FLAG_PLAIN),
            "2" * 64: Header(math.inf, now, 0.0, 0, 0.0, FLAG_PLAIN),
            "3" * 64: Header(now + 3600, -1e20, math.nan, 0, math.inf, FLAG_PLAIN),
            "4" * 64: Header(1e300, math.nan, 0.0, 0, 0.0, FLAG_PLAIN),
        }
        for key, header in bad.items():
            assert cache.restore(key, header, meta, b'"fine"')
        assert cache.restore("5" * 64, Header(now + 3600, now, 0.0, 0, 0.0, FLAG_PLAIN), meta, b"{not json")
        disk = next(t for t in cache.tiers if t.name == "disk")
        odd = {"function": 7, "tags": 5, "args": ["not", "a", "dict"], "model": {"x": 1}}
        disk.set("6" * 64, pack("6" * 64, b"1", odd, Header(now + 3600, now, 0.0, 0, 0.0, FLAG_PLAIN)), None)
        disk.set("7" * 64, pack("7" * 64, b'"old"', meta, Header(-5.0, now, 0.0, 0, 0.0, FLAG_PLAIN)), None)
    listed = cli(directory, "ls")
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stderr
    keys = {row[0] for row in tsv(listed.stdout)[1:]}
    assert good in keys and {"1" * 64, "2" * 64, "3" * 64, "4" * 64} <= keys
    for filtered in (["--older-than", "1d"], ["--tag", "x"], ["--function", "ask"], ["--model", "m"]):
        assert cli(directory, "ls", *filtered).returncode == 0
    for key in (good, *bad, "5" * 64, "6" * 64, "7" * 64):
        shown = cli(directory, "show", key)
        assert shown.returncode == 0, (key, shown.stderr)
        assert "Traceback" not in shown.stderr
    assert "invalid" in cli(directory, "show", "1" * 64).stdout
    exported = cli(directory, "export", "-")
    assert exported.returncode == 0, exported.stderr
    records = {r["key"]: r for r in map(orjson.loads, exported.stdout.splitlines())}
    assert records[good]["value"] == "GOOD"
    assert "5" * 64 not in records and "skipped 1" in exported.stderr  # the corrupt value, with a note
    assert "6" * 64 in records


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    from test_redis import Server

    (tmp_path / "redis").mkdir()
    server = Server(tmp_path / "redis").start()
    try:
        yield server.url
    finally:
        server.kill()


def test_non_utf8_redis_key_names_break_nothing_else(tmp_path: Path, redis_url: str) -> None:
    with Cache(tmp_path / "writer", redis_url=redis_url) as cache:

        @llm_cache(cache=cache, ttl=3600)
        def ask(prompt: str) -> str:
            return prompt.upper()

        ask("one")
        ask("two")
        keys = set(cache.keys())
    with contextlib.closing(redis.Redis.from_url(redis_url)) as client:
        ours = client.get(f"llm_memo:v:{min(keys)}".encode())
        assert ours is not None
        client.set(b"llm_memo:v:\xff\xfe" + b"0" * 62, ours)  # a whole entry under a name that is not UTF-8
        client.set(b"llm_memo:v:\xc3(", b"junk")
    Cache(tmp_path / "reader").close()  # an empty cache directory: Redis holds the entries
    env = {"LLM_MEMO_REDIS_URL": redis_url}
    listed = cli(tmp_path / "reader", "ls", env=env)
    assert listed.returncode == 0, listed.stderr
    assert {row[0] for row in tsv(listed.stdout)[1:]} == keys
    assert_safe(listed.stderr)
    exported = cli(tmp_path / "reader", "export", "-", env=env)
    assert {orjson.loads(line)["key"] for line in exported.stdout.splitlines()} == keys
    shown = cli(tmp_path / "reader", "show", min(keys)[:12], env=env)
    assert shown.returncode == 0, shown.stderr
    assert '"ONE"' in shown.stdout or '"TWO"' in shown.stdout
