"""Cross-process single-flight: concurrent misses on one key run the function once, and a
killed lease holder never holds anyone up for longer than its lease."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from llm_memo import Cache

pytestmark = pytest.mark.slow

_WORKER = textwrap.dedent('''
    import os, sys, threading, time
    from llm_memo import Cache, llm_cache

    runs = sys.argv[2]
    start_at = float(sys.argv[3])
    lease = float(sys.argv[4])
    mode = sys.argv[5]
    threads = int(sys.argv[6])
    body = float(sys.argv[7])

    @llm_cache(cache=Cache(sys.argv[1]), ttl=3600, lease=lease)
    def slow(question):
        with open(runs, "a") as f:
            f.write(f"{os.getpid()}:{time.time()}\\n")
        time.sleep(3600 if mode == "hang" else body)
        if mode == "fail":
            raise RuntimeError("the provider failed")
        return "answer to " + question

    answers = []

    def ask():
        time.sleep(max(0.0, start_at - time.time()))
        try:
            answers.append(slow("the same question"))
        except RuntimeError as exc:
            answers.append(str(exc))

    workers = [threading.Thread(target=ask) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print("\\n".join(answers), flush=True)
''')


def _spawn(tmp_path: Path, n: int, *, lease: float = 30.0, hang: bool = False, delay: float = 1.5,
           threads: int = 1, mode: str = "run", body: float = 1.0, host: str | None = None):
    """n worker processes asking one question; host: the host name their leases give (another
    host's holder cannot be probed, only its lease's expiry tells it died)."""
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    start_at = time.time() + delay
    env = dict(os.environ, _LLM_MEMO_HOST=host) if host else None
    return [subprocess.Popen([sys.executable, str(script), str(tmp_path / "cache"), str(tmp_path / "runs"),
                              str(start_at), str(lease), "hang" if hang else mode, str(threads), str(body)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for _ in range(n)]


def _runs(tmp_path: Path) -> list[str]:
    path = tmp_path / "runs"
    return path.read_text().split() if path.exists() else []


def _run_starts(tmp_path: Path) -> list[float]:
    return sorted(float(run.split(":")[1]) for run in _runs(tmp_path))


def test_concurrent_processes_compute_a_cold_key_once(tmp_path: Path) -> None:
    workers = _spawn(tmp_path, 6)
    outputs = [w.communicate(timeout=120) for w in workers]
    assert [w.returncode for w in workers] == [0] * 6, [err for _, err in outputs]
    assert {out.strip() for out, _ in outputs} == {"answer to the same question"}
    assert len(_runs(tmp_path)) == 1, [err for _, err in outputs]
    assert [err for _, err in outputs] == [""] * 6  # no tier fault on the way


def test_a_herd_of_processes_and_threads_computes_a_cold_key_once(tmp_path: Path) -> None:
    workers = _spawn(tmp_path, 8, threads=4, delay=2.5)
    outputs = [w.communicate(timeout=120) for w in workers]
    assert [w.returncode for w in workers] == [0] * 8, [err for _, err in outputs]
    answers = [line for out, _ in outputs for line in out.split("\n") if line]
    assert answers == ["answer to the same question"] * 32  # every caller, the same answer
    assert len(_runs(tmp_path)) == 1, [err for _, err in outputs]  # threads wait in-process, processes on the lease
    assert [err for _, err in outputs] == [""] * 8


_OPENER = textwrap.dedent('''
    import sys, time
    import diskcache  # imported before the start line, so the processes open the cache within milliseconds
    from llm_memo import Cache
    time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
    print(" ".join(tier.name for tier in Cache(sys.argv[1]).tiers))
''')


def test_processes_opening_a_new_cache_at_once_all_get_its_disk_tier(tmp_path: Path) -> None:
    for round_ in range(3):  # a race at creation (now fixed) cost one process in 100 or so its disk tier
        start_at = time.time() + 1.0
        openers = [subprocess.Popen([sys.executable, "-c", _OPENER, str(tmp_path / f"cache{round_}"), str(start_at)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
        outputs = [opener.communicate(timeout=60) for opener in openers]
        assert outputs == [("memory disk\n", "")] * 8


def test_processes_opening_an_old_cache_at_once_upgrade_it_once(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    with Cache(directory) as cache:
        for i in range(100):
            cache.set(f"{i:064x}", f"answer {i}", lifetime=None, tags=["kept"])
    with contextlib.closing(sqlite3.connect(directory / "cache.db")) as db, db:  # as earlier builds left it:
        db.execute("DROP TRIGGER llm_memo_tags_follow")  # no trigger, and the tag rows of culled entries
        db.executemany("INSERT INTO llm_memo_tags VALUES ('gone', ?)", ((f"culled{i}",) for i in range(100_000)))
    start_at = time.time() + 1.0
    openers = [subprocess.Popen([sys.executable, "-c", _OPENER, str(directory), str(start_at)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
    assert [opener.communicate(timeout=60) for opener in openers] == [("memory disk\n", "")] * 8
    with contextlib.closing(sqlite3.connect(directory / "cache.db")) as db:
        assert db.execute("SELECT tag, COUNT(*) FROM llm_memo_tags GROUP BY tag").fetchall() == [("kept", 100)]
    with Cache(directory) as cache:
        assert cache.invalidate(tag="kept") == 100


def test_a_killed_lease_holder_blocks_nobody_past_its_lease(tmp_path: Path) -> None:
    holder = _spawn(tmp_path, 1, lease=2.0, hang=True, delay=0.0)[0]
    deadline = time.time() + 60
    while not _runs(tmp_path) and time.time() < deadline:
        time.sleep(0.05)
    assert _runs(tmp_path), "the lease holder never started computing"
    os.kill(holder.pid, signal.SIGKILL)
    holder.communicate(timeout=30)  # reaps it and closes its pipes
    started = time.monotonic()
    waiter = _spawn(tmp_path, 1, lease=2.0, delay=0.0)[0]
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert out.strip() == "answer to the same question"
    assert len(_runs(tmp_path)) == 2  # the killed holder's run and the waiter's own
    # Not a timing assertion on speed: a bound on waiting, which a wedged lease would break.
    assert time.monotonic() - started < 30


def test_leases_are_exclusive_until_released_or_expired(tmp_path: Path) -> None:
    now = [1000.0]
    with Cache(tmp_path / "c", clock=lambda: now[0]) as cache:
        token = cache.lease("k" * 64, 5.0)
        assert token is not None
        assert cache.lease("k" * 64, 5.0) is None
        cache.release("k" * 64, "not-the-token")
        assert cache.lease("k" * 64, 5.0) is None
        now[0] += 5.0
        late = cache.lease("k" * 64, 5.0)
        assert late is not None and late != token
        cache.release("k" * 64, token)  # a stale holder cannot release the new lease
        assert cache.lease("k" * 64, 5.0) is None
        cache.release("k" * 64, late)
        assert cache.lease("k" * 64, 5.0) is not None


def _wait_for_a_run(tmp_path: Path) -> None:
    deadline = time.time() + 60
    while not _runs(tmp_path) and time.time() < deadline:
        time.sleep(0.05)
    assert _runs(tmp_path), "the lease holder never started computing"


def test_a_killed_holder_on_this_host_is_noticed_at_once(tmp_path: Path) -> None:
    holder = _spawn(tmp_path, 1, lease=600.0, hang=True, delay=0.0)[0]
    _wait_for_a_run(tmp_path)
    waiter = _spawn(tmp_path, 1, lease=600.0, delay=0.0)[0]
    time.sleep(2.0)  # the waiter is waiting on the holder's 600 s lease
    os.kill(holder.pid, signal.SIGKILL)
    holder.communicate(timeout=30)
    started = time.monotonic()
    out, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, err
    assert out.strip() == "answer to the same question"
    assert len(_runs(tmp_path)) == 2
    assert time.monotonic() - started < 60  # a tenth of the lease: only seeing the holder gone gets here


def test_a_dead_holder_on_another_host_loses_its_lease_within_the_lease(tmp_path: Path) -> None:
    holder = _spawn(tmp_path, 1, lease=3.0, hang=True, delay=0.0, host="another-machine")[0]
    _wait_for_a_run(tmp_path)
    time.sleep(3.0)  # the holder lives past its lease: its heartbeat keeps the lease
    waiter = _spawn(tmp_path, 1, lease=3.0, delay=0.0)[0]
    time.sleep(3.0)
    assert len(_runs(tmp_path)) == 1  # still held by the live holder
    os.kill(holder.pid, signal.SIGKILL)  # it cannot be probed from here: only its lease's expiry tells
    holder.communicate(timeout=30)
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert out.strip() == "answer to the same question"
    assert len(_runs(tmp_path)) == 2


def test_a_call_longer_than_its_lease_runs_once(tmp_path: Path) -> None:
    workers = _spawn(tmp_path, 3, lease=1.0, body=4.0)
    outputs = [w.communicate(timeout=120) for w in workers]
    assert [w.returncode for w in workers] == [0] * 3, [err for _, err in outputs]
    assert {out.strip() for out, _ in outputs} == {"answer to the same question"}
    assert len(_runs(tmp_path)) == 1  # the holder renews its lease while the call runs


def test_waiters_on_a_failing_holder_run_together_not_in_turn(tmp_path: Path) -> None:
    workers = _spawn(tmp_path, 8, mode="fail", body=2.0, delay=2.5)
    outputs = [w.communicate(timeout=120) for w in workers]
    assert [out.strip() for out, _ in outputs] == ["the provider failed"] * 8, [err for _, err in outputs]
    starts = _run_starts(tmp_path)
    assert len(starts) == 8  # a failure is not stored: every caller gets its own
    waiters = starts[1:]
    # In turn, each waiter would start only when the one before it failed, 2 s later.
    assert waiters[-1] - waiters[0] < 2.0, starts
    assert waiters[0] - starts[0] >= 2.0  # and none of them before the holder failed


def test_the_default_lease_is_short_because_holders_renew_it() -> None:
    import inspect

    from llm_memo import llm_cache

    assert inspect.signature(llm_cache).parameters["lease"].default == 10.0
