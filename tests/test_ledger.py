"""The persisted savings ledger: buffered per-day aggregates that add up across processes."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import llm_memo
from llm_memo import Cache, llm_cache
from llm_memo._storage.ledger import LEDGER_FILENAME, Ledger

if TYPE_CHECKING:
    from conftest import FakeClock

DAY = 86400.0


class Timer:
    """Monotonic seconds moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def stored_hits(path: Path) -> int:
    with sqlite3.connect(path) as con:
        return int(con.execute("SELECT coalesce(sum(hits), 0) FROM savings").fetchone()[0])


WORKER = textwrap.dedent("""
    import sys
    import llm_memo

    cache = llm_memo.Cache(sys.argv[1])

    @llm_memo.llm_cache(cache=cache, ttl=3600)
    def ask(prompt, model="gpt-4o-mini"):
        return prompt[::-1]

    for i in range(int(sys.argv[2])):
        ask(f"question {i % 5}", model="gpt-4o-mini" if i % 2 else "gpt-4.1")
    if sys.argv[3] == "close":
        cache.close()
    # else: the atexit hook writes what is left
""")


@pytest.mark.slow
def test_two_processes_add_up(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    directory = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, str(script), str(directory), "200", how])
             for how in ("close", "atexit")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with Cache(directory) as cache:
        stats = cache.stats()
        by_model = cache.ledger.totals(by="model")
    assert stats.hits + stats.misses == 400
    assert 5 <= stats.misses <= 20  # 10 distinct calls; racing processes may both miss one
    assert by_model is not None
    assert set(by_model) == {"gpt-4o-mini", "gpt-4.1"}
    assert by_model["gpt-4o-mini"].calls == by_model["gpt-4.1"].calls == 200
    assert oct(os.stat(directory / LEDGER_FILENAME).st_mode & 0o777) == "0o600"


def test_aggregates_by_day_function_and_model(tmp_path: Path, clock: FakeClock) -> None:
    cache = Cache(tmp_path / "c", clock=clock)

    @llm_cache(cache=cache, ttl=30 * DAY)
    def summarize(text: str, model: str = "gpt-4o-mini") -> str:
        return text[:3]

    @llm_cache(cache=cache, ttl=30 * DAY)
    def translate(text: str) -> str:
        return text[::-1]

    summarize("alpha")
    summarize("alpha")
    summarize("alpha", model="gpt-4.1")
    translate("beta")
    clock.advance(DAY)
    summarize("alpha")
    translate("beta")
    translate("beta")
    cache.ledger.flush()
    summarize("gamma")  # still in the buffer: counted all the same

    ledger = cache.ledger
    days = ledger.totals(by="day")
    assert days is not None
    assert [(d, s.hits, s.misses) for d, s in sorted(days.items())] == [
        ("2023-11-14", 1, 3), ("2023-11-15", 3, 1)]
    functions = ledger.totals(by="function")
    assert functions is not None
    name = f"{__name__}.test_aggregates_by_day_function_and_model.<locals>"
    assert functions[f"{name}.summarize"].calls == 5
    assert functions[f"{name}.translate"].hits == 2
    models = ledger.totals(by="model")
    assert models is not None
    assert models["gpt-4o-mini"].calls == 4
    assert models["gpt-4.1"].misses == 1
    assert models[""].calls == 3  # translate names no model
    total = cache.stats()
    assert (total.hits, total.misses, total.hits_by_tier["memory"]) == (4, 4, 4)
    with pytest.raises(ValueError, match="by= takes one of day, function, model"):
        ledger.totals(by="week")
    cache.close()


