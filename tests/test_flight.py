"""In-process single-flight on its own (no lease), and leases given back however a call ends."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from llm_memo import Cache, llm_cache


def test_threads_asking_at_once_run_the_body_once_without_any_lease(tmp_path: Path) -> None:
    runs = []
    with Cache(tmp_path / "c") as cache:
        @llm_cache(cache=cache, ttl=60, lease=0)
        def ask(question: str) -> str:
            runs.append(question)
            time.sleep(0.3)
            return "answer to " + question

        start = threading.Barrier(8)
        answers: list[str] = []

        def caller() -> None:
            start.wait()
            answers.append(ask("q"))

        threads = [threading.Thread(target=caller) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers == ["answer to q"] * 8
        assert runs == ["q"]
        assert ask.cache_info().hits == 7


def test_tasks_asking_at_once_run_the_body_once_without_any_lease(tmp_path: Path) -> None:
    runs = []
    with Cache(tmp_path / "c") as cache:
        @llm_cache(cache=cache, ttl=60, lease=0)
        async def ask(question: str) -> str:
            runs.append(question)
            await asyncio.sleep(0.3)
            return "answer to " + question

        async def main() -> list[str]:
            return await asyncio.gather(*(ask("q") for _ in range(8)))

        assert asyncio.run(main()) == ["answer to q"] * 8
        assert runs == ["q"]


def test_a_call_interrupted_in_its_body_gives_its_lease_back(tmp_path: Path) -> None:
    with Cache(tmp_path / "c") as cache:
        @llm_cache(cache=cache, ttl=60, lease=600)
        def ask(question: str) -> str:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            ask("q")
        token = cache.lease(ask.cache_key("q"), 5)
        assert token is not None, "the retry would wait for the interrupted call's lease"


def test_a_call_interrupted_between_lease_and_body_gives_its_lease_back(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with Cache(tmp_path / "c") as cache:
        @llm_cache(cache=cache, ttl=60, lease=600)
        def ask(question: str) -> str:
            return "answer"

        def interrupted(*args: object, **kwargs: object) -> None:
            raise KeyboardInterrupt  # Ctrl-C while re-reading the lower tiers under the lease

        monkeypatch.setattr(cache, "get_lower", interrupted)
        with pytest.raises(KeyboardInterrupt):
            ask("q")
        monkeypatch.undo()
        token = cache.lease(ask.cache_key("q"), 5)
        assert token is not None, "the retry would wait for the interrupted call's lease"


def test_a_failed_call_lets_every_waiter_run_at_once(tmp_path: Path) -> None:
    with Cache(tmp_path / "c") as cache:
        @llm_cache(cache=cache, ttl=60, lease=600)
        def ask(question: str) -> str:
            raise RuntimeError("the provider failed")

        with pytest.raises(RuntimeError):
            ask("q")
        key = ask.cache_key("q")
        first, second = cache.lease(key, 5), cache.lease(key, 5)
        assert first is not None and second is not None  # nobody waits in turn behind a failure


def test_a_held_lease_is_renewed_while_its_holder_lives(tmp_path: Path) -> None:
    with Cache(tmp_path / "c") as cache:
        token = cache.lease("k" * 64, 0.6)
        assert token is not None
        time.sleep(1.5)  # two and a half lease lengths
        assert cache.lease("k" * 64, 0.6) is None
        cache.release("k" * 64, token)
        assert cache.lease("k" * 64, 0.6) is not None
