"""fn.warm / fn.awarm: skip what is stored, run the rest concurrently, report, survive interrupts."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import llm_memo
from llm_memo import Cache, WarmReport, llm_cache
from llm_memo._engine.warm import Call


@pytest.fixture
def disk_cache(tmp_path: Path) -> Iterator[Cache]:
    with Cache(tmp_path / "warm") as cache:
        yield cache


def test_report_counts_warmed_cached_and_failed_in_call_order(disk_cache: Cache) -> None:
    ran: list[tuple[str, int]] = []

    @llm_cache(cache=disk_cache, ttl=3600)
    def ask(prompt: str, n: int = 1) -> str:
        ran.append((prompt, n))
        if prompt == "boom":
            raise ValueError("the provider said no")
        return prompt * n

    ask("a")
    ran.clear()
    report = ask.warm(["a", "b", ("c", 2), {"prompt": "d", "n": 3}, Call(("e",), {"n": 2}), "boom",
                       ("x", 1, 2), "b"], progress=False)
    assert isinstance(report, WarmReport)
    assert (report.warmed, report.already_cached) == (4, 2)  # "a" was stored, the second "b" is a duplicate
    assert report.failed == [("boom", "ValueError: the provider said no"),
                             (("x", 1, 2), "TypeError: too many positional arguments")]
    assert sorted(ran) == [("b", 1), ("boom", 1), ("c", 2), ("d", 3), ("e", 2)]
    ran.clear()
    assert [ask("b"), ask("c", 2), ask("d", n=3), ask("e", n=2)] == ["b", "cc", "ddd", "ee"]
    assert ran == []  # every warmed call is now a hit
    assert str(report).startswith("warmed 4, already cached 2, failed 2\n  'boom': ValueError")


def test_already_cached_calls_are_not_run_again(disk_cache: Cache) -> None:
    ran: list[str] = []

    @llm_cache(cache=disk_cache, ttl=3600)
    def ask(prompt: str) -> str:
        ran.append(prompt)
        return prompt.upper()

    first = ask.warm([f"q{i}" for i in range(10)], progress=False)
    second = ask.warm([f"q{i}" for i in range(12)], progress=False)
    assert (first.warmed, first.already_cached, second.warmed, second.already_cached) == (10, 0, 2, 10)
    assert sorted(ran) == sorted(f"q{i}" for i in range(12))


def test_a_call_whose_policy_keeps_nothing_is_reported(disk_cache: Cache) -> None:
    @llm_cache(cache=disk_cache)
    def ask(prompt: str) -> str:
        return "sunny"

    report = ask.warm(["What's the weather right now?"], progress=False)
    assert report.warmed == 0
    [(call, reason)] = report.failed
    assert call == "What's the weather right now?"
    assert reason.startswith("ran, but nothing was stored")


def test_calls_run_concurrently_up_to_the_limit(disk_cache: Cache) -> None:
    running = peak = 0
    lock = threading.Lock()

    @llm_cache(cache=disk_cache, ttl=3600)
    def slow(prompt: str) -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return prompt

    report = slow.warm([str(i) for i in range(12)], concurrency=3, progress=False)
    assert report.warmed == 12
    assert 1 < peak <= 3


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_concurrency_is_checked(disk_cache: Cache, bad: object) -> None:
    @llm_cache(cache=disk_cache)
    def ask(prompt: str) -> str:
        return prompt

    with pytest.raises(ValueError, match="concurrency must be a whole number >= 1"):
        ask.warm(["a"], concurrency=bad)  # type: ignore[arg-type]


def test_an_interrupt_keeps_what_was_warmed(disk_cache: Cache) -> None:
    ran: list[int] = []

    @llm_cache(cache=disk_cache, ttl=3600)
    def ask(i: int) -> int:
        ran.append(i)
        if len(ran) == 5:
            raise KeyboardInterrupt
        return i * i

    with pytest.raises(KeyboardInterrupt) as caught:
        ask.warm([(i,) for i in range(20)], concurrency=1, progress=False)
    report = caught.value.report  # type: ignore[attr-defined]
    assert report.warmed == 4
    assert report.failed == [((4,), "KeyboardInterrupt")]
    assert len(ran) == 5  # nothing was started after the interrupt
    assert all(ask.cache_key(i) in disk_cache for i in range(4))
    again = ask.warm([(i,) for i in range(20)], concurrency=4, progress=False)
    assert (again.warmed, again.already_cached, again.failed) == (16, 4, [])


def test_an_interrupt_lets_running_calls_finish_and_counts_them(disk_cache: Cache) -> None:
    started = threading.Event()

    @llm_cache(cache=disk_cache, ttl=3600)
    def ask(i: int) -> int:
        if i == 0:
            started.wait(5)
            time.sleep(0.05)
            raise KeyboardInterrupt
        started.set()
        time.sleep(0.2)
        return i

    with pytest.raises(KeyboardInterrupt) as caught:
        ask.warm([0, 1, 2, 3, 4, 5], concurrency=2, progress=False)
    report = caught.value.report  # type: ignore[attr-defined]
    assert report.warmed == 1  # call 1 was running: it finished and was stored
    assert ask.cache_key(1) in disk_cache


def test_async_functions_warm_from_sync_code_and_with_awarm(disk_cache: Cache) -> None:
    running = peak = 0

    @llm_cache(cache=disk_cache, ttl=3600)
    async def ask(prompt: str) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1
        return prompt[::-1]

    report = ask.warm(["ab", "cd", "ef", "gh", "ab"], concurrency=2, progress=False)
    assert (report.warmed, report.already_cached, peak) == (4, 1, 2)

    async def in_a_loop() -> WarmReport:
        with pytest.raises(RuntimeError, match=r"use `await ask.awarm\(calls\)` instead"):
            ask.warm(["ij"])
        return await ask.awarm(["ij", "ab"], progress=False)

    report = asyncio.run(in_a_loop())
    assert (report.warmed, report.already_cached) == (1, 1)
    assert asyncio.run(ask("ij")) == "ji"


def test_awarm_runs_sync_functions_in_threads(disk_cache: Cache) -> None:
    threads: set[str] = set()

    @llm_cache(cache=disk_cache, ttl=3600)
    def ask(prompt: str) -> str:
        threads.add(threading.current_thread().name)
        return prompt

    report = asyncio.run(ask.awarm(["a", "b"], progress=False))
    assert report.warmed == 2
    assert threading.main_thread().name not in threads


def test_generators_are_drained_so_they_are_stored(disk_cache: Cache) -> None:
    @llm_cache(cache=disk_cache, ttl=3600)
    def stream(prompt: str) -> Iterator[str]:
        yield from prompt.split()

    report = stream.warm(["a b c"], progress=False)
    assert report.warmed == 1
    assert list(stream("a b c")) == ["a", "b", "c"]
    assert stream.cache_info().hits == 1


def test_unkeyable_arguments_fail_without_running(disk_cache: Cache) -> None:
    ran = []

    @llm_cache(cache=disk_cache, ttl=3600)
    def ask(prompt: object) -> str:
        ran.append(prompt)
        return "x"

    report = ask.warm([object()], progress=False)
    assert ran == []
    assert report.failed[0][1].startswith("UnkeyableArgumentError")


def test_turned_off_caching_warms_nothing(disk_cache: Cache) -> None:
    @llm_cache(cache=disk_cache)
    def ask(prompt: str) -> str:
        raise AssertionError("not called")

    llm_memo.configure(enabled=False)
    try:
        report = ask.warm(["a"], progress=False)
    finally:
        llm_memo.configure(enabled=True)
    assert report.failed == [("a", "caching is turned off (LLM_MEMO_DISABLE or configure(enabled=False))")]


def test_progress_bar_goes_to_stderr(disk_cache: Cache, capsys: pytest.CaptureFixture[str]) -> None:
    @llm_cache(cache=disk_cache, ttl=3600)
    def ask(prompt: str) -> str:
        return prompt

    ask.warm(["a", "b", "c"])
    err = capsys.readouterr().err
    assert "warming ask" in err and "3/3" in err
    ask.warm(["d"], progress=False)
    assert capsys.readouterr().err == ""


def test_an_interrupt_in_an_async_function_keeps_what_was_warmed(disk_cache: Cache) -> None:
    ran: list[int] = []

    @llm_cache(cache=disk_cache, ttl=3600)
    async def ask(i: int) -> int:
        ran.append(i)
        if len(ran) == 3:
            raise KeyboardInterrupt
        await asyncio.sleep(0)
        return i

    with pytest.raises(KeyboardInterrupt) as caught:
        ask.warm(list(range(10)), concurrency=1, progress=False)
    assert caught.value.report.warmed == 2  # type: ignore[attr-defined]
    assert len(ran) == 3
    assert all(ask.cache_key(i) in disk_cache for i in range(2))
