"""The Redis tier: the tier contract against a real redis-server, then its faults and its safety.

Each test starts from its own key prefix on a session redis-server (and a one-node Redis
Cluster for the contract); tests that kill, freeze or fill Redis get a private server.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import hashlib
import logging
import os
import pickle
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from conftest import FakeClock, Server, free_port, fresh_prefix

from llm_memo import Cache, llm_cache
from llm_memo._logic.canonical import TAG
from llm_memo._logic.codec import FLAG_PICKLE, FORMAT, Header, pack
from llm_memo._storage.redis import RedisTier, RedisUnavailable

LOGGER = "llm_memo"
def k(label: object) -> str:
    return hashlib.sha256(repr(label).encode()).hexdigest()


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start servers this test may kill, freeze or fill; all are killed afterwards."""
    started: list[Server] = []

    def start(*options: str) -> Server:
        directory = tmp_path / f"redis-{len(started)}"
        directory.mkdir()
        server = Server(directory, *options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        with contextlib.suppress(ProcessLookupError):
            server.signal(signal.SIGCONT)
        server.kill()


# -- the Redis tier alone (the contract every tier keeps: tests/test_tier_contract.py) --------


@pytest.fixture(params=["standalone", "cluster"])
def tier(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[RedisTier]:
    cluster = request.param == "cluster"
    server = request.getfixturevalue("redis_cluster" if cluster else "redis_server")
    made = RedisTier(server.url, prefix=fresh_prefix(), clock=clock, cluster=cluster)
    yield made
    made.close()


def test_the_event_stream_reads_from_an_id_inclusive(tier: RedisTier) -> None:
    assert tier.newest_event() is None
    ids = [tier.publish({b"op": b"tag", b"arg": f"t{i}".encode()}) for i in range(3)]
    assert tier.newest_event() == ids[2]
    assert [(event_id, fields[b"arg"]) for event_id, fields in tier.events(ids[1])] == [(ids[1], b"t1"),
                                                                                      (ids[2], b"t2")]
    assert [event_id for event_id, _ in tier.events(b"0-0", count=2)] == ids[:2]


def test_values_are_stored_for_exactly_their_owner(tier: RedisTier) -> None:
    # A member of a tag index whose entry was rewritten under other tags must not drag the
    # entry out with it; the second read of a long tag list must return the right list.
    many = [f"tag-{i:04d}-{'x' * 40}" for i in range(30)]  # longer than one header peek
    tier.set(k(1), b"one", None, tags=many)
    tier.set(k(2), b"two", None, tags=["solo"])
    assert tier.invalidate(many[-1]) == 1
    assert tier.get(k(1)) is None
    assert tier.get(k(2)) == b"two"


# -- Redis does the expiring --------------------------------------------------------------


def test_ttl_is_enforced_by_redis_itself(redis_server: Server) -> None:
    tier = RedisTier(redis_server.url, prefix=fresh_prefix())
    raw = redis_server.client()
    try:
        tier.set(k(1), b"v", time.time() + 60, tags=["fn:app.ask"])
        pttl = raw.pttl(f"{tier.prefix}:v:{k(1)}")
        assert 0 < pttl <= 60_000
        assert raw.pttl(f"{tier.prefix}:t:fn:app.ask") >= pttl - 50  # the index outlives it
        tier.set(k(2), b"v", time.time() + 0.05)
        deadline = time.monotonic() + 5
        while raw.exists(f"{tier.prefix}:v:{k(2)}") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not raw.exists(f"{tier.prefix}:v:{k(2)}")  # gone without anyone asking for it
        tier.set(k(3), b"v", None)
        assert raw.pttl(f"{tier.prefix}:v:{k(3)}") == -1
    finally:
        raw.close()
        tier.close()


def test_a_cached_call_sets_a_redis_ttl(redis_server: Server, tmp_path: Path) -> None:
    prefix = fresh_prefix()
    with Cache(tmp_path, redis_url=redis_server.url, redis_prefix=prefix) as cache:

        @llm_cache(cache=cache, ttl=120)
        def ask(question: str) -> str:
            return f"answer to {question}"

        assert ask("q") == "answer to q"
        with contextlib.closing(redis_server.client()) as raw:
            assert 0 < raw.pttl(f"{prefix}:v:{ask.cache_key('q')}") <= 120_000


def test_tag_indexes_stay_bounded_and_outlive_their_entries(redis_server: Server, clock: FakeClock) -> None:
    tier = RedisTier(redis_server.url, prefix=fresh_prefix(), clock=clock)
    index = f"{tier.prefix}:t:fn:f"
    with contextlib.closing(redis_server.client()) as raw:
        for i in range(100):
            tier.set(k(i), b"v", clock.now + 10, tags=["fn:f"])
        clock.advance(10)
        tier.set(k("new"), b"v", clock.now + 30, tags=["fn:f"])
        assert raw.zcard(index) == 1  # the expired members were pruned by the write
        assert 29_000 < raw.pttl(index) <= 30_000
        tier.set(k("forever"), b"v", None, tags=["fn:f"])
        assert raw.pttl(index) == -1  # an entry that never expires keeps its index for ever
        tier.set(k("forever"), b"v", clock.now + 5, tags=["fn:f"])
        assert 29_000 < raw.pttl(index) <= 30_000  # back to the longest-lived member
    assert tier.invalidate("fn:f") == 2
    tier.close()


def test_a_value_over_the_size_limit_is_skipped_and_the_older_one_dropped(redis_server: Server) -> None:
    tier = RedisTier(redis_server.url, prefix=fresh_prefix(), size_limit=1000)
    tier.set(k(1), b"small", None)
    tier.set(k(1), b"x" * 1000, None)  # with the header, over the limit: stored nowhere
    assert tier.get(k(1)) is None
    assert list(tier.keys()) == []
    tier.close()


# -- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "app:cache", "a*", "a?b", "[ab]", "x" * 65, "é"])
def test_prefixes_that_could_overlap_or_glob_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix must be"):
        RedisTier("redis://127.0.0.1:1/0", prefix=prefix)


def test_construction_never_touches_the_network() -> None:
    port = free_port()  # nothing listens here
    plain = RedisTier(f"rediss://user:hunter2@127.0.0.1:{port}/0?ssl_cert_reqs=none")
    assert plain._link.client.connection_pool.connection_class is redis.SSLConnection
    cluster = RedisTier(f"redis://127.0.0.1:{port}/0?cluster=true")
    assert cluster._link.client is None  # RedisCluster connects when made: on first use
    with pytest.raises(RedisUnavailable, match="RedisCluster"):
        cluster.get(k(1))
    for made in (plain, cluster):
        assert "hunter2" not in repr(made)
        made.close()


def test_a_client_that_decodes_responses_is_refused() -> None:
    client = redis.Redis(port=free_port(), decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses=False"):
        RedisTier("redis://unused", client=client)
    client.close()


def test_a_ready_client_is_used_and_left_open(redis_server: Server) -> None:
    client = redis_server.client()
    tier = RedisTier("redis://unused", client=client, prefix=fresh_prefix())
    tier.set(k(1), b"v", None)
    assert tier.get(k(1)) == b"v"
    tier.close()
    assert client.ping()  # still the caller's to close
    client.close()


def test_the_environment_variable_adds_the_tier(redis_server: Server, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_MEMO_REDIS_URL", redis_server.url)
    prefix = fresh_prefix()
    with Cache(tmp_path, redis_prefix=prefix) as cache:
        assert [tier.name for tier in cache.tiers] == ["memory", "disk", "redis"]
        assert cache.tiers[-1].prefix == prefix


# -- several apps and several machines on one server ---------------------------------------


def test_prefixes_are_isolated(redis_server: Server, clock: FakeClock) -> None:
    a = RedisTier(redis_server.url, prefix=fresh_prefix(), clock=clock)
    b = RedisTier(redis_server.url, prefix=fresh_prefix(), clock=clock)
    for tier, label in ((a, b"a"), (b, b"b")):
        tier.set(k(1), label, None, tags=["fn:shared"])
        tier.set(k(2), label, None)
    a.set(k(3), b"a only", None)
    assert a.get(k(1)) == b"a" and b.get(k(1)) == b"b"
    assert b.get(k(3)) is None
    assert sorted(b.keys()) == sorted([k(1), k(2)])
    assert b.invalidate("fn:shared") == 1
    assert a.get(k(1)) == b"a"
    assert a.clear() == 3  # b's invalidation took b's k(1) only
    assert a.clear() == 0
    assert list(a.keys()) == []
    assert list(b.keys()) == [k(2)] and b.get(k(2)) == b"b"
    b.clear()
    a.close()
    b.close()


def make_ask(cache: Cache, calls: list[str]) -> Any:
    """The same cached function (same name, same source, so same keys) on one machine's cache."""

    @llm_cache(cache=cache, ttl=3600)
    def ask(question: str) -> str:
        calls.append(question)
        return f"answer to {question}"

    return ask


def test_invalidation_reaches_redis_for_every_machine(redis_server: Server, tmp_path: Path) -> None:
    prefix = fresh_prefix()
    machines = [Cache(tmp_path / name, redis_url=redis_server.url, redis_prefix=prefix) for name in "abc"]
    calls: list[list[str]] = [[], [], []]
    a, b, c = (make_ask(cache, log) for cache, log in zip(machines, calls, strict=True))
    try:
        assert a("x") == "answer to x" and a("y") == "answer to y"
        assert b("x") == "answer to x"  # b never computed it: it came from Redis
        assert calls[1] == []
        assert machines[1].get(a.cache_key("x")).tier == "memory"  # and was promoted
        assert machines[0].invalidate(function=a) >= 2
        assert b("y") == "answer to y" and calls[1] == ["y"]  # gone from Redis for b too
        assert c("x") == "answer to x" and calls[2] == ["x"]  # and for a new machine
        assert calls[0] == ["x", "y"]
    finally:
        for cache in machines:
            cache.close()


def forgotten(cache: Cache, key: str, within: float = 10.0) -> bool:
    """Whether every tier of `cache` drops `key` within `within` seconds (the poll is 0.5 s)."""
    deadline = time.monotonic() + within
    while cache.get_entry(key) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@contextlib.contextmanager
def two_machines(url: str, tmp_path: Path, calls: list[str] | None = None) -> Iterator[tuple[Cache, Cache, Any, Any]]:
    """(cache a, cache b, a's ask, b's ask) sharing one Redis, after a computed "x" and b read it,
    so b holds copies of "x" in its own memory and disk tiers."""
    prefix = fresh_prefix()
    with Cache(tmp_path / "a", redis_url=url, redis_prefix=prefix) as ca, \
            Cache(tmp_path / "b", redis_url=url, redis_prefix=prefix) as cb:
        a, b = make_ask(ca, []), make_ask(cb, [] if calls is None else calls)
        a("x")
        b("x")
        yield ca, cb, a, b


@pytest.mark.parametrize("how", ["function", "tag", "call", "many", "clear"])
def test_invalidation_reaches_other_machines_local_copies(redis_server: Server, tmp_path: Path, how: str) -> None:
    calls: list[str] = []
    with two_machines(redis_server.url, tmp_path, calls) as (ca, cb, a, b):
        assert dict(b.cache_info().hits_by_tier) == {"redis": 1} and calls == []
        {"function": lambda: ca.invalidate(function=a), "tag": lambda: ca.invalidate(tag=a.__llm_memo_tag__),
         "call": lambda: a.invalidate("x"), "many": lambda: ca.delete_many([k(1), a.cache_key("x"), k(2)]),
         "clear": ca.clear}[how]()
        assert forgotten(cb, b.cache_key("x"))
        b("x")
        assert calls == ["x"]  # b recomputed instead of serving its local copy


def test_resp3_clients_get_the_events_too(redis_server: Server, tmp_path: Path) -> None:
    with two_machines(redis_server.url + "?protocol=3", tmp_path) as (_, cb, a, b):
        a.invalidate("x")
        assert forgotten(cb, b.cache_key("x"))


def test_an_event_that_meets_a_locked_disk_is_applied_once_the_lock_goes(redis_server: Server,
                                                                         tmp_path: Path) -> None:
    with two_machines(redis_server.url, tmp_path) as (_, cb, a, b):
        holder = sqlite3.connect(tmp_path / "b" / "cache.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process of b's directory, writing for a while
        try:
            a.invalidate("x")
            time.sleep(2.5)  # polls meet the lock: each delete on b's disk times out after 1 s
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert forgotten(cb, b.cache_key("x"))  # memory at once, disk at the first poll after the lock


def test_a_gap_while_running_clears_the_local_tiers(redis_server: Server, tmp_path: Path) -> None:
    prefix = fresh_prefix()
    with Cache(tmp_path / "b", redis_url=redis_server.url, redis_prefix=prefix) as cb:
        b = make_ask(cb, [])
        b("x")
        client = redis.Redis.from_url(redis_server.url)
        pipe = client.pipeline(transaction=False)
        event = {b"op": b"keys", b"arg": orjson.dumps([b.cache_key("x")]), b"origin": b"elsewhere", b"dir": b""}
        pipe.xadd(f"{prefix}:events", event, maxlen=10_000, approximate=False)
        for i in range(10_000):  # a flood between two polls trims the event away before b reads it
            pipe.xadd(f"{prefix}:events", {b"op": b"tag", b"arg": f"other{i}".encode(), b"origin": b"elsewhere",
                                           b"dir": b""}, maxlen=10_000, approximate=False)
        pipe.execute()
        client.close()
        key, deadline = b.cache_key("x"), time.monotonic() + 10
        while any(tier.get(key) is not None for tier in cb.tiers[:2]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [tier.get(key) for tier in cb.tiers[:2]] == [None, None]  # applied, or trimmed: all cleared


def test_a_stream_lost_while_a_machine_was_away_clears_its_local_tiers(redis_server: Server,
                                                                        tmp_path: Path) -> None:
    prefix = fresh_prefix()
    calls: list[str] = []
    with Cache(tmp_path / "b", redis_url=redis_server.url, redis_prefix=prefix) as cb:
        make_ask(cb, calls)("x")
    with Cache(tmp_path / "a", redis_url=redis_server.url, redis_prefix=prefix) as ca:
        make_ask(ca, []).invalidate("x")
        client = redis.Redis.from_url(redis_server.url)
        client.delete(f"{prefix}:events")  # evicted, or Redis restarted without persistence
        client.close()
        ca.invalidate(tag="unrelated")
    with Cache(tmp_path / "b", redis_url=redis_server.url, redis_prefix=prefix) as cb:
        make_ask(cb, calls)("x")
    assert calls == ["x", "x"]


def test_a_caches_own_invalidations_never_come_back_to_its_directory(redis_server: Server, tmp_path: Path) -> None:
    prefix = fresh_prefix()
    with Cache(tmp_path / "c", redis_url=redis_server.url, redis_prefix=prefix) as first, \
            Cache(tmp_path / "c", redis_url=redis_server.url, redis_prefix=prefix) as sibling:
        first.clear()
        for i in range(5):
            first.set(k(i), i, lifetime=600)
        time.sleep(1.5)  # the sibling applies the clear to its memory, never again to the shared disk
        assert sum(sibling.tiers[1].get(k(i)) is not None for i in range(5)) == 5
    with Cache(tmp_path / "c", redis_url=redis_server.url, redis_prefix=prefix) as later:
        assert [later.get(k(i)).value for i in range(5)] == list(range(5))  # the next process starts past it


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forking_while_the_poller_scans_memory_never_deadlocks_the_child(redis_server: Server,
                                                                        tmp_path: Path) -> None:
    prefix = fresh_prefix()
    with Cache(tmp_path / "c", redis_url=redis_server.url, redis_prefix=prefix) as cache:
        for i in range(20_000):
            cache.memory.set(k(i), b"x" * 10, None, ("t",))
        stop = threading.Event()

        def scan() -> None:  # what the poller does on a tag event: scan memory under its lock
            while not stop.is_set():
                cache.memory.invalidate("absent")

        scanner = threading.Thread(target=scan)
        scanner.start()
        try:
            children = []
            for _ in range(10):
                pid = os.fork()
                if pid == 0:  # the child: one memory read, then out
                    cache.memory.get(k(1))
                    os._exit(0)
                children.append(pid)
            deadline = time.monotonic() + 30
            pending = set(children)
            while pending and time.monotonic() < deadline:
                for pid in list(pending):
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        pending.discard(pid)
                time.sleep(0.02)
            for pid in pending:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            assert not pending, f"{len(pending)} of 10 forked children deadlocked on the memory tier"
        finally:
            stop.set()
            scanner.join()


def test_a_copied_directory_is_a_directory_of_its_own(redis_server: Server, tmp_path: Path) -> None:
    prefix = fresh_prefix()
    with Cache(tmp_path / "original", redis_url=redis_server.url, redis_prefix=prefix) as ca:
        a = make_ask(ca, [])
        a("x")
        ca.close()
        shutil.copytree(tmp_path / "original", tmp_path / "copy")  # a restored CI cache, a baked image
        with Cache(tmp_path / "original", redis_url=redis_server.url, redis_prefix=prefix) as again, \
                Cache(tmp_path / "copy", redis_url=redis_server.url, redis_prefix=prefix) as copy:
            make_ask(again, []).invalidate("x")
            assert forgotten(copy, make_ask(copy, []).cache_key("x"))  # its disk too, not only memory


def test_an_event_a_tier_keeps_refusing_is_given_up_and_the_next_ones_apply(
        redis_server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with two_machines(redis_server.url, tmp_path) as (_, cb, a, b):
        holder = sqlite3.connect(tmp_path / "b" / "cache.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # b's disk refuses every delete for as long as this lasts
        try:
            with caplog.at_level(logging.WARNING, logger="llm_memo"):
                a.invalidate("x")
                deadline = time.monotonic() + 30
                while not any("gave up" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
                    time.sleep(0.1)
            assert any("gave up" in r.getMessage() for r in caplog.records)
            a("y")
            b("y")
            a.invalidate("y")  # the stream moves on: later events reach b's memory at least
            deadline = time.monotonic() + 30
            while cb.tiers[0].get(b.cache_key("y")) is not None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert cb.tiers[0].get(b.cache_key("y")) is None
        finally:
            holder.execute("ROLLBACK")
            holder.close()


def test_a_cache_dropped_without_close_stops_listening(redis_server: Server, tmp_path: Path) -> None:
    def listeners() -> int:
        return sum(t.name == "llm_memo-invalidations" and t.is_alive() for t in threading.enumerate())

    before = listeners()
    cache = Cache(tmp_path / "c", redis_url=redis_server.url, redis_prefix=fresh_prefix())
    assert listeners() == before + 1
    del cache
    gc.collect()
    deadline = time.monotonic() + 10
    while listeners() > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert listeners() == before


def test_a_bulk_delete_goes_out_in_a_few_events(redis_server: Server, tmp_path: Path) -> None:
    with Cache(tmp_path / "a", redis_url=redis_server.url, redis_prefix=fresh_prefix()) as cache:
        for i in range(1200):
            cache.set(k(i), i, lifetime=600)
        assert cache.delete_many(k(i) for i in range(1200)) == 1200
        client = redis.Redis.from_url(redis_server.url)
        assert client.xlen(f"{cache.tiers[-1].prefix}:events") == 1 + 3  # the opening anchor, 500 keys an event
        client.close()


def test_a_machine_that_was_away_catches_up_when_it_opens(redis_server: Server, tmp_path: Path) -> None:
    prefix = fresh_prefix()
    calls: list[str] = []
    with Cache(tmp_path / "b", redis_url=redis_server.url, redis_prefix=prefix) as cb:
        make_ask(cb, calls)("x")  # b's disk keeps a copy while b is away
    with Cache(tmp_path / "a", redis_url=redis_server.url, redis_prefix=prefix) as ca:
        make_ask(ca, []).invalidate("x")
    with Cache(tmp_path / "b", redis_url=redis_server.url, redis_prefix=prefix) as cb:
        make_ask(cb, calls)("x")  # no waiting: opening applied what b missed
    assert calls == ["x", "x"]


def test_a_machine_away_for_too_many_events_clears_its_local_tiers(redis_server: Server, tmp_path: Path) -> None:
    prefix = fresh_prefix()
    calls: list[str] = []
    with Cache(tmp_path / "b", redis_url=redis_server.url, redis_prefix=prefix) as cb:
        make_ask(cb, calls)("x")
        make_ask(cb, calls)("y")
    client = redis.Redis.from_url(redis_server.url)
    pipe = client.pipeline(transaction=False)
    for i in range(10_001):  # another machine invalidating 10,001 times: the stream keeps 10,000
        pipe.xadd(f"{prefix}:events", {b"op": b"tag", b"arg": f"other{i}".encode(), b"origin": b"elsewhere"},
                  maxlen=10_000, approximate=False)
    pipe.execute()
    client.close()
    with Cache(tmp_path / "b", redis_url=redis_server.url, redis_prefix=prefix) as cb:
        assert [t.name for t in cb.tiers] == ["memory", "disk", "redis"]
        assert cb.tiers[1].get(make_ask(cb, calls).cache_key("x")) is None  # it could not tell: it forgot all
        make_ask(cb, calls)("y")  # served by Redis, which kept it
    assert calls == ["x", "y"]


def test_every_invalidation_reaches_the_other_machine(redis_server: Server, tmp_path: Path) -> None:
    calls: list[str] = []
    with two_machines(redis_server.url, tmp_path, calls) as (_, cb, a, b):
        a.invalidate("x")
        assert forgotten(cb, b.cache_key("x"))
        a("x")
        b("x")  # a fresh copy again, after the event was applied
        a.invalidate("x")
        assert forgotten(cb, b.cache_key("x"))
        assert calls == []


def test_three_tiers_read_in_order_and_promotion_keeps_the_remaining_lifetime(
        redis_server: Server, tmp_path: Path, clock: FakeClock) -> None:
    prefix = fresh_prefix()
    key = k("three tiers")
    with Cache(tmp_path / "writer", redis_url=redis_server.url, redis_prefix=prefix, clock=clock) as writer:
        writer.set(key, {"answer": 42}, lifetime=100)
    with Cache(tmp_path / "reader", redis_url=redis_server.url, redis_prefix=prefix, clock=clock) as reader:
        memory, disk, shared = reader.tiers
        assert [t.name for t in reader.tiers] == ["memory", "disk", "redis"]
        clock.advance(40)
        hit = reader.get(key)
        assert hit is not None and hit.tier == "redis" and hit.value == {"answer": 42}
        assert reader.get(key).tier == "memory"
        memory.delete(key)
        assert reader.get(key).tier == "disk"
        memory.delete(key)
        disk.delete(key)
        assert reader.get(key).tier == "redis"
        clock.advance(59.9)  # 99.9 s after the write: every copy still live
        assert reader.get(key).tier == "memory"
        assert disk.get(key) is not None and shared.get(key) is not None
        clock.advance(0.1)  # 100 s: no tier serves it, whoever promoted it when
        assert reader.get(key) is None
        assert [t.get(key) for t in reader.tiers] == [None, None, None]


# -- faults -----------------------------------------------------------------------------------


def redis_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno >= logging.WARNING and "redis" in r.getMessage()]


def machine(directory: Path, tier: RedisTier) -> Cache:
    """A Cache over memory, disk and ``tier`` (built by the test, to drive its breaker's timer)."""
    cache = Cache(directory)
    cache.tiers.append(tier)
    return cache


def test_an_unreachable_server_fails_fast_behind_the_breaker() -> None:
    timer = FakeClock(0.0)
    tier = RedisTier(f"redis://:hunter2@127.0.0.1:{free_port()}/0", timer=timer, breaker_cooldown=5)
    for _ in range(100):
        with pytest.raises(RedisUnavailable) as caught:
            tier.get(k(1))
        assert "hunter2" not in str(caught.value)
    assert (tier.attempts, tier.refused) == (1, 99)  # one connection attempt, 99 without one
    timer.advance(4.9)
    with pytest.raises(RedisUnavailable):
        tier.set(k(1), b"v", None)
    assert tier.attempts == 1
    timer.advance(0.1)  # half-open: one probe, which fails and re-opens the breaker
    with pytest.raises(RedisUnavailable):
        tier.get(k(1))
    with pytest.raises(RedisUnavailable):
        tier.get(k(1))
    assert (tier.attempts, tier.refused) == (2, 101)
    tier.close()


def test_redis_killed_mid_run_then_restarted(private_server: Callable[..., Server], tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    server = private_server("--appendonly", "yes", "--appendfsync", "always")
    timer = FakeClock(0.0)
    prefix = fresh_prefix()
    tier = RedisTier(server.url, prefix=prefix, timer=timer, breaker_cooldown=5)
    calls: list[str] = []
    with machine(tmp_path / "a", tier) as cache:
        ask = make_ask(cache, calls)
        for i in range(20):
            assert ask(f"q{i}") == f"answer to q{i}"
        server.kill()
        before = (tier.attempts, cache.counters.snapshot().errors)
        with caplog.at_level(logging.DEBUG, logger=LOGGER):
            for i in range(200):  # 20 memory hits and 180 misses that compute
                question = f"q{i % 20}" if i < 20 else f"new{i}"
                assert ask(question) == f"answer to {question}"
        assert len(calls) == 200
        assert tier.attempts - before[0] == 1  # one read paid a connection attempt; the rest failed fast
        ops = 4  # each miss reads once, takes a lease, writes, releases (read again only after another holder)
        assert tier.refused == 180 * ops - 1
        assert cache.counters.snapshot().errors - before[1] == 180 * ops
        warned = redis_warnings(caplog)
        assert len(warned) == 1, warned  # one outage, one warning: not one per call or per operation
        assert all("RedisUnavailable" in line for line in warned)

        server.start(port=server.port)  # the append-only file brings the entries back
        assert ask("during cooldown") == "answer to during cooldown"
        assert tier.attempts - before[0] == 1  # still failing fast until the cooldown is over
        timer.advance(5)
        assert ask("after restart") == "answer to after restart"
        assert tier.attempts - before[0] == 1 + ops  # the probe read, lease, write, release: Redis is back
        with contextlib.closing(server.client()) as raw:
            assert raw.exists(f"{prefix}:v:{ask.cache_key('after restart')}")

    reader_calls: list[str] = []
    reader_tier = RedisTier(server.url, prefix=prefix)
    with machine(tmp_path / "b", reader_tier) as other:
        again = make_ask(other, reader_calls)
        assert again("q3") == "answer to q3"  # written before the kill, served after the restart
        assert other.get(again.cache_key("q3")).tier == "memory"  # (it was promoted from redis)
        assert reader_calls == []


def test_redis_restarted_without_persistence_means_misses_only(private_server: Callable[..., Server],
                                                               tmp_path: Path) -> None:
    server = private_server()
    timer = FakeClock(0.0)
    tier = RedisTier(server.url, prefix=fresh_prefix(), timer=timer)
    tier.set(k(1), b"v", None)
    server.kill()
    server.start(port=server.port)
    assert tier.get(k(1)) is None  # a stale pooled socket is retried once, not a breaker trip
    assert tier.refused == 0
    tier.set(k(1), b"w", None)
    with contextlib.closing(server.client()) as raw:
        raw.flushall()
    assert tier.get(k(1)) is None
    tier.close()


def test_a_frozen_server_times_out_and_never_hangs(private_server: Callable[..., Server]) -> None:
    server = private_server()
    timer = FakeClock(0.0)
    tier = RedisTier(server.url, prefix=fresh_prefix(), timer=timer, socket_timeout=0.2,
                     connect_timeout=0.2)
    tier.set(k(1), b"v", None)
    outcomes: list[BaseException | bytes | None] = []

    def calls() -> None:
        for _ in range(50):
            try:
                outcomes.append(tier.get(k(1)))
            except Exception as exc:
                outcomes.append(exc)

    server.signal(signal.SIGSTOP)
    try:
        worker = threading.Thread(target=calls)
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive(), "a call hung on a frozen Redis"
    finally:
        server.signal(signal.SIGCONT)
    assert len(outcomes) == 50
    assert all(isinstance(o, RedisUnavailable) for o in outcomes)
    assert "Timeout" in str(outcomes[0])
    assert tier.attempts == 2  # the set before, then the one get that timed out
    timer.advance(5)
    assert tier.get(k(1)) == b"v"
    tier.close()


@pytest.mark.parametrize("fault", ["oom", "readonly"])
def test_writes_refused_by_redis_fail_alone_and_reads_still_work(
        fault: str, private_server: Callable[..., Server], tmp_path: Path) -> None:
    server = private_server()
    prefix = fresh_prefix()
    with machine(tmp_path / "a", RedisTier(server.url, prefix=prefix)) as first:
        ask = make_ask(first, [])
        for i in range(10):
            ask(f"q{i}")
    with contextlib.closing(server.client()) as raw:
        if fault == "oom":
            raw.config_set("maxmemory-policy", "noeviction")
            raw.config_set("maxmemory", "1mb")  # an empty server uses about 1 MB already
            with pytest.raises(redis.exceptions.OutOfMemoryError):
                for i in range(100):
                    raw.set(f"filler{i}", b"x" * 100_000)
        else:
            raw.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))  # a master that never answers
            with pytest.raises(redis.exceptions.ReadOnlyError):
                raw.set("probe", b"x")
    calls: list[str] = []
    tier = RedisTier(server.url, prefix=prefix)
    with machine(tmp_path / "b", tier) as second:
        ask = make_ask(second, calls)
        for i in range(20):
            assert ask(f"q{i}") == f"answer to q{i}"
        assert calls == [f"q{i}" for i in range(10, 20)]  # q0-q9 were read from Redis
        assert second.counters.snapshot().errors == 20  # ten refused leases (SET NX), ten refused writes
        assert tier.refused == 0  # Redis answered: the breaker stays closed
        assert ask("q15") == "answer to q15" and len(calls) == 10  # stored in the local tiers


class _Plant:
    """Unpickling it runs os.mkdir(path): proof that something unpickled cache contents."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.path),))


def pickle_envelope(sentinel: Path, key: str) -> bytes:
    payload = base64.b64encode(pickle.dumps(_Plant(sentinel))).decode("ascii")
    value_json = orjson.dumps({TAG: "pickle", "v": payload})
    return pack(key, value_json, {"tags": []}, Header(None, time.time(), 0.0, 0, 0.0, FLAG_PICKLE))


def newer_envelope(key: str) -> bytes:
    envelope = pack(key, orjson.dumps("from the future"), {"tags": []}, Header(None, time.time(), 0.0, 0, 0.0, 2))
    return envelope[:2] + bytes([FORMAT + 1]) + envelope[3:]


@pytest.mark.parametrize("plant", ["garbage", "raw pickle", "pickle behind our header",
                                   "pickle envelope", "newer format", "not a string"])
def test_foreign_values_under_our_prefix_are_misses(plant: str, redis_server: Server, tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    prefix = fresh_prefix()
    tier = RedisTier(redis_server.url, prefix=prefix)
    calls: list[str] = []
    with machine(tmp_path / "cache", tier) as cache, contextlib.closing(redis_server.client()) as raw:
        ask = make_ask(cache, calls)
        key = ask.cache_key("q")
        vkey = f"{prefix}:v:{key}"
        if plant == "garbage":
            raw.set(vkey, os.urandom(300))
        elif plant == "raw pickle":
            raw.set(vkey, pickle.dumps(_Plant(sentinel)))
        elif plant == "pickle behind our header":
            tier.set(key, pickle.dumps(_Plant(sentinel)), None)
        elif plant == "pickle envelope":
            tier.set(key, pickle_envelope(sentinel, key), None)
        elif plant == "newer format":
            tier.set(key, newer_envelope(key), None)
        else:
            raw.zadd(vkey, {b"member": 1})
        assert ask("q") == "answer to q"
        assert calls == ["q"]
        assert ask.cache_info().misses == 1
        assert not sentinel.exists()
        with machine(tmp_path / "other", RedisTier(redis_server.url, prefix=prefix)) as other:
            hit = other.get(key)  # the miss was stored over the plant
            assert hit is not None and hit.tier == "redis" and hit.value == "answer to q"


def test_a_pickle_planted_in_redis_is_never_run_even_with_allow_pickle(redis_server: Server,
                                                                       tmp_path: Path) -> None:
    # allow_pickle=True lets this machine's own memory and disk hold pickles; a shared server
    # never receives them, so a pickle found there was planted and must not be loaded.
    sentinel = tmp_path / "pwned"
    prefix = fresh_prefix()
    with Cache(tmp_path / "cache", redis_url=redis_server.url, redis_prefix=prefix,
               allow_pickle=True) as cache:
        key = k("planted")
        cache.tiers[-1].set(key, pickle_envelope(sentinel, key), None)
        cache.get(key)
        assert not sentinel.exists()


def test_no_secret_reaches_redis_or_the_logs(redis_server: Server, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    prefix = fresh_prefix()
    with Cache(tmp_path, redis_url=redis_server.url, redis_prefix=prefix) as cache:

        @llm_cache(cache=cache, ttl=600)
        def ask(prompt: str, api_key: str, headers: dict[str, str]) -> str:
            return f"answer to {prompt}"

        with caplog.at_level(logging.DEBUG):
            assert ask("hello", api_key="sk-secret-xyz",
                       headers={"Authorization": "Bearer tok-secret-abc"}) == "answer to hello"
            cache.tiers[0].clear()
            cache.tiers[1].clear()
            assert ask("hello", api_key="sk-secret-xyz",
                       headers={"Authorization": "Bearer tok-secret-abc"}) == "answer to hello"
    assert ask.cache_info().hits == 1  # the second call read the entry back from Redis
    stored = []
    with contextlib.closing(redis_server.client()) as raw:
        for name in raw.scan_iter(match=f"{prefix}:*"):
            stored.append(name)
            kind = raw.type(name)
            if kind == b"string":
                stored.append(raw.get(name))
            elif kind == b"zset":
                stored.extend(raw.zrange(name, 0, -1))
    assert len(stored) >= 4  # the value and its index sets
    for secret in (b"sk-secret-xyz", b"tok-secret-abc"):
        assert not any(secret in blob for blob in stored)
        assert secret.decode() not in caplog.text


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_uses_its_own_connections(redis_server: Server) -> None:
    tier = RedisTier(redis_server.url, prefix=fresh_prefix())
    tier.set(k("parent"), b"p", None)
    pid = os.fork()
    if pid == 0:  # the child: redis-py sees the new pid and opens its own connection
        code = 1
        try:
            if tier.get(k("parent")) == b"p":
                tier.set(k("child"), b"c", None)
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert tier.get(k("child")) == b"c"  # the parent's socket survived the child
    assert tier.get(k("parent")) == b"p"
    assert tier.attempts == 3  # the parent's own: the child's count stayed in the child
    tier.close()


def test_threads_never_read_another_keys_value(redis_server: Server) -> None:
    tier = RedisTier(redis_server.url, prefix=fresh_prefix())
    keys = [k(i) for i in range(20)]
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(300):
                key = rng.choice(keys)
                op = rng.random()
                if op < 0.45:
                    tier.set(key, key.encode() * rng.randint(1, 50), None, tags=[key[:1]])
                elif op < 0.9:
                    got = tier.get(key)
                    assert got is None or (got and got == key.encode() * (len(got) // 64))
                elif op < 0.97:
                    tier.delete(key)
                else:
                    tier.invalidate(key[:1])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    tier.clear()
    tier.close()


def test_leases_across_machines_are_renewed_and_a_dead_holder_is_replaced(redis_server: Server,
                                                                           tmp_path: Path) -> None:
    prefix, key = fresh_prefix(), "k" * 64
    with Cache(tmp_path / "a", redis_url=redis_server.url, redis_prefix=prefix) as a, \
            Cache(tmp_path / "b", redis_url=redis_server.url, redis_prefix=prefix) as b:
        token = a.lease(key, 0.6)
        assert token is not None
        time.sleep(1.5)  # past two lease lengths: machine a's heartbeat renewed it in Redis
        assert b.lease(key, 0.6) is None
        a.release(key, token)
        assert b.lease(key, 0.6) is not None
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_here = f"{socket.gethostname()}|{int(gone.stdout)}||0a0b"  # a process of this host that has exited
    elsewhere = "another-machine|1||0a0b"
    with contextlib.closing(redis_server.client()) as raw, \
            Cache(tmp_path / "c", redis_url=redis_server.url, redis_prefix=prefix) as c:
        raw.set(f"{prefix}:l:{key}", dead_here, px=60_000)
        assert c.lease(key, 5) is not None  # seen dead at once, not after 60 s
        raw.set(f"{prefix}:l:{key}", elsewhere, px=600)
        assert c.lease(key, 5) is None  # another machine's holder cannot be probed: its lease must lapse
        time.sleep(0.7)
        assert c.lease(key, 5) is not None
