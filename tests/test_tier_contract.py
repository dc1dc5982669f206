"""The tier contract (llm_memo._storage.tier.Tier), run against every tier: memory, disk, Redis
(standalone and Cluster, on real servers) and a user's own dict-backed tier; then a Cache made of
the tiers it is given (``Cache(tiers=[...])``), end to end through ``@llm_cache``."""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock, Server, fresh_prefix
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_memo import Cache, llm_cache
from llm_memo._storage.disk import DiskTier
from llm_memo._storage.memory import MemoryTier
from llm_memo._storage.redis import RedisTier
from llm_memo._storage.tier import (
    EventStream,
    Expiring,
    Leases,
    Persistent,
    Shared,
    Sized,
    Tier,
    is_shared,
)

ROOT = Path(__file__).resolve().parents[1]


class DictTier:
    """A user's own tier, written against the Tier protocol alone: entries in a dict."""

    name = "dict"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.entries: dict[str, tuple[bytes, float, frozenset[str]]] = {}
        self.closed = False

    def _open(self) -> dict[str, tuple[bytes, float, frozenset[str]]]:
        if self.closed:
            raise RuntimeError("the dict tier is closed")
        return self.entries

    def _live(self, key: str) -> bool:
        entry = self._open().get(key)
        return entry is not None and self.clock() < entry[1]

    def get(self, key: str) -> bytes | None:
        return self.entries[key][0] if self._live(key) else None

    def set(self, key: str, data: bytes, expires_at: float | None, tags: Sequence[str] = ()) -> None:
        if type(data) is not bytes:
            raise TypeError(f"a tier stores bytes, got {type(data).__name__}")
        if isinstance(tags, str):
            raise TypeError("tags must be a sequence of str, got a bare str")
        if not all(isinstance(tag, str) for tag in tags):
            raise TypeError(f"each tag must be a str, got {tags!r}")
        deadline = math.inf if expires_at is None else expires_at
        if self.clock() < deadline:  # NaN compares False: stored nowhere, as a past expiry
            self._open()[key] = (data, deadline, frozenset(tags))
        else:
            self._open().pop(key, None)

    def delete(self, key: str) -> bool:
        live = self._live(key)
        self.entries.pop(key, None)
        return live

    def invalidate(self, tag: str) -> int:
        return sum(self.delete(key) for key, (_, _, tags) in list(self._open().items()) if tag in tags)

    def clear(self) -> int:
        live = sum(self._live(key) for key in list(self._open()))
        self.entries.clear()
        return live

    def close(self) -> None:
        self.closed = True

    def keys(self) -> Iterator[str]:
        return iter([key for key in list(self._open()) if self._live(key)])


def k(label: object) -> str:
    return hashlib.sha256(repr(label).encode()).hexdigest()


