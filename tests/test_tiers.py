"""What the memory and disk tiers do beyond the contract (tests/test_tier_contract.py): bounds,
persistence, and the faults each must survive."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import shutil
import sqlite3
import stat
import threading
import time
from pathlib import Path

import diskcache
import pytest
from conftest import run_python

from llm_memo._storage.disk import DiskTier
from llm_memo._storage.memory import MemoryTier

ROOT = Path(__file__).resolve().parents[1]


class FakeClock:
    """A clock tests move by hand; doubles as the memory tier's monotonic timer."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def k(label: object) -> str:
    return hashlib.sha256(repr(label).encode()).hexdigest()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# -- memory ---------------------------------------------------------------------------------


def test_memory_stays_within_its_byte_bound(clock):
    tier = MemoryTier(maxsize=10_000, clock=clock, timer=clock)
    for i in range(100):  # 10x maxsize
        tier.set(k(i), bytes([i]) * 1000, None)
    assert tier.volume() <= 10_000
    assert sum(len(tier.get(key) or b"") for key in list(tier.keys())) <= 10_000
    assert tier.get(k(99)) == bytes([99]) * 1000  # the newest survives, the oldest went
    assert tier.get(k(0)) is None


def test_memory_skips_a_value_larger_than_maxsize(clock):
    tier = MemoryTier(maxsize=100, clock=clock, timer=clock)
    tier.set(k(1), b"small", None)
    tier.set(k(2), b"x" * 100, None)
    tier.set(k(1), b"x" * 101, None)  # no ValueError, and the older value is not kept
    assert tier.get(k(1)) is None
    assert tier.get(k(2)) == b"x" * 100


def test_memory_lifetime_ignores_wall_clock_jumps():
    wall, mono = FakeClock(), FakeClock(50.0)
    tier = MemoryTier(clock=wall, timer=mono)
    tier.set(k(1), b"v", wall.now + 60)
    wall.advance(3600)  # forward jump: not expired early
    assert tier.get(k(1)) == b"v"
    wall.advance(-7200)  # backward jump: not extended
    mono.advance(59.5)
    assert tier.get(k(1)) == b"v"
    mono.advance(0.5)
    assert tier.get(k(1)) is None
    # A promoted entry keeps its remaining lifetime, whatever the wall clock did before.
    tier.set(k(2), b"v", wall.now + 30)
    mono.advance(29.5)
    assert tier.get(k(2)) == b"v"
    mono.advance(0.5)
    assert tier.get(k(2)) is None


