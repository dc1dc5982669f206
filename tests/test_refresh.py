"""Early refresh (XFetch): a hot entry is recomputed once, shortly before it expires, while every
other caller keeps being served the stored answer."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock

from llm_memo import Cache, llm_cache

TTL = 3600.0
BETA = 1000.0  # with a 50 ms call: certain 1 ms before expiry, never an hour before


def counted(cache: Cache, calls: list[str], *, beta: float = BETA, sleep: float = 0.05, **options: Any) -> Any:
    @llm_cache(cache=cache, ttl=TTL, early_refresh=beta, **options)
    def ask(question: str) -> str:
        calls.append(question)
        time.sleep(sleep)  # the stored latency is what early refresh weighs
        return f"answer {len(calls)}"

    return ask


def test_a_hit_long_before_expiry_is_served(cache: Cache, clock: FakeClock) -> None:
    calls: list[str] = []
    ask = counted(cache, calls)
    assert ask("q") == "answer 1"
    clock.advance(TTL / 2)
    assert [ask("q") for _ in range(20)] == ["answer 1"] * 20
    assert calls == ["q"]


def test_a_hit_just_before_expiry_recomputes_and_renews_the_entry(cache: Cache, clock: FakeClock) -> None:
    calls: list[str] = []
    ask = counted(cache, calls)
    ask("q")
    clock.advance(TTL - 0.001)
    assert ask("q") == "answer 2"  # the caller chosen to refresh gets the fresh answer
    entry = cache.get_entry(ask.cache_key("q"))
    assert entry is not None and entry.expires_at == pytest.approx(clock() + TTL)
    assert ask("q") == "answer 2" and calls == ["q", "q"]
    assert ask.cache_info().misses == 2  # the refresh ran the function: counted as the miss it is


def test_off_by_default(cache: Cache, clock: FakeClock) -> None:
    calls: list[str] = []
    ask = counted(cache, calls, beta=0)
    ask("q")
    clock.advance(TTL - 0.001)
    assert ask("q") == "answer 1" and calls == ["q"]


def test_one_thread_refreshes_while_the_others_are_served_at_once(cache: Cache, clock: FakeClock) -> None:
    calls: list[str] = []
    release = threading.Event()

    @llm_cache(cache=cache, ttl=TTL, early_refresh=BETA)
    def ask(question: str) -> str:
        calls.append(question)
        if len(calls) > 1:
            release.wait(30)  # the refresh hangs until every other caller was served
        else:
            time.sleep(0.05)
        return f"answer {len(calls)}"

    ask("q")
    clock.advance(TTL - 0.001)
    refresher = threading.Thread(target=ask, args=("q",))
    refresher.start()
    deadline = time.monotonic() + 30
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    others = [ask("q") for _ in range(10)]  # served without waiting: the refresh is still hanging
    release.set()
    refresher.join(30)
    assert others == ["answer 1"] * 10
    assert calls == ["q", "q"]
    assert ask("q") == "answer 2"


def test_a_failing_refresh_serves_the_stored_answer(cache: Cache, clock: FakeClock,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    @llm_cache(cache=cache, ttl=TTL, early_refresh=BETA)
    def ask(question: str) -> str:
        calls.append(question)
        if len(calls) > 1:
            raise ConnectionError("rate limited")
        time.sleep(0.05)
        return "stored"

    ask("q")
    clock.advance(TTL - 0.001)
    with caplog.at_level(logging.WARNING, logger="llm_memo"):
        assert ask("q") == "stored"  # still live, so a failed refresh costs the caller nothing
    assert any("early refresh" in r.getMessage() and "rate limited" in r.getMessage() for r in caplog.records)
    clock.advance(0.002)  # expired now: a plain miss, and its error is the caller's
    with pytest.raises(ConnectionError):
        ask("q")


def test_async_functions_refresh_too(cache: Cache, clock: FakeClock) -> None:
    calls: list[str] = []

    @llm_cache(cache=cache, ttl=TTL, early_refresh=BETA)
    async def ask(question: str) -> str:
        calls.append(question)
        await asyncio.sleep(0.05)
        return f"answer {len(calls)}"

    async def main() -> list[str]:
        first = await ask("q")
        clock.advance(TTL - 0.001)
        return [first, await ask("q"), await ask("q")]

    assert asyncio.run(main()) == ["answer 1", "answer 2", "answer 2"]


@pytest.mark.parametrize("beta", [-1, float("nan"), float("inf"), "1", True])
def test_early_refresh_must_be_a_number_at_least_zero(beta: Any) -> None:
    with pytest.raises(ValueError, match="early_refresh"):

        @llm_cache(early_refresh=beta)
        def ask(question: str) -> str:
            return question


def test_a_second_process_finds_the_entry_refreshed_and_serves_it(tmp_path: Path, clock: FakeClock) -> None:
    calls: list[str] = []
    with Cache(tmp_path / "c", clock=clock) as first, Cache(tmp_path / "c", clock=clock) as second:
        a, b = counted(first, calls), counted(second, calls)
        a("q")
        b("q")  # both processes now hold the entry in memory
        clock.advance(TTL - 0.001)
        assert a("q") == "answer 2"  # the first refreshes it
        assert b("q") == "answer 2"  # the second, due too, takes the lease and finds it renewed on disk
        assert calls == ["q", "q"]
