"""Cache through the public API: lifetimes and promotion, persistence across processes,
corrupted and hostile entries, failing tiers, configuration, invalidation and logging."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import pickle
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import run_python

import llm_memo
from llm_memo import Cache, llm_cache

if TYPE_CHECKING:
    from conftest import FakeClock

LOGGER = "llm_memo"


def disk_of(cache: Cache) -> Any:
    """The cache's disk tier (tiers are a public attribute: memory, then disk)."""
    return next(tier for tier in cache.tiers if tier.name == "disk")


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


class Rows:
    """The disk tier's SQLite rows, read and written behind llm_memo's back."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "cache.db"

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=10)
        try:
            with con:
                yield con
        finally:
            con.close()

    def value(self, key: str) -> bytes:
        with self._connect() as con:
            row = con.execute("SELECT value FROM Cache WHERE key = ?", (key,)).fetchone()
        assert row is not None, "no row for that key"
        return bytes(row[0])

    def write(self, key: str, value: bytes, mode: int | None = None) -> None:
        with self._connect() as con:
            if mode is None:
                con.execute("UPDATE Cache SET value = ? WHERE key = ?", (value, key))
            else:
                con.execute("UPDATE Cache SET value = ?, mode = ? WHERE key = ?", (value, mode, key))


def answer_for(calls: list[str]) -> Callable[[str], dict[str, Any]]:
    def ask(prompt: str) -> dict[str, Any]:
        calls.append(prompt)
        return {"answer": "forty-two", "prompt": prompt, "parts": (1, 2)}

    return ask


EXPECTED = {"answer": "forty-two", "prompt": "q", "parts": (1, 2)}


# ---- lifetimes, on a hand-moved clock ------------------------------------------------------


def test_a_hit_before_expiry_and_a_miss_after(cache: Cache, clock: FakeClock) -> None:
    calls: list[str] = []
    ask = llm_cache(cache=cache, ttl=60)(answer_for(calls))
    ask("q")
    clock.advance(59.9)
    assert ask("q") == EXPECTED
    assert calls == ["q"]
    clock.advance(0.2)
    assert ask("q") == EXPECTED
    assert calls == ["q", "q"]
    info = ask.cache_info()
    assert (info.hits, info.misses) == (1, 2)


def test_a_promoted_entry_keeps_its_remaining_lifetime(cache: Cache, clock: FakeClock) -> None:
    calls: list[str] = []
    ask = answer_for(calls)
    start = clock()
    llm_cache(cache=cache, ttl=100)(ask)("q")
    clock.advance(60)
    with Cache(cache.directory, clock=clock) as reader:
        cached = llm_cache(cache=reader, ttl=100)(ask)
        assert cached("q") == EXPECTED  # from disk, promoted into this cache's memory
        clock.advance(39)
        assert cached("q") == EXPECTED  # from memory
        assert dict(cached.cache_info().hits_by_tier) == {"disk": 1, "memory": 1}
        entry = reader.get_entry(cached.cache_key("q"))
        assert entry is not None
        assert (entry.tier, entry.expires_at, entry.created_at) == ("memory", start + 100, start)
        clock.advance(2)  # 101 s after it was stored: gone from memory too, not 100 s after promotion
        assert reader.get_entry(cached.cache_key("q")) is None
        assert cached("q") == EXPECTED
        assert calls == ["q", "q"]


def test_an_expired_entry_is_served_by_no_tier(cache: Cache, clock: FakeClock) -> None:
    calls: list[str] = []
    ask = answer_for(calls)
    writer = llm_cache(cache=cache, ttl=30)(ask)
    writer("q")
    with Cache(cache.directory, clock=clock) as other:
        reader = llm_cache(cache=other, ttl=30)(ask)
        reader("q")  # both caches now hold it in memory, and the disk has it
        assert calls == ["q"]
        clock.advance(30)
        key = writer.cache_key("q")
        assert cache.get_entry(key) is None
        assert other.get_entry(key) is None
        assert list(cache.keys()) == []
        writer("q")
        assert calls == ["q", "q"]
        clock.advance(1)
        reader("q")  # its memory copy expired at the original time as well
        assert calls == ["q", "q"]  # ... and the writer's fresh disk entry serves it


def test_forever_never_expires(cache: Cache, clock: FakeClock) -> None:
    calls: list[str] = []
    ask = llm_cache(cache=cache, policy="forever")(answer_for(calls))
    ask("q")
    clock.advance(10 * 365 * 86400)
    ask("q")
    assert calls == ["q"]
    entry = cache.get_entry(ask.cache_key("q"))
    assert entry is not None and entry.expires_at is None


# ---- persistence across processes ---------------------------------------------------------


_PERSIST_MODULE = '''
import os

from llm_memo import llm_cache


@llm_cache(ttl=3600)
def summarize(text, model="gpt-4o-mini"):
    with open(os.environ["RUNS_FILE"], "a") as f:
        f.write("run\\n")
    return {"summary": text[:5], "pair": (1, 2), "model": model}
'''

_PERSIST_SCRIPT = '''
import json
import os

import llm_memo
import persist_for_memo as m

value = m.summarize("hello world")
info = m.summarize.cache_info()
wrote = os.path.exists(os.environ["LLM_MEMO_DIR"])
disabled = os.environ.get("LLM_MEMO_DISABLE")
default = None if disabled else str(llm_memo.default_cache().directory)
print(json.dumps({"value": repr(value), "tiers": dict(info.hits_by_tier), "misses": info.misses,
                  "wrote": wrote, "default": default}))
'''


def _run(tmp_path: Path, **env: str) -> dict[str, Any]:
    (tmp_path / "persist_for_memo.py").write_text(_PERSIST_MODULE)
    environment = {**os.environ, "PYTHONPATH": str(tmp_path), "RUNS_FILE": str(tmp_path / "runs.txt"),
                   "LLM_MEMO_DIR": str(tmp_path / "cache"), **env}
    if "LLM_MEMO_DISABLE" not in env:
        environment.pop("LLM_MEMO_DISABLE", None)
    done = subprocess.run([sys.executable, "-c", _PERSIST_SCRIPT], env=environment, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _runs(tmp_path: Path) -> int:
    runs = tmp_path / "runs.txt"
    return len(runs.read_text().splitlines()) if runs.exists() else 0


def test_a_second_process_gets_a_disk_hit(tmp_path: Path) -> None:
    first = _run(tmp_path)
    assert (first["tiers"], first["misses"]) == ({}, 1)
    assert first["default"] == str(tmp_path / "cache")  # LLM_MEMO_DIR chose the directory
    second = _run(tmp_path)
    assert (second["tiers"], second["misses"]) == ({"disk": 1}, 0)
    assert second["value"] == first["value"] == repr({"summary": "hello", "pair": (1, 2), "model": "gpt-4o-mini"})
    assert _runs(tmp_path) == 1


def test_llm_memo_disable_turns_caching_off(tmp_path: Path) -> None:
    for _ in range(2):
        result = _run(tmp_path, LLM_MEMO_DISABLE="1")
        assert (result["tiers"], result["wrote"]) == ({}, False)  # no cache was even opened
    assert _runs(tmp_path) == 2


def test_configure_enabled_false_turns_caching_off(cache: Cache, tmp_path: Path) -> None:
    calls: list[str] = []
    explicit = llm_cache(cache=cache)(answer_for(calls))

    @llm_cache
    def default(prompt: str) -> str:
        calls.append(f"default:{prompt}")
        return prompt

    llm_memo.configure(tmp_path / "off", enabled=False)
    for _ in range(2):
        explicit("q")
        default("q")
    assert calls == ["q", "default:q"] * 2

    llm_memo.configure(tmp_path / "on", enabled=True)
    for _ in range(2):
        explicit("q")
        default("q")
    assert calls == ["q", "default:q"] * 3


def test_configure_replaces_the_default_cache(tmp_path: Path) -> None:
    calls: list[str] = []
    ask = llm_cache(ttl=60)(answer_for(calls))

    first = llm_memo.configure(tmp_path / "first")
    assert isinstance(first, Cache)
    assert llm_memo.default_cache() is first
    assert first.directory == tmp_path / "first"
    ask("q")
    ask("q")
    assert calls == ["q"]
    assert first.get_entry(ask.cache_key("q")) is not None

    second = llm_memo.configure(str(tmp_path / "second"))
    assert llm_memo.default_cache() is second is not first
    ask("q")  # the new default starts empty
    assert calls == ["q", "q"]
    with Cache(tmp_path / "first") as reopened:  # and the first one's entries stayed on disk
        assert reopened.get_entry(ask.cache_key("q")) is not None


def test_configure_with_switches_alone_keeps_the_default_cache(tmp_path: Path) -> None:
    calls: list[str] = []
    ask = llm_cache(ttl=60)(answer_for(calls))
    mine = llm_memo.configure(tmp_path / "mine")
    ask("q")
    try:
        assert llm_memo.configure(notebook_badges=True) is mine
        assert llm_memo.configure(enabled=True) is mine
    finally:
        llm_memo.configure(notebook_badges=False)
    ask("q")
    assert calls == ["q"] and mine.directory == tmp_path / "mine"


# ---- Cache as an object -------------------------------------------------------------------


def test_cache_is_a_context_manager_and_close_is_idempotent(tmp_path: Path, clock: FakeClock) -> None:
    calls: list[str] = []
    ask = answer_for(calls)
    with Cache(tmp_path / "c", clock=clock) as opened:
        assert isinstance(opened, Cache)
        llm_cache(cache=opened, ttl=60)(ask)("q")
    opened.close()
    with Cache(tmp_path / "c", clock=clock) as again:
        cached = llm_cache(cache=again, ttl=60)(ask)
        assert cached("q") == EXPECTED
        assert dict(cached.cache_info().hits_by_tier) == {"disk": 1}
    assert calls == ["q"]


@pytest.mark.parametrize("by", ["tag", "function", "model"])
def test_invalidation_reaches_entries_promoted_from_disk(tmp_path: Path, clock: FakeClock, by: str) -> None:
    calls: list[str] = []

    def ask(prompt: str, model: str = "gpt-4o-mini") -> str:
        calls.append(prompt)
        return prompt

    with Cache(tmp_path / "c", clock=clock) as first:
        llm_cache(cache=first, ttl=600, tags=["team:search"])(ask)("q")
    with Cache(tmp_path / "c", clock=clock) as again:  # a new process: memory starts empty
        cached = llm_cache(cache=again, ttl=600, tags=["team:search"])(ask)
        cached("q")
        cached("q")
        assert dict(cached.cache_info().hits_by_tier) == {"disk": 1, "memory": 1}  # promoted
        chosen = {"tag": {"tag": "team:search"}, "function": {"function": cached}, "model": {"model": "gpt-4o-mini"}}
        assert again.invalidate(**chosen[by]) >= 1
        cached("q")
    assert calls == ["q", "q"]  # the promoted copy went with the stored one


def test_usage_counts_live_entries_only(tmp_path: Path) -> None:
    with Cache(tmp_path / "c") as cache:  # the real clock: diskcache's expiry column is on it
        cache.set("a" * 64, "soon gone", lifetime=0.2)
        cache.set("b" * 64, "kept", lifetime=None)
        assert {name: n for name, (n, _) in cache.usage().items()} == {"memory": 2, "disk": 2}
        time.sleep(0.4)
        assert {name: n for name, (n, _) in cache.usage().items()} == {"memory": 1, "disk": 1}


def test_invalidate_by_tag_function_and_model(cache: Cache) -> None:
    calls: list[str] = []

    @llm_cache(cache=cache, ttl=600, tags=["team:search"])
    def ask(prompt: str, model: str = "gpt-4o-mini") -> str:
        calls.append(f"ask:{prompt}:{model}")
        return prompt

    @llm_cache(cache=cache, ttl=600)
    def other(prompt: str, model: str = "gpt-4o") -> str:
        calls.append(f"other:{prompt}:{model}")
        return prompt

    ask("a")
    ask("b", model="gpt-4o")
    other("a")
    other("b", model="claude-3")
    entry = cache.get_entry(ask.cache_key("a"))
    assert entry is not None
    assert {f"fn:{ask.__module__}.{ask.__qualname__}", "model:gpt-4o-mini", "team:search"} <= set(entry.tags)
    assert entry.metadata["model"] == "gpt-4o-mini"

    assert cache.invalidate(model="gpt-4o") == 2  # ask("b", gpt-4o) and other("a")
    assert cache.get_entry(ask.cache_key("b", model="gpt-4o")) is None
    assert cache.get_entry(other.cache_key("a")) is None
    assert cache.get_entry(ask.cache_key("a")) is not None

    assert cache.invalidate(tag="team:search") == 1
    assert cache.get_entry(ask.cache_key("a")) is None

    assert cache.invalidate(function=other) == 1
    assert cache.get_entry(other.cache_key("b", model="claude-3")) is None
    assert cache.invalidate(function=f"{other.__module__}.{other.__qualname__}") == 0
    with pytest.raises(ValueError, match="clear"):
        cache.invalidate()

    with Cache(cache.directory, clock=cache.clock) as fresh:  # the disk tier agrees
        assert list(fresh.keys()) == []


def test_clear_removes_everything(cache: Cache) -> None:
    calls: list[str] = []
    ask = llm_cache(cache=cache, ttl=60)(answer_for(calls))
    for prompt in "abc":
        ask(prompt)
    assert sorted(cache.keys()) == sorted(ask.cache_key(p) for p in "abc")
    assert cache.clear() == 3
    assert list(cache.keys()) == []
    ask("a")
    assert calls == ["a", "b", "c", "a"]
    with Cache(cache.directory, clock=cache.clock) as fresh:
        assert [fresh.get_entry(ask.cache_key(p)) is None for p in "bc"] == [True, True]


@pytest.mark.parametrize(("argument", "value"), [("memory_maxsize", -1), ("memory_maxsize", "64MB"),
                                                 ("memory_maxsize", True), ("disk_size_limit", -5),
                                                 ("disk_size_limit", 1.5), ("disk_size_limit", None)])
def test_bad_sizes_are_refused_by_name(argument: str, value: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=argument):
        Cache(tmp_path / "c", **{argument: value})
    assert not (tmp_path / "c").exists()


def test_entry_records_what_was_stored(cache: Cache, clock: FakeClock) -> None:
    ask = llm_cache(cache=cache, ttl=90)(answer_for([]))
    ask("q")
    entry = cache.get_entry(ask.cache_key("q"))
    assert isinstance(entry, llm_memo.Entry)
    assert entry.key == ask.cache_key("q")
    assert entry.value == EXPECTED
    assert (entry.created_at, entry.expires_at) == (clock(), clock() + 90)
    assert entry.metadata["args"] == {"prompt": "q"}
    assert cache.get_entry("0" * 64) is None


# ---- corrupted and hostile entries --------------------------------------------------------


def _store_then_close(cache: Cache, ask: Callable[..., Any], **options: Any) -> str:
    """Store ask("q") through a separate Cache on the same directory; return the key."""
    with Cache(cache.directory, clock=cache.clock, **options) as writer:
        cached = llm_cache(cache=writer, ttl=3600)(ask)
        cached("q")
        return cached.cache_key("q")


@pytest.mark.parametrize("where", ["first byte", "middle", "last byte"])
def test_flipped_bytes_are_recomputed_logged_and_replaced(where: str, cache: Cache,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    ask = answer_for(calls)
    key = _store_then_close(cache, ask)
    rows = Rows(cache.directory)
    blob = bytearray(rows.value(key))
    at = {"first byte": 0, "middle": len(blob) // 2, "last byte": len(blob) - 1}[where]
    blob[at] ^= 0x5A
    rows.write(key, bytes(blob))

    caplog.set_level(logging.WARNING, logger=LOGGER)
    reader = llm_cache(cache=cache, ttl=3600)(ask)
    assert reader("q") == EXPECTED
    assert calls == ["q", "q"]
    assert reader.cache_info().hits == 0
    assert warnings_logged(caplog), "a corrupted entry is logged at WARNING"
    assert rows.value(key) != bytes(blob)  # replaced by the recomputed entry
    with Cache(cache.directory, clock=cache.clock) as fresh:
        again = llm_cache(cache=fresh, ttl=3600)(ask)
        assert again("q") == EXPECTED
        assert dict(again.cache_info().hits_by_tier) == {"disk": 1}
    assert calls == ["q", "q"]


@pytest.mark.parametrize("keep", [0, 8, 12, 40, "half", "all but one"])
def test_a_truncated_entry_is_a_miss_and_is_recomputed(keep: int | str, cache: Cache) -> None:
    """A torn write (power loss: the row is there, its bytes are not all there) is never served."""
    calls: list[str] = []
    ask = answer_for(calls)
    key = _store_then_close(cache, ask)
    rows = Rows(cache.directory)
    blob = rows.value(key)
    cut = len(blob) // 2 if keep == "half" else len(blob) - 1 if keep == "all but one" else keep
    rows.write(key, blob[:cut])
    reader = llm_cache(cache=cache, ttl=3600)(ask)
    assert reader("q") == EXPECTED
    assert calls == ["q", "q"] and reader.cache_info().hits == 0
    assert reader("q") == EXPECTED and calls == ["q", "q"]  # stored whole again


def test_a_corrupted_entry_counts_an_error(cache: Cache) -> None:
    calls: list[str] = []
    ask = answer_for(calls)
    key = _store_then_close(cache, ask)
    rows = Rows(cache.directory)
    blob = bytearray(rows.value(key))
    blob[len(blob) // 2] ^= 0x5A
    rows.write(key, bytes(blob))

    reader = llm_cache(cache=cache, ttl=3600)(ask)
    assert reader("q") == EXPECTED
    info = reader.cache_info()
    assert (info.misses, info.errors) == (1, 1)
    assert cache.stats().errors == 1


class Planted:
    """Unpickling this creates the sentinel directory: proof that cache contents ran."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.sentinel),))