def test_memory_is_thread_safe():
    tier = MemoryTier(maxsize=20_000)  # small enough to evict constantly
    errors: list[BaseException] = []
    keys = [k(i) for i in range(50)]

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(3000):
                key = rng.choice(keys)
                op = rng.random()
                if op < 0.5:
                    tier.set(key, key.encode() * rng.randint(1, 20), None, tags=[key[:2]])
                elif op < 0.9:
                    got = tier.get(key)
                    assert got is None or (got and got == key.encode() * (len(got) // 64))
                elif op < 0.97:
                    tier.delete(key)
                else:
                    tier.invalidate(key[:2])
                    list(tier.keys())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert tier.volume() <= 20_000


# -- disk -----------------------------------------------------------------------------------


def rows(directory: Path, key: str) -> int:
    with sqlite3.connect(directory / "cache.db") as con:
        (count,) = con.execute("SELECT count(*) FROM Cache WHERE key = ?", (key,)).fetchone()
    con.close()
    return count


def test_disk_persists_across_instances(tmp_path, clock):
    first = DiskTier(tmp_path, clock=clock)
    first.set(k(1), b"one", clock.now + 60, tags=["fn:f"])
    first.set(k(2), b"two", None, tags=["fn:f", "model:m"])
    first.close()
    second = DiskTier(tmp_path, clock=clock)
    assert second.get(k(1)) == b"one"
    assert second.invalidate("model:m") == 1
    clock.advance(60)
    assert second.get(k(1)) is None
    assert second.invalidate("fn:f") == 0
    second.close()


@pytest.mark.slow
def test_disk_persists_across_processes(tmp_path, clock):
    run_python(
        f"""
        import time
        from llm_memo._storage.disk import DiskTier
        tier = DiskTier({str(tmp_path)!r})
        tier.set({k(1)!r}, b"from a child", None, tags=["fn:child"])
        tier.set({k(2)!r}, b"for an hour", time.time() + 3600)
        tier.close()
        """
    )
    tier = DiskTier(tmp_path, clock=time.time)
    assert tier.get(k(1)) == b"from a child"
    assert tier.get(k(2)) == b"for an hour"
    assert tier.invalidate("fn:child") == 1
    tier.close()


class _Plant:
    """Unpickling it runs os.mkdir(path): proof that something unpickled cache contents."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (str(self.path),))


def test_disk_never_unpickles_a_planted_row(tmp_path, clock):
    control = tmp_path / "control"  # the plant is live: plain diskcache runs it
    with diskcache.Cache(tmp_path / "plain") as plain:
        plain.set("x", _Plant(control))
        plain.get("x")
    assert control.exists()

    sentinel = tmp_path / "pwned"
    tier = DiskTier(tmp_path / "cache", clock=clock)
    tier.set(k("good"), b"good", None)
    with diskcache.Cache(tmp_path / "cache") as planter:
        planter.set(k(1), _Plant(sentinel))  # a pickled value under a valid key
        planter.set(_Plant(sentinel), b"x")  # a pickled key
        planter.set(k(2), "a text value longer than our header")
        planter.set(k(3), b"raw bytes without our header")
        planter.set(k(4), 2**40)
    assert sorted(tier.keys()) == [k("good")]
    for key in (k(1), k(2), k(3), k(4)):
        assert tier.get(key) is None
        assert rows(tmp_path / "cache", key) == 0  # dropped, not left to fail again
    assert tier.get(k("good")) == b"good"
    assert tier.clear() == 1
    assert not sentinel.exists()
    tier.close()


def test_disk_returns_payload_verbatim_and_drops_a_damaged_header(tmp_path, clock, caplog):
    tier = DiskTier(tmp_path, clock=clock)
    tier.set(k(1), b"the original answer", None)
    tier.set(k(2), b"another answer", None)

    def damage(key: str, index: int) -> None:
        with sqlite3.connect(tmp_path / "cache.db") as con:
            (value,) = con.execute("SELECT value FROM Cache WHERE key = ?", (key,)).fetchone()
            value = bytearray(value)
            value[index] ^= 1
            con.execute("UPDATE Cache SET value = ? WHERE key = ?", (bytes(value), key))
        con.close()

    damage(k(1), -1)  # the payload: the codec's checksum will catch it, and the engine count it
    assert tier.get(k(1)) == b"the original answes"
    damage(k(2), 0)  # our header: not a row this tier wrote
    with caplog.at_level(logging.WARNING, logger="llm_memo"):
        assert tier.get(k(2)) is None
    assert "not written by llm_memo" in caplog.text
    assert rows(tmp_path, k(2)) == 0
    tier.close()


def corrupt_header(db: Path) -> None:
    with open(db, "r+b") as f:  # diskcache's test_integrity_check
        f.seek(52)
        f.write(b"\x00\x01")


@pytest.mark.parametrize("damage", ["header", "not sqlite"])
def test_disk_sets_a_corrupted_database_aside(tmp_path, clock, caplog, damage):
    tier = DiskTier(tmp_path, clock=clock)
    for i in range(200):
        tier.set(k(i), b"v" * 100, None)
    tier.close()
    db = tmp_path / "cache.db"
    if damage == "header":
        corrupt_header(db)
    else:
        db.write_bytes(b"this is not a database\n" * 100)
    with caplog.at_level(logging.WARNING, logger="llm_memo"):
        fresh = DiskTier(tmp_path, clock=clock)
    assert "corrupt disk cache" in caplog.text
    assert len(list(tmp_path.glob("cache.db.corrupt-*"))) == 1
    assert fresh.get(k(1)) is None
    fresh.set(k(1), b"again", None)
    assert fresh.get(k(1)) == b"again"
    fresh.close()


def test_disk_recovers_from_corruption_found_in_use(tmp_path, clock, caplog):
    tier = DiskTier(tmp_path, clock=clock)
    tier.set(k(1), b"v", None)
    with sqlite3.connect(tmp_path / "cache.db") as con:  # move the pages out of the WAL
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    (tmp_path / "cache.db").write_bytes(b"garbage" * 1000)
    outcome: list[object] = []
    # A new thread opens a new connection, which meets the damage.
    worker = threading.Thread(target=lambda: outcome.append(_attempt(tier.get, k(1))))
    worker.start()
    worker.join()
    assert isinstance(outcome[0], sqlite3.DatabaseError)  # that one call fails...
    assert "corrupt disk cache" in caplog.text
    tier.set(k(2), b"w", None)  # ...and the tier works again afterwards
    assert tier.get(k(2)) == b"w"
    tier.close()


def _attempt(call, *args):
    try:
        return call(*args)
    except Exception as exc:
        return exc


def test_disk_permissions(tmp_path, clock):
    directory = tmp_path / "new" / "cache"
    tier = DiskTier(directory, clock=clock)
    tier.set(k(1), b"v", None)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = [p for p in directory.iterdir() if p.name.startswith("cache.db")]
    assert {p.name for p in files} >= {"cache.db", "cache.db-wal", "cache.db-shm"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    tier.close()


def test_disk_warns_once_about_a_shared_directory(tmp_path, clock):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.warns(UserWarning, match="writable by other users"):
        DiskTier(shared, clock=clock).close()
    DiskTier(shared, clock=clock).close()  # warnings are errors: a second warning would fail


def test_disk_size_limit_holds(tmp_path, clock):
    limit = 2**20
    tier = DiskTier(tmp_path, size_limit=limit, clock=clock)
    chunk = os.urandom(8 * 1024)
    for i in range(10 * limit // len(chunk)):  # write 10x the limit
        tier.set(k(i), chunk, None, (f"t{i % 3}", "all"))
    assert tier.volume() <= limit * 1.25  # diskcache culls lazily, 10 rows per set
    with contextlib.closing(sqlite3.connect(tmp_path / "cache.db")) as db:  # culled rows take their tags along
        assert db.execute("SELECT COUNT(*) FROM llm_memo_tags").fetchone()[0] == 2 * len(tier)
    assert tier.get(k(10 * limit // len(chunk) - 1)) == chunk
    tier.set(k("huge"), b"x" * (limit + 1), None)  # over the limit: skipped, no error
    assert tier.get(k("huge")) is None
    tier.close()


def test_disk_fails_fast_on_a_locked_database(tmp_path, clock):
    tier = DiskTier(tmp_path, clock=clock, timeout=0.2)
    tier.set(k(1), b"v", None)
    other = sqlite3.connect(tmp_path / "cache.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        start = time.monotonic()
        with pytest.raises(TimeoutError, match="locked"):
            tier.set(k(2), b"w", None)
        assert time.monotonic() - start < 5  # ~0.2 s, never diskcache's 60 s default
        assert tier.get(k(1)) == b"v"  # readers are not blocked (WAL)
    finally:
        other.execute("ROLLBACK")
        other.close()
    tier.set(k(2), b"w", None)
    assert tier.get(k(2)) == b"w"
    tier.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("existing", "error"),
    [(False, "PermissionError"), (True, "OperationalError")],
    ids=["new", "existing-db"],
)
def test_disk_read_only_directory_raises_at_construction(tmp_path, existing, error):
    directory = tmp_path / "ro"
    directory.mkdir()
    if existing:
        made = DiskTier(directory)
        made.set(k(1), b"v", None)
        made.close()
    directory.chmod(0o500)
    try:
        out = run_python(
            """
            import sys
            from llm_memo._storage.disk import DiskTier
            try:
                DiskTier(sys.argv[1]).close()
            except Exception as exc:
                print(type(exc).__name__, exc)
            """,
            str(directory),
            bound_by_permissions=True,
        )
    finally:
        directory.chmod(0o700)
    assert out.startswith(error), out


@pytest.mark.slow
def test_disk_full_fails_writes_only_and_heals(tmp_path):
    # RLIMIT_FSIZE makes the kernel refuse to grow files, as a full disk would.
    code = f"""
        import os, resource, signal
        from llm_memo._storage.disk import DiskTier
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        tier = DiskTier({str(tmp_path)!r})
        tier.set("a" * 64, b"kept", None)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))
        failures = 0
        for i in range(60):
            try:
                tier.set(f"{{i:064x}}", os.urandom(20_000), None)
            except Exception as exc:
                assert isinstance(exc, (OSError, __import__("sqlite3").Error)), repr(exc)
                failures += 1
        assert failures > 0
        assert tier.get("a" * 64) == b"kept"  # reads still work
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        tier.set("b" * 64, os.urandom(50_000), None)  # space is back: nothing to fix by hand
        assert len(tier.get("b" * 64)) == 50_000
        tier.close()
    """
    run_python(code)
    with sqlite3.connect(tmp_path / "cache.db") as con:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    con.close()


def test_disk_directory_deleted_while_open_is_recreated(tmp_path, clock):
    directory = tmp_path / "cache"
    tier = DiskTier(directory, clock=clock)
    tier.set(k(1), b"v", None)
    shutil.rmtree(directory)
    assert tier.get(k(1)) is None
    tier.set(k(2), b"w", None)  # lands in a new database, not in the unlinked one
    tier.close()
    again = DiskTier(directory, clock=clock)
    assert again.get(k(2)) == b"w"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    again.close()


def test_disk_path_that_is_a_file_raises_at_construction(tmp_path, clock):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        DiskTier(tmp_path / "file", clock=clock)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_an_interrupt_inside_a_disk_write_rolls_it_back(tmp_path, clock, monkeypatch):
    """Ctrl-C in a notebook lands anywhere, the middle of a write included (RELIABILITY A.2)."""
    import llm_memo._storage.disk as disk

    tier = DiskTier(tmp_path, clock=clock)
    tier.set(k(1), b"old", None, ("t",))
    real = disk._execute

    def interrupted(cache, statement, params=()):
        if statement.startswith("INSERT INTO llm_memo_tags"):
            raise KeyboardInterrupt  # after the value row was written, before its tags
        return real(cache, statement, params)

    monkeypatch.setattr(disk, "_execute", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tier.set(k(1), b"new", None, ("t",))
    with pytest.raises(KeyboardInterrupt):
        tier.set(k(2), b"fresh", None, ("t",))
    monkeypatch.setattr(disk, "_execute", real)
    assert tier.get(k(1)) == b"old" and tier.get(k(2)) is None  # both writes rolled back whole
    assert tier.invalidate("t") == 1  # the old entry kept its tag row
    tier.set(k(3), b"after", None)  # and the tier is usable
    assert tier.get(k(3)) == b"after"
    with contextlib.closing(sqlite3.connect(tmp_path / "cache.db")) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    tier.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_its_memory_tier_afresh_and_forks_never_wait(clock):
    tier = MemoryTier(clock=clock)
    tier.set(k("parent"), b"p", None, ("t",))
    pids: list[int] = []

    def fork() -> None:
        pid = os.fork()
        if pid == 0:  # the child: an empty tier with a free lock, whatever the parent's threads held
            code = 1
            try:
                if tier.get(k("parent")) is None:
                    tier.set(k("child"), b"c", None)
                    code = 0 if tier.get(k("child")) == b"c" and len(tier) == 1 else 1
            finally:
                os._exit(code)
        pids.append(pid)

    with tier._lock:  # held by this thread as it forks, from two threads at once: no deadlock
        forkers = [threading.Thread(target=fork) for _ in range(2)]
        for forker in forkers:
            forker.start()
        for forker in forkers:
            forker.join(30)
    assert len(pids) == 2
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    assert tier.get(k("parent")) == b"p"  # the parent keeps its entries


def test_disk_survives_fork(tmp_path, clock):
    tier = DiskTier(tmp_path, clock=clock)
    tier.set(k("parent"), b"p", None)
    pid = os.fork()
    if pid == 0:  # the child: diskcache sees the new pid and opens its own connection
        code = 1
        try:
            if tier.get(k("parent")) == b"p":
                tier.set(k("child"), b"c", None)
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert tier.get(k("child")) == b"c"
    tier.set(k("after"), b"a", None)
    tier.close()
    with sqlite3.connect(tmp_path / "cache.db") as con:
        assert con.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    con.close()