def test_buffer_is_written_at_most_every_interval(tmp_path: Path, clock: FakeClock) -> None:
    timer = Timer()
    ledger = Ledger(tmp_path, clock=clock, timer=timer, interval=2.0)
    path = tmp_path / LEDGER_FILENAME
    ledger.hit("f", None, "memory", 0.5, 10, 0.01)
    assert not path.exists()
    timer.now = 1.9
    ledger.hit("f", None, "disk")
    assert not path.exists()
    timer.now = 2.0
    ledger.miss("f", None)  # due: this call writes the buffer
    assert stored_hits(path) == 2
    ledger.hit("f", None, "memory")
    assert stored_hits(path) == 2
    ledger.close()
    assert stored_hits(path) == 3
    rows = Ledger(tmp_path, clock=clock).rows()
    assert rows is not None
    [row] = rows
    assert (row.function, row.model, row.stats.hits, row.stats.misses) == ("f", "", 3, 1)
    assert dict(row.stats.hits_by_tier) == {"memory": 2, "disk": 1}
    assert (row.stats.tokens_saved, row.stats.cost_saved, row.stats.time_saved) == (10, 0.01, 0.5)


@pytest.mark.parametrize("breakage", ["garbage", "directory"])
def test_a_broken_ledger_never_breaks_a_call(tmp_path: Path, breakage: str,
                                             caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "c"
    directory.mkdir(mode=0o700)
    path = directory / LEDGER_FILENAME
    if breakage == "garbage":
        path.write_bytes(b"not a database" * 100)
    else:
        path.mkdir()
    cache = Cache(directory)
    assert cache.ledger is not None
    cache.ledger.interval = 0.0  # every call tries to write

    @llm_cache(cache=cache, ttl=60)
    def ask(prompt: str) -> str:
        return prompt.upper()

    with caplog.at_level(logging.DEBUG, logger="llm_memo"):
        assert [ask("hi") for _ in range(3)] == ["HI"] * 3
        stats = cache.stats()  # unreadable: this process's counters instead
        cache.close()
    assert (stats.hits, stats.misses) == (2, 1)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and "ledger" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True,
                    reason="root writes read-only files")
def test_a_read_only_ledger_never_breaks_a_call(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    with Cache(directory) as cache:
        cache.ledger.miss("f", None)
    (directory / LEDGER_FILENAME).chmod(0o400)
    cache = Cache(directory)
    cache.ledger.interval = 0.0

    @llm_cache(cache=cache, ttl=60)
    def ask(prompt: str) -> str:
        return prompt.upper()

    assert [ask("hi") for _ in range(3)] == ["HI"] * 3
    cache.close()


def test_a_memory_only_cache_has_no_ledger(tmp_path: Path) -> None:
    with Cache(tmp_path / "m", disk=False) as cache:
        assert cache.ledger is None

        @llm_cache(cache=cache)
        def ask(prompt: str) -> str:
            return prompt

        ask("x")
        ask("x")
        assert cache.stats() == cache.counters.snapshot()
    assert not (tmp_path / "m").exists()


def test_counters_are_this_process_and_stats_are_lifetime(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    for _ in range(2):
        with Cache(directory) as cache:

            @llm_cache(cache=cache, ttl=60)
            def ask(prompt: str) -> str:
                return prompt

            ask("x")
            ask("x")
            process = cache.counters.snapshot()
    assert (process.hits, process.misses) == (2, 0)  # the second process found the disk entry
    with Cache(directory) as cache:
        lifetime = cache.stats()
    assert (lifetime.hits, lifetime.misses) == (3, 1)


def test_tier_faults_are_errors_in_the_ledger(tmp_path: Path) -> None:
    with Cache(tmp_path / "c") as cache:
        cache.tiers[1].close()  # the disk tier now raises RuntimeError on every use

        @llm_cache(cache=cache, ttl=60)
        def ask(prompt: str) -> str:
            return prompt

        ask("x")
        assert cache.stats().errors >= 1
        assert llm_memo.Stats is type(cache.stats())


def test_threads_recording_while_others_write_lose_nothing(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, interval=0.0)  # every call also tries to write
    threads = [threading.Thread(target=lambda: [ledger.hit("f", "m", "memory", tokens=1) for _ in range(3000)])
               for _ in range(8)]
    for thread in threads:
        thread.start()
    totals = [ledger.totals() for _ in range(20)]  # reads racing the writers never count twice
    for thread in threads:
        thread.join()
    assert all(t is not None and t[""].hits <= 24_000 for t in totals)
    ledger.close()
    final = Ledger(tmp_path).totals()
    assert final is not None
    assert (final[""].hits, final[""].tokens_saved) == (24_000, 24_000)