@pytest.mark.parametrize("how", ["diskcache pickle row", "raw pickle bytes", "pickled value in an envelope"])
def test_a_planted_pickle_is_never_executed(how: str, cache: Cache, tmp_path: Path) -> None:
    sentinel = tmp_path / "PWNED"
    calls: list[str] = []

    def ask(prompt: str) -> Any:
        calls.append(prompt)
        return Planted(sentinel) if how == "pickled value in an envelope" and len(calls) == 1 else "safe"

    if how == "pickled value in an envelope":  # written by a cache that opted in to pickle
        key = _store_then_close(cache, ask, allow_pickle=True)
    else:
        key = _store_then_close(cache, ask)
        payload = pickle.dumps(Planted(sentinel))
        Rows(cache.directory).write(key, payload, mode=4 if how == "diskcache pickle row" else None)
    assert not sentinel.exists()

    reader = llm_cache(cache=cache, ttl=3600)(ask)
    assert reader("q") == "safe"
    assert not sentinel.exists()
    assert calls == ["q", "q"]
    info = reader.cache_info()
    assert (info.hits, info.misses) == (0, 1)
    assert reader("q") == "safe"  # the recomputed value replaced the planted one
    assert calls == ["q", "q"]
    assert not sentinel.exists()


def test_an_entry_in_a_newer_format_is_a_miss_and_left_alone(cache: Cache) -> None:
    calls: list[str] = []
    ask = answer_for(calls)
    key = _store_then_close(cache, ask)
    disk = disk_of(cache)
    envelope = disk.get(key)
    newer = envelope[:2] + bytes([99]) + envelope[3:]  # as a future llm_memo would write it
    disk.set(key, newer, cache.clock() + 3600, ())

    assert cache.get(key) is None
    assert cache.stats().errors == 1
    assert disk.get(key) == newer  # not deleted: the newer version still reads it

    reader = llm_cache(cache=cache, ttl=3600)(ask)
    assert reader("q") == EXPECTED
    assert calls == ["q", "q"]
    assert reader.cache_info().hits == 0