def make(kind: str, request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Any:
    if kind == "memory":
        return MemoryTier(clock=clock, timer=clock)
    if kind == "disk":
        return DiskTier(tmp_path / "cache", clock=clock)
    if kind == "dict":
        return DictTier(clock)
    server = request.getfixturevalue("redis_cluster" if kind == "redis-cluster" else "redis_server")
    return RedisTier(server.url, prefix=fresh_prefix(), clock=clock, cluster=kind == "redis-cluster")


@pytest.fixture(params=["memory", "disk", "redis", "redis-cluster", "dict"])
def tier(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[Any]:
    made = make(request.param, request, tmp_path, clock)
    yield made
    made.close()


@pytest.fixture(params=["disk", "redis", "redis-cluster"])
def leasing(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[Any]:
    made = make(request.param, request, tmp_path, clock)
    yield made
    made.close()


# -- the contract ---------------------------------------------------------------------------

CAPABILITIES = {
    "memory": {Sized},
    "disk": {Leases, Expiring, Sized, Persistent},
    "redis": {Leases, Shared, EventStream},
    "dict": set(),
}


def test_is_a_tier_with_its_capabilities(tier: Any) -> None:
    assert isinstance(tier, Tier)
    kind = "redis" if tier.name == "redis" else tier.name
    found = {p for p in (Leases, Expiring, Sized, Shared, Persistent, EventStream) if isinstance(tier, p)}
    assert found == CAPABILITIES[kind]
    assert is_shared(tier) is (kind == "redis")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096))
def test_round_trip_of_arbitrary_bytes(tier: Any, data: bytes) -> None:
    tier.set(k(data), data, None)
    got = tier.get(k(data))
    assert type(got) is bytes
    assert got == data


def test_missing_key_is_none(tier: Any) -> None:
    assert tier.get(k("absent")) is None


def test_overwrite_replaces_value_and_tags(tier: Any) -> None:
    tier.set(k(1), b"old", None, tags=["t:old"])
    tier.set(k(1), b"new", None, tags=["t:new"])
    assert tier.get(k(1)) == b"new"
    assert tier.invalidate("t:old") == 0
    assert tier.get(k(1)) == b"new"
    assert tier.invalidate("t:new") == 1
    assert tier.get(k(1)) is None


def test_delete(tier: Any) -> None:
    tier.set(k(1), b"v", None)
    assert tier.delete(k(1)) is True
    assert tier.get(k(1)) is None
    assert tier.delete(k(1)) is False


def test_expiry_boundary(tier: Any, clock: FakeClock) -> None:
    tier.set(k(1), b"v", clock.now + 10)
    clock.advance(9.5)
    assert tier.get(k(1)) == b"v"
    clock.advance(0.5)  # exactly at expires_at: gone
    assert tier.get(k(1)) is None
    clock.advance(100)
    assert tier.get(k(1)) is None
    assert list(tier.keys()) == []


@pytest.mark.parametrize("offset", [0, -1, -1e9, float("-inf"), float("nan")])
def test_expiry_not_in_the_future_stores_nothing(tier: Any, clock: FakeClock, offset: float) -> None:
    tier.set(k(1), b"old", None)
    tier.set(k(1), b"new", clock.now + offset)
    assert tier.get(k(1)) is None  # and the older value did not survive
    assert list(tier.keys()) == []


@pytest.mark.parametrize("expires_at", [None, float("inf")])
def test_no_expiry_never_expires(tier: Any, clock: FakeClock, expires_at: float | None) -> None:
    tier.set(k(1), b"v", expires_at)
    clock.advance(1e9)
    assert tier.get(k(1)) == b"v"


def test_several_tags_invalidate_by_each(tier: Any) -> None:
    tier.set(k("a"), b"a", None, tags=["fn:app.ask", "model:gpt-4o"])
    tier.set(k("b"), b"b", None, tags=("model:gpt-4o", "model:gpt-4o"))
    tier.set(k("c"), b"c", None)
    assert tier.invalidate("fn:app.ask") == 1
    assert tier.get(k("a")) is None
    assert tier.get(k("b")) == b"b"
    assert tier.invalidate("model:gpt-4o") == 1  # a is already gone
    assert tier.invalidate("model:gpt-4o") == 0
    assert tier.invalidate("unknown") == 0
    assert list(tier.keys()) == [k("c")]


def test_counts_are_of_live_entries(tier: Any, clock: FakeClock) -> None:
    tier.set(k(1), b"1", clock.now + 5, tags=["t"])
    tier.set(k(2), b"2", None, tags=["t"])
    tier.set(k(3), b"3", None)
    clock.advance(5)
    assert tier.delete(k(1)) is False  # expired
    assert tier.invalidate("t") == 1
    tier.set(k(4), b"4", clock.now + 5)
    tier.set(k(5), b"5", clock.now + 50)
    clock.advance(10)
    assert tier.clear() == 2  # k(3) and k(5)
    assert tier.clear() == 0
    assert list(tier.keys()) == []


def test_keys_lists_live_keys_only(tier: Any, clock: FakeClock) -> None:
    tier.set(k(1), b"1", None)
    tier.set(k(2), b"2", clock.now + 1)
    tier.set(k(3), b"3", None)
    tier.delete(k(3))
    clock.advance(1)
    assert sorted(tier.keys()) == [k(1)]


def test_caller_mistakes_raise_type_error(tier: Any) -> None:
    with pytest.raises(TypeError, match="bytes"):
        tier.set(k(1), "text", None)
    with pytest.raises(TypeError, match="bare str"):
        tier.set(k(1), b"v", None, tags="fn:app.ask")
    with pytest.raises(TypeError, match="each tag"):
        tier.set(k(1), b"v", None, tags=[1])


def test_close_is_idempotent_and_final(tier: Any) -> None:
    tier.set(k(1), b"v", None)
    tier.close()
    tier.close()
    for call in (lambda: tier.get(k(1)), lambda: tier.set(k(1), b"v", None), tier.clear):
        with pytest.raises(RuntimeError, match="closed"):
            call()


def test_a_lease_is_held_until_it_lapses_and_swapped_only_by_its_holder(leasing: Any, clock: FakeClock) -> None:
    assert leasing.holder(k(1)) is None
    assert leasing.lease(k(1), "a", 10) is True
    assert leasing.lease(k(1), "b", 10) is False
    assert leasing.holder(k(1)) == "a"
    assert leasing.swap(k(1), "b", "c", 10) is False  # b does not hold it
    assert leasing.swap(k(1), "a", "c", 10) is True
    assert leasing.swap(k(1), "a", "d", 10) is False  # no longer a's to hand on
    assert leasing.holder(k(1)) == "c"
    assert leasing.swap(k(1), "c", "released", 0.2) is True  # how a holder gives it back: a short marker
    time.sleep(0.3)  # Redis keeps time itself
    clock.advance(0.3)  # the disk tier, on the cache's clock
    assert leasing.holder(k(1)) is None
    assert leasing.lease(k(1), "b", 10) is True


# -- Cache(tiers=...) -------------------------------------------------------------------------


def test_a_users_tier_alone_serves_a_cached_function(tmp_path: Path) -> None:
    own = DictTier()
    calls: list[str] = []
    with Cache(tiers=[own]) as cache:
        assert cache.tiers == [own] and cache.memory is None and cache.ledger is None

        @llm_cache(cache=cache, tags=["team:search"])
        def ask(question: str) -> str:
            calls.append(question)
            return f"answer to {question}"

        assert ask("q") == ask("q") == "answer to q"
        assert calls == ["q"]
        assert len(own.entries) == 1  # the envelope went to the user's tier
        info = ask.cache_info()
        assert (info.hits, info.misses, dict(info.hits_by_tier)) == (1, 1, {"dict": 1})
        stats = cache.stats()
        assert (stats.hits, stats.misses, dict(stats.hits_by_tier)) == (1, 1, {"dict": 1})
        assert cache.get_entry(ask.cache_key("q")).tier == "dict"  # type: ignore[union-attr]
        assert cache.invalidate(tag="team:search") == 1
        assert own.entries == {}
        assert ask("q") == "answer to q"
        assert calls == ["q", "q"]
        assert cache.usage() == {"dict": (-1, -1)}  # not Sized: cannot tell
    assert own.closed


def test_a_memory_tier_above_a_users_tier_is_filled_from_it(clock: FakeClock) -> None:
    own, memory = DictTier(clock), MemoryTier(clock=clock, timer=clock)
    calls: list[str] = []
    with Cache(tiers=[memory, own], clock=clock) as cache:
        assert cache.memory is memory

        @llm_cache(cache=cache, ttl=100)
        def ask(question: str) -> str:
            calls.append(question)
            return f"answer to {question}"

        key = ask.cache_key("q")
        assert ask("q") == "answer to q"
        assert memory.get(key) is not None and own.get(key) is not None  # written through
        memory.clear()
        assert ask("q") == "answer to q"  # from the user's tier, copied up
        assert ask("q") == "answer to q"  # from memory
        assert calls == ["q"]
        assert dict(ask.cache_info().hits_by_tier) == {"dict": 1, "memory": 1}
        clock.advance(60)
        memory.clear()
        assert ask("q") == "answer to q"  # promoted with its remaining 40 s, not a fresh lifetime
        clock.advance(40)
        assert memory.get(key) is None and own.get(key) is None
        ask("q")
        memory.clear()
        ask("q")  # promoted into a memory tier the cache did not make: with its tags
        assert memory.get(key) is not None
        assert cache.invalidate(function=ask) == 1
        assert memory.get(key) is None and own.get(key) is None


def test_user_tiers_with_disk_and_redis_behave_as_the_default_chain(redis_server: Server, tmp_path: Path) -> None:
    prefix = fresh_prefix()

    def chain(name: str) -> Cache:
        return Cache(tiers=[MemoryTier(), DiskTier(tmp_path / name), RedisTier(redis_server.url, prefix=prefix)])

    with chain("a") as a, chain("b") as b:
        assert a.directory == tmp_path / "a" and a.ledger is not None and a.invalidations is not None

        @llm_cache(cache=a)
        def ask(question: str) -> str:
            return f"answer to {question}"

        assert ask("q") == "answer to q"
        key = ask.cache_key("q")
        assert b.get(key).tier == "redis"  # type: ignore[union-attr]
        assert b.get(key).tier == "memory"  # type: ignore[union-attr]  # promoted
        assert a.delete(key) is True
        b.invalidations.catch_up()  # type: ignore[union-attr]
        assert b.get(key) is None  # the event reached b's memory and disk
        token = a.lease(key, 10)
        assert token is not None and b.lease(key, 10) is None  # Redis arbitrates
        a.release(key, token)
    with Cache(tmp_path / "a") as reopened:
        assert reopened.stats().misses == 1  # a's ledger is kept in its disk tier's directory


@pytest.mark.parametrize(("tiers", "error", "message"), [
    ([], ValueError, "at least one tier"),
    ("memory", TypeError, "a list of tier objects"),
    ([object()], TypeError, r"tiers\[0\] is not a tier: object lacks get, set"),
    ([{"name": "x"}], TypeError, r"dict lacks set, delete, invalidate, close, name \(a non-empty str\)"),
    ([MemoryTier], TypeError, r"tiers\[0\] is the class MemoryTier; pass a tier object: MemoryTier\(...\)"),
    ([DictTier(), DictTier()], ValueError, r"tiers\[1\] is named 'dict' like an earlier tier"),
])
def test_tiers_that_are_not_a_chain_are_refused(tiers: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        Cache(tiers=tiers)


def test_options_of_the_default_tiers_are_refused_with_tiers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="redis_url, disk configure the default tiers"):
        Cache(tiers=[DictTier()], redis_url="redis://localhost", disk=False)
    with pytest.raises(ValueError, match="is not the directory of the 'disk' tier"):
        Cache(tmp_path / "elsewhere", tiers=[DiskTier(tmp_path / "disk")])


def test_a_cache_of_picklable_tiers_pickles_and_one_of_other_tiers_says_why(tmp_path: Path) -> None:
    with Cache(tiers=[MemoryTier(), DiskTier(tmp_path), DictTier()]) as cache:
        cache.set(k(1), "stored", lifetime=None)
        with pickle.loads(pickle.dumps(cache)) as copy:
            assert [tier.name for tier in copy.tiers] == ["memory", "disk", "dict"]
            assert copy.get(k(1)).tier == "disk"  # type: ignore[union-attr]  # memory stayed behind

    class Unpicklable(DictTier):
        def __reduce__(self) -> Any:
            raise TypeError("cannot pickle a socket")

    with Cache(tiers=[Unpicklable()]) as cache, \
            pytest.raises(TypeError, match=r"tiers\[0\] \(Unpicklable, named 'dict'\) cannot be pickled"):
        pickle.dumps(cache)


def test_the_default_chain_still_pickles_as_its_configuration(tmp_path: Path) -> None:
    with Cache(tmp_path, memory_maxsize=1000) as cache:
        cache.set(k(1), "stored", lifetime=None)
        with pickle.loads(pickle.dumps(cache)) as copy:
            assert copy.memory is not None and copy.memory.maxsize == 1000
            assert copy.get(k(1)).tier == "disk"  # type: ignore[union-attr]


def test_the_readme_tier_runs() -> None:
    readme = (ROOT / "README.rst").read_text(encoding="utf-8")
    section = readme[readme.index("\nAdding a tier\n"):]
    block = re.search(r"\.\. code-block:: python\n\n((?:    .*\n|\n)+)", section)
    assert block is not None
    code = re.sub(r"^    ", "", block.group(1), flags=re.M)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["answer", "answer", "1", "1"]
