"""Under fire, with real processes and real files: contention, SIGKILL, clock jumps, hostile
arguments, tenants and file permissions. Everything goes through the public API."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import math
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock

from llm_memo import Cache, UnkeyableArgumentError, llm_cache

ROOT = Path(__file__).resolve().parents[1]


def python(script: Path, *args: object) -> subprocess.Popen[str]:
    """Start ``script`` in a child interpreter that treats warnings as errors."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-W", "error", str(script), *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def write_script(directory: Path, name: str, code: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(code))
    return path


def integrity(directory: Path) -> list[tuple[str]]:
    con = sqlite3.connect(directory / "cache.db")
    try:
        return con.execute("PRAGMA integrity_check").fetchall()
    finally:
        con.close()


# -- B.5: N processes x M threads on one directory ---------------------------------------------

HAMMER = """
    import os, random, sys, threading, time
    from llm_memo import Cache, llm_cache

    directory, log, seed, keys = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    cache = Cache(directory)

    def expected(n):
        return {"n": n, "square": n * n, "text": "x" * (n * 37 % 5000)}

    @llm_cache(cache=cache, ttl=3600)
    def work(n: int) -> dict:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, f"{os.getpid()} {n}\\n".encode())  # one line per real call
        os.close(fd)
        time.sleep(0.002)
        return expected(n)

    wrong = []

    def hammer(t):
        rng = random.Random(seed * 100 + t)
        order = list(range(keys)) * 2
        rng.shuffle(order)
        for n in order:
            got = work(n)
            if got != expected(n):
                wrong.append((n, got))

    threads = [threading.Thread(target=hammer, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cache.close()
    print(len(wrong), work.cache_info().errors)
    sys.exit(1 if wrong else 0)
"""


@pytest.mark.slow
def test_processes_and_threads_hammering_one_directory(tmp_path: Path) -> None:
    processes, keys = 4, 40
    script = write_script(tmp_path, "hammer.py", HAMMER)
    log = tmp_path / "calls.log"
    workers = [python(script, tmp_path / "cache", log, seed, keys) for seed in range(processes)]
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        assert out.split()[0] == "0"  # no wrong result in any thread
    calls = [tuple(line.split()) for line in log.read_text().splitlines()]
    per_process = collections.Counter(calls)
    per_key = collections.Counter(n for _, n in calls)
    assert max(per_process.values()) == 1  # single-flight within each process
    assert set(per_key) == {str(n) for n in range(keys)}
    assert max(per_key.values()) == 1, per_key  # and across processes: the disk tier's lease
    assert integrity(tmp_path / "cache") == [("ok",)]
    with Cache(tmp_path / "cache") as cache:  # every entry stored, none corrupt
        values = [cache.get_entry(key) for key in cache.keys()]  # noqa: SIM118 (a Cache, not a dict)
        assert sorted(entry.value["n"] for entry in values if entry is not None) == list(range(keys))
        for entry in values:
            n = entry.value["n"]
            assert entry.value == {"n": n, "square": n * n, "text": "x" * (n * 37 % 5000)}
        assert cache.counters.snapshot().errors == 0


# -- B.9: spawn and forkserver workers -------------------------------------------------------------

WORKER_MODULE = """
    import os
    from llm_memo import Cache, llm_cache

    cache = Cache(os.environ["LLM_MEMO_PROBE_DIR"])


    @llm_cache(cache=cache, ttl=600)
    def shout(text: str) -> str:
        with open(os.environ["LLM_MEMO_PROBE_LOG"], "a") as log:
            log.write(text + "\\n")  # one line per real call
        return text.upper()


    class Bot:
        @llm_cache(cache=cache, ttl=600)
        def reply(self, text: str) -> str:
            return "bot: " + text
"""