# ---- failing tiers ------------------------------------------------------------------------


def _break_disk(cache: Cache, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every operation of the cache's disk tier fail, as a dying disk would."""

    def io_error(*_: Any, **__: Any) -> Any:
        raise OSError(errno.EIO, "Input/output error")

    def locked(*_: Any, **__: Any) -> Any:
        raise sqlite3.OperationalError("database is locked")

    disk = disk_of(cache)
    for name in ("get", "delete", "keys"):
        monkeypatch.setattr(disk, name, io_error)
    for name in ("set", "invalidate", "clear"):
        monkeypatch.setattr(disk, name, locked)


def test_a_failing_disk_tier_falls_through_and_warns_once(cache: Cache, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    _break_disk(cache, monkeypatch)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    calls: list[str] = []

    @llm_cache(cache=cache, ttl=60)
    def ask(prompt: str) -> str:
        calls.append(prompt)
        return prompt * 2

    assert ask("a") == "aa"
    first = len(warnings_logged(caplog))
    assert 1 <= first <= 2  # at most one per kind of fault (read, write)
    for i in range(20):
        assert ask(f"p{i}") == f"p{i}" * 2
    assert ask("a") == "aa"  # the memory tier still serves
    assert len(calls) == 21
    info = ask.cache_info()
    assert (info.hits, info.misses) == (1, 21)
    assert info.errors >= 21
    assert cache.stats().errors >= 21
    assert ask.invalidate("a") is True  # management falls through to the tiers that work
    assert cache.clear() == 20
    assert list(cache.keys()) == []
    assert len(warnings_logged(caplog)) <= first + 4  # a few new kinds of fault, not one per call
    assert "Input/output error" in caplog.text


def test_an_unusable_directory_degrades_to_memory(tmp_path: Path, clock: FakeClock,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("in the way")
    caplog.set_level(logging.WARNING, logger=LOGGER)
    calls: list[str] = []
    with Cache(blocker, clock=clock) as degraded:
        ask = llm_cache(cache=degraded, ttl=60)(answer_for(calls))
        assert [ask("q"), ask("q")] == [EXPECTED, EXPECTED]
        assert calls == ["q"]
        assert degraded.stats().errors == 1
    assert len(warnings_logged(caplog)) == 1
    assert blocker.read_text() == "in the way"


@pytest.mark.slow
def test_a_read_only_directory_degrades_to_memory(tmp_path: Path) -> None:
    directory = tmp_path / "ro"
    directory.mkdir(mode=0o500)
    try:
        out = run_python(  # a child that file permissions bind, root or not
            """
            import json, logging, sys
            from llm_memo import Cache, llm_cache

            warnings = []
            handler = logging.Handler()
            handler.emit = lambda record: record.levelno >= logging.WARNING and warnings.append(record)
            logging.getLogger("llm_memo").addHandler(handler)
            calls = []
            with Cache(sys.argv[1], clock=lambda: 1_700_000_000.0) as degraded:
                @llm_cache(cache=degraded, ttl=60)
                def ask(prompt):
                    calls.append(prompt)
                    return {"prompt": prompt}
                answers = [ask(p) for p in "qqrr"]
                print(json.dumps({"answers": answers, "calls": calls, "tiers": [t.name for t in degraded.tiers],
                                  "errors": degraded.stats().errors, "warnings": len(warnings)}))
            """,
            str(directory / "cache"), bound_by_permissions=True)
    finally:
        directory.chmod(0o700)
    result = json.loads(out)
    assert result["answers"] == [{"prompt": p} for p in "qqrr"]
    assert result["calls"] == ["q", "r"]  # the memory tier still serves the repeats
    assert result["tiers"] == ["memory"] and result["errors"] >= 1 and result["warnings"] == 1


def test_an_unencodable_result_is_returned_not_stored(cache: Cache, caplog: pytest.LogCaptureFixture) -> None:
    class Opaque:
        pass

    made: list[Opaque] = []

    @llm_cache(cache=cache, ttl=60)
    def make(prompt: str) -> Opaque:
        made.append(Opaque())
        return made[-1]

    caplog.set_level(logging.WARNING, logger=LOGGER)
    first = make("q")
    second = make("q")
    assert first is made[0] and second is made[1]
    assert cache.get_entry(make.cache_key("q")) is None
    info = make.cache_info()
    assert (info.hits, info.errors) == (0, 2)
    assert len(warnings_logged(caplog)) == 1
    assert "Opaque" in caplog.text


# ---- logging and secrets ------------------------------------------------------------------


def _debug_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_hit_miss_and_bypass_each_log_one_debug_line(cache: Cache, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    @llm_cache(cache=cache)
    def ask(prompt: str) -> str:
        return "a"

    for prompt, what in [("What is a monad?", "miss"), ("What is a monad?", "hit"),
                         ("What's the latest news today?", "bypass")]:
        caplog.clear()
        ask(prompt)
        lines = _debug_lines(caplog)
        assert len(lines) == 1, (what, lines)
        assert what in lines[0] and ask.__qualname__ in lines[0], (what, lines)
        assert ask.cache_key(prompt)[:8] in lines[0], (what, lines)
        if what == "miss":  # the call's latency and where its answer went
            assert re.search(r" latency=\d+\.\d{3}s ttl=86400\.?\d* stored=memory\+disk$", lines[0]), lines
        if what == "hit":  # where it came from, what the lookup took, what it saved
            assert re.search(r" tier=memory lookup=\d+us saved=\d+\.\d{3}s$", lines[0]), lines


def test_a_non_deterministic_bypass_logs_one_debug_line(cache: Cache, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    @llm_cache(cache=cache)
    def ask(prompt: str, temperature: float = 0.0) -> str:
        return "a"

    with pytest.warns(llm_memo.NonDeterministicCallWarning):
        ask("hi", temperature=0.9)
    lines = _debug_lines(caplog)
    assert len(lines) == 1 and "bypass" in lines[0] and ask.__qualname__ in lines[0], lines


def test_the_library_configures_no_logging() -> None:
    logger = logging.getLogger(LOGGER)
    assert logger.handlers == [] and logger.level == logging.NOTSET and logger.propagate


SECRET = "sk-secret123"


def _secret_call(shape: str, cache: Cache) -> tuple[Callable[[], Any], Callable[[], str]]:
    """(call, key of that call) for a function handed an API key in the given shape."""
    if shape == "parameter":

        @llm_cache(cache=cache, ttl=60)
        def by_parameter(prompt: str, api_key: str, model: str = "gpt-4o-mini") -> str:
            return "answer"

        return (lambda: by_parameter("hi", api_key=SECRET),
                lambda: by_parameter.cache_key("hi", api_key=SECRET))
    if shape == "kwargs":

        @llm_cache(cache=cache, ttl=60)
        def by_kwargs(prompt: str, **kwargs: Any) -> str:
            return "answer"

        return (lambda: by_kwargs("hi", api_key=SECRET, model="gpt-4o-mini"),
                lambda: by_kwargs.cache_key("hi", api_key=SECRET, model="gpt-4o-mini"))

    @llm_cache(cache=cache, ttl=60)
    def by_settings(prompt: str, settings: dict[str, Any]) -> str:
        return "answer"

    settings = {"Authorization": f"Bearer {SECRET}", "api_key": SECRET, "model": "gpt-4o-mini"}
    return (lambda: by_settings("hi", settings), lambda: by_settings.cache_key("hi", settings))


@pytest.mark.parametrize("shape", ["parameter", "kwargs", "settings"])
def test_an_api_key_never_reaches_logs_metadata_or_files(shape: str, cache: Cache,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    call, key = _secret_call(shape, cache)
    assert [call(), call()] == ["answer", "answer"]
    entry = cache.get_entry(key())
    assert entry is not None
    assert "secret123" not in json.dumps(entry.metadata, default=repr)
    assert "secret123" not in repr(entry)
    assert caplog.records, "a hit and a miss were logged"
    for record in caplog.records:
        assert "secret123" not in record.getMessage()
    disk_of(cache).close()  # flush: the WAL and the database both get read below
    files = [p for p in cache.directory.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert b"secret123" not in path.read_bytes(), path