@pytest.mark.slow
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_cached_functions_and_caches_cross_into_spawned_workers(tmp_path: Path, method: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import multiprocessing
    import pickle

    module = f"llm_memo_worker_probe_{method}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(WORKER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("LLM_MEMO_PROBE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LLM_MEMO_PROBE_LOG", str(tmp_path / "calls.log"))
    probe = importlib.import_module(module)
    texts = ["a", "b", "c", "a", "b", "c"]
    with multiprocessing.get_context(method).Pool(2) as pool:
        assert pool.map(probe.shout, texts) == [t.upper() for t in texts]
        assert pool.map(probe.Bot().reply, ["hi"]) == ["bot: hi"]  # a bound method crosses too
        [copy] = pool.map(pickle.loads, [pickle.dumps(probe.cache)])  # a Cache crosses as its config
    assert isinstance(copy, Cache) and copy.directory == probe.cache.directory
    computed = (tmp_path / "calls.log").read_text().split()
    assert sorted(computed) == ["a", "b", "c"]  # once per key, across the workers (leases)
    assert [probe.shout(t) for t in "abc"] == ["A", "B", "C"]  # the workers' answers, from disk
    assert len((tmp_path / "calls.log").read_text().split()) == len(computed)
    assert dict(probe.shout.cache_info().hits_by_tier) == {"disk": 3}


def test_a_cached_function_without_an_importable_name_says_so() -> None:
    import pickle

    @llm_cache(ttl=60)
    def local(text: str) -> str:
        return text

    with pytest.raises(pickle.PicklingError, match="define it at module level"):
        pickle.dumps(local)


# -- A.1: SIGKILL a writer in the middle of writes ---------------------------------------------

WRITER = """
    import hashlib, sys
    from llm_memo import Cache

    directory, round_ = sys.argv[1], int(sys.argv[2])
    SIZES = (10, 1_000, 100_000, 1_500_000)
    cache = Cache(directory)
    print("ready", flush=True)
    i = 0
    while True:  # until killed
        n = i % 300
        key = hashlib.sha256(f"kill-{n}".encode()).hexdigest()
        size = SIZES[(n + round_) % len(SIZES)]
        if i % 17 == 16:
            cache.delete(key)
        else:
            cache.set(key, {"n": n, "round": round_, "blob": "y" * size}, lifetime=None, tags=[f"r{round_}"])
        i += 1
"""


@pytest.mark.slow
def test_sigkill_in_the_middle_of_writes_never_serves_a_torn_entry(tmp_path: Path) -> None:
    script = write_script(tmp_path, "writer.py", WRITER)
    directory = tmp_path / "cache"
    keys = {hashlib.sha256(f"kill-{n}".encode()).hexdigest(): n for n in range(300)}
    sizes = (10, 1_000, 100_000, 1_500_000)
    rng = random.Random(5)
    stored = 0
    for round_ in range(10):
        writer = python(script, directory, round_)
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready", writer.stderr.read() if writer.stderr else ""
        time.sleep(rng.uniform(0.02, 0.4))
        writer.send_signal(signal.SIGKILL)
        writer.communicate(timeout=30)
        assert writer.returncode == -signal.SIGKILL
        with Cache(directory) as cache:  # opens cleanly
            found = list(cache.keys())
            for key in found:
                entry = cache.get_entry(key)
                assert entry is not None
                n, made_in = entry.value["n"], entry.value["round"]
                assert keys[key] == n  # the entry of this key, nobody else's
                assert entry.value["blob"] == "y" * sizes[(n + made_in) % len(sizes)]  # and whole
            stored = max(stored, len(found))
            assert cache.counters.snapshot().errors == 0
        assert integrity(directory) == [("ok",)]
    assert stored > 0  # the kills did land among writes


# -- F: clock changes ------------------------------------------------------------------------------


def test_a_locked_disk_never_stalls_the_event_loop(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Async callers wait for disk I/O (leases, writes) in worker threads, never on the loop."""
    with Cache(tmp_path / "c") as cache:

        @llm_cache(cache=cache, ttl=60)
        async def ask(question: str) -> str:
            await asyncio.sleep(0.01)
            return question.upper()

        asyncio.run(ask("warm"))  # opens the database and stores one entry

        async def main() -> tuple[list[str], float]:
            gaps: list[float] = []

            async def ticker() -> None:
                last = time.monotonic()
                while True:
                    await asyncio.sleep(0.01)
                    gaps.append(time.monotonic() - last)
                    last = time.monotonic()

            tick = asyncio.create_task(ticker())
            answers = await asyncio.gather(ask("warm"), ask("cold one"), ask("cold two"))
            tick.cancel()
            return list(answers), max(gaps)

        holder = sqlite3.connect(tmp_path / "c" / "cache.db", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # every write now waits out SQLite's busy timeout (1 s)
        try:
            answers, worst = asyncio.run(main())
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    assert answers == ["WARM", "COLD ONE", "COLD TWO"]
    assert ask.cache_info().errors >= 2  # the blocked writes timed out, were counted, and the calls went on
    warned = [r.getMessage() for r in caplog.records if r.name == "llm_memo" and r.levelname == "WARNING"]
    assert len(warned) == 1 and "TimeoutError" in warned[0], warned  # one outage, one warning
    # Not a speed assertion: a write blocks for a second, so a loop that ran one would stall that long.
    assert worst < 0.5, f"the event loop stalled for {worst:.2f} s"


@pytest.mark.parametrize("how", ["task cancelled", "loop closed"])
def test_a_task_cancelled_while_taking_a_lease_gives_it_back(tmp_path: Path, how: str) -> None:
    with Cache(tmp_path / "c") as cache:

        @llm_cache(cache=cache, ttl=60, lease=60)
        async def ask(question: str) -> str:
            return question.upper()

        asyncio.run(ask("warm"))  # opens the database
        holder = sqlite3.connect(tmp_path / "c" / "cache.db", isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")  # the lease's write waits on this lock in a worker thread

        async def cancel_midway() -> None:
            task = asyncio.create_task(ask("cold"))
            await asyncio.sleep(0.2)
            task.cancel()
            holder.execute("ROLLBACK")  # the worker thread now takes the lease, for nobody
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await asyncio.sleep(1.0)  # the lease is given back from the worker pool

        async def give_up_midway() -> None:  # asyncio.run then cancels what is left, and closes its loop
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ask("cold"), 0.2)

        try:
            if how == "task cancelled":
                asyncio.run(cancel_midway())
            else:  # the lock goes while asyncio.run waits for the worker: it takes the lease for nobody
                threading.Timer(0.5, holder.execute, ("ROLLBACK",)).start()
                asyncio.run(give_up_midway())
                time.sleep(0.5)
        finally:
            holder.close()
        key = ask.cache_key("cold")
        token = cache.lease(key, 5)
        assert token is not None, "the cancelled task's lease would block this key for 60 s"
        cache.release(key, token)


def test_promotion_never_extends_a_lifetime(tmp_path: Path, clock: FakeClock) -> None:
    with Cache(tmp_path, clock=clock) as writer:
        writer.set("a" * 64, "answer", lifetime=100)
    clock.advance(60)
    with Cache(tmp_path, clock=clock) as reader:  # another process: its memory starts empty
        assert reader.get("a" * 64).tier == "disk"
        assert reader.get("a" * 64).tier == "memory"  # promoted with 40 s left, not 100
        clock.advance(39.9)
        assert reader.get("a" * 64).tier == "memory"
        clock.advance(0.1)
        assert reader.get("a" * 64) is None
        assert [tier.get("a" * 64) for tier in reader.tiers] == [None, None]


def test_a_backward_clock_jump_does_not_resurrect_an_expired_entry(tmp_path: Path, clock: FakeClock) -> None:
    # No memory tier: given a fake clock, Cache also uses it as the memory tier's monotonic
    # timer, which a real wall-clock step would leave alone. The disk tier is the one at stake.
    with Cache(tmp_path, clock=clock, memory_maxsize=0) as cache:
        cache.set("b" * 64, "answer", lifetime=10)
        clock.advance(10)
        assert cache.get("b" * 64) is None  # expired, and seen expired
        clock.advance(-3600)  # NTP steps the clock back an hour
        assert cache.get("b" * 64) is None


def test_a_forward_clock_jump_expires_and_recomputes(tmp_path: Path, clock: FakeClock) -> None:
    calls: list[str] = []
    with Cache(tmp_path, clock=clock) as cache:

        @llm_cache(cache=cache, ttl=60)
        def ask(q: str) -> str:
            calls.append(q)
            return f"answer to {q}"

        assert ask("q") == ask("q") == "answer to q"
        clock.advance(3600)
        assert ask("q") == "answer to q"
        assert calls == ["q", "q"]


# -- H: hostile arguments ---------------------------------------------------------------------


@pytest.fixture
def echo(cache: Cache) -> Any:
    @llm_cache(cache=cache, ttl=600)
    def echo(prompt: Any) -> str:
        return f"{type(prompt).__name__}:{len(repr(prompt)) if not isinstance(prompt, str) else len(prompt)}"

    return echo


@pytest.mark.slow
def test_a_100_mb_prompt_keys_correctly(echo: Any) -> None:
    big = "é" * (50 * 2**20)  # 100 MB of UTF-8
    twin = "".join(["é" * (25 * 2**20)] * 2)  # equal, but another object
    assert twin is not big and twin == big
    key = echo.cache_key(big)
    assert echo.cache_key(twin) == key
    assert echo.cache_key(big[:-1] + "e") != key
    assert echo(big) == f"str:{len(big)}"
    assert echo(twin) == f"str:{len(big)}"
    assert echo.cache_info().hits == 1


def test_deep_nesting_is_a_clear_error(echo: Any) -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(UnkeyableArgumentError, match="prompt") as caught:
        echo(deep)
    assert "nested" in str(caught.value)
    assert echo.cache_info().calls == 0


@pytest.mark.parametrize("shape", ["list", "dict", "through a tuple"])
def test_cycles_are_a_clear_error(echo: Any, shape: str) -> None:
    if shape == "list":
        cyclic: Any = []
        cyclic.append(cyclic)
    elif shape == "dict":
        cyclic = {}
        cyclic["self"] = cyclic
    else:
        inner: list[Any] = []
        cyclic = (1, inner)
        inner.append(cyclic)
    with pytest.raises(UnkeyableArgumentError, match="prompt"):
        echo(cyclic)


def test_nan_and_inf_key_deterministically(echo: Any, tmp_path: Path) -> None:
    nans = [float("nan"), math.nan, -math.nan, float("inf") - float("inf")]
    assert len({echo.cache_key(value) for value in nans}) <= 2  # NaN, maybe -NaN: never per object
    assert echo.cache_key(float("nan")) == echo.cache_key(float("nan"))
    keys = {echo.cache_key(value) for value in (math.inf, -math.inf, math.nan, 0.0, 1e308)}
    assert len(keys) == 5
    assert echo(math.inf) == echo(math.inf)
    assert echo.cache_info().hits == 1
    script = write_script(tmp_path, "nan.py", """
        import math
        from llm_memo import llm_cache

        @llm_cache
        def echo(prompt):
            return prompt

        print(echo.cache_key(float("nan")), echo.cache_key([math.inf, -math.inf]))
    """)
    runs = [python(script).communicate(timeout=60)[0] for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0].split()) == 2  # and across processes and hash seeds


def test_an_unkeyable_custom_object_is_a_clear_error(echo: Any) -> None:
    class Unhashable:
        __hash__ = None  # type: ignore[assignment]

    with pytest.raises(UnkeyableArgumentError) as caught:
        echo(Unhashable())
    message = str(caught.value)
    assert "'prompt'" in message and "Unhashable" in message
    assert "ignore=" in message and "register_encoder" in message


def test_lone_surrogates_key_and_round_trip(echo: Any, cache: Cache) -> None:
    @llm_cache(cache=cache, ttl=600)
    def same(prompt: str) -> str:
        return prompt

    assert len(same.cache_key("\ud800")) == 64
    assert same.cache_key("\ud800") != same.cache_key("\ud801")
    assert same.cache_key("\ud800") != same.cache_key("\\ud800")
    assert same("a\ud800b") == "a\ud800b"
    cache.tiers[0].clear()  # read it back from disk
    assert same("a\ud800b") == "a\ud800b"
    assert same.cache_info().hits == 1


# -- I.44: tenants -----------------------------------------------------------------------------------


def tenant_function(cache: Cache, namespace: str, calls: list[tuple[str, str]]) -> Any:
    """One function (same name, same source) cached for one tenant."""

    @llm_cache(cache=cache, ttl=600, namespace=namespace)
    def ask(question: str) -> str:
        calls.append((namespace, question))
        return f"{namespace} answers {question}"

    return ask


def test_namespaces_never_share_entries(cache: Cache) -> None:
    calls: list[tuple[str, str]] = []
    a = tenant_function(cache, "tenant-a", calls)
    b = tenant_function(cache, "tenant-b", calls)
    assert a.cache_key("q") != b.cache_key("q")
    assert a("q") == "tenant-a answers q"
    assert b("q") == "tenant-b answers q"
    assert a("q") == "tenant-a answers q" and b("q") == "tenant-b answers q"
    assert calls == [("tenant-a", "q"), ("tenant-b", "q")]


def test_invalidating_one_tenants_function_leaves_the_others(cache: Cache) -> None:
    calls: list[tuple[str, str]] = []
    a = tenant_function(cache, "tenant-a", calls)
    b = tenant_function(cache, "tenant-b", calls)
    a("q")
    b("q")
    cache.invalidate(function=a)
    assert a("q") == "tenant-a answers q"
    assert b("q") == "tenant-b answers q"
    assert calls == [("tenant-a", "q"), ("tenant-b", "q"), ("tenant-a", "q")]


# -- I.43: path traversal ---------------------------------------------------------------------------

HOSTILE_NAMES = ["../../escaped", "/tmp/absolute", "..\\..\\windows", ".", "..", "a\x00b", "CON", "NUL.txt", "~/home"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_key_material_never_becomes_a_path(tmp_path: Path, name: str) -> None:
    root = tmp_path / "root"
    directory = root / "cache"
    with Cache(directory) as cache:
        @llm_cache(cache=cache, ttl=600, namespace=name, version=name, tags=[name])
        def ask(question: str, model: str = "m") -> str:
            return f"answer to {question}"

        assert ask(name, model=name) == f"answer to {name}"
        assert ask(name, model=name) == f"answer to {name}" and ask.cache_info().hits == 1
        assert cache.invalidate(tag=name) == 1
    made = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert all(p == "cache" or p.startswith("cache/") for p in made), made  # nothing outside
    assert {p.split("/")[1] for p in made if "/" in p} <= {"cache.db", "cache.db-wal", "cache.db-shm",
                                                           "ledger.sqlite3", "ledger.sqlite3-wal",
                                                           "ledger.sqlite3-shm"}, made


# -- G.32: a value too big for one tier ---------------------------------------------------------------

def test_a_value_too_big_for_memory_is_returned_and_kept_on_disk(tmp_path: Path, clock: FakeClock) -> None:
    calls: list[int] = []
    with Cache(tmp_path / "c", memory_maxsize=64 * 1024, clock=clock) as cache:
        @llm_cache(cache=cache, ttl=600)
        def big(n: int) -> str:
            calls.append(n)
            return "x" * 200_000 + str(n)

        assert big(1).endswith("1")
        assert big(1).endswith("1") and calls == [1]
        assert dict(big.cache_info().hits_by_tier) == {"disk": 1}  # never fits in memory
        assert cache.get_entry(big.cache_key(1)).tier == "disk"
        assert big.cache_info().errors == 0  # skipping a tier that is too small is not a fault


# -- E.27: file permissions ---------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_cache_files_are_private(tmp_path: Path, umask: int) -> None:
    directory = tmp_path / "new" / "cache"
    old = os.umask(umask)
    try:
        with Cache(directory) as cache:

            @llm_cache(cache=cache, ttl=600)
            def ask(question: str) -> str:
                return f"answer to {question}"

            for i in range(20):
                ask(f"q{i}")
            ask("q1")
    finally:
        os.umask(old)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = [p for p in directory.rglob("*") if p.is_file()]
    assert any(p.name == "cache.db" for p in files)
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in directory.rglob("*"):
        if path.is_dir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
