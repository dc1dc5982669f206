"""One engine for every front-end: per-call controls, stream single-flight, and a miss that keys
once and reads each tier once - through the decorator and through wrap() alike."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

import llm_memo
from llm_memo import Cache, cache_options, llm_cache
from llm_memo._logic.keys import KeyMaker
from llm_memo.testing import LocalServer

MODEL = "gpt-4o-mini"


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer() as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(server: LocalServer) -> Iterator[None]:
    server.reset()
    server.chunk_delay = 0.0
    yield
    server.chunk_delay = 0.0


@pytest.fixture
def memo(tmp_path: Path) -> Iterator[Cache]:
    with Cache(tmp_path / "memo") as cache:
        yield cache


def ask(text: str = "What is a cache?", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], "temperature": 0, **extra}


def upstream(server: LocalServer) -> int:
    return sum(1 for r in server.requests if r.path.endswith("/chat/completions"))


@pytest.fixture
def client(server: LocalServer, memo: Cache) -> Iterator[Any]:
    raw = openai.OpenAI(base_url=server.url, api_key="sk-test", max_retries=0, timeout=30)
    yield llm_memo.wrap(raw, cache=memo, policy="forever")
    raw.close()


def counter_of(answers: list[str]) -> tuple[Callable[[str], str], list[str]]:
    calls: list[str] = []

    def answer(question: str) -> str:
        calls.append(question)
        return answers[len(calls) - 1]
    return answer, calls


# ---- cache_options: one implementation for every front-end -------------------------------------

def test_read_false_serves_a_fresh_answer_that_replaces_the_stored_one(memo: Cache) -> None:
    answer, calls = counter_of(["old", "new"])

    @llm_cache(cache=memo, policy="forever")
    def question(q: str) -> str:
        return answer(q)

    assert question("q") == "old"
    with cache_options(read=False):
        assert question("q") == "new"
    assert question("q") == "new"
    assert len(calls) == 2


def test_write_false_stores_nothing(memo: Cache) -> None:
    answer, _ = counter_of(["one", "two"])

    @llm_cache(cache=memo, policy="forever")
    def question(q: str) -> str:
        return answer(q)

    with cache_options(write=False):
        assert question("q") == "one"
    assert question.cache_key("q") not in list(memo.keys())
    assert question("q") == "two"
    assert question.cache_info().misses == 2


def test_ttl_and_tags_apply_to_what_the_block_stores(memo: Cache) -> None:
    @llm_cache(cache=memo, policy="forever")
    def question(q: str) -> str:
        return "answer"

    with cache_options(ttl=60, tags=["experiment-7"]):
        question("q")
    entry = memo.get_entry(question.cache_key("q"))
    assert entry is not None and entry.expires_at is not None
    assert entry.expires_at - entry.created_at == pytest.approx(60, abs=1)
    assert "experiment-7" in entry.tags
    assert memo.invalidate(tag="experiment-7") == 1


def test_blocks_nest_and_a_turned_off_read_or_write_stays_off(memo: Cache) -> None:
    answer, calls = counter_of(["a", "b", "c"])

    @llm_cache(cache=memo, policy="forever")
    def question(q: str) -> str:
        return answer(q)

    question("q")
    with cache_options(read=False), cache_options(write=False):
        assert question("q") == "b"  # not read...
    assert question("q") == "a"  # ...and not written: the first answer is still the stored one
    assert len(calls) == 2


def test_async_tasks_started_inside_the_block_follow_it(memo: Cache) -> None:
    calls: list[str] = []

    @llm_cache(cache=memo, policy="forever")
    async def question(q: str) -> str:
        calls.append(q)
        return "answer"

    async def main() -> None:
        with cache_options(write=False):
            task = asyncio.create_task(question("q"))
        await task
        await question("q")

    asyncio.run(main())
    assert calls == ["q", "q"]


@pytest.mark.parametrize(("options", "fix"), [({"read": "no"}, "read="), ({"write": 1}, "write="),
                                             ({"ttl": -1}, "ttl"), ({"tags": "one"}, "tags=")])
def test_bad_controls_are_refused_with_the_argument_named(options: dict[str, Any], fix: str) -> None:
    with pytest.raises((TypeError, ValueError), match=fix), cache_options(**options):
        pass


def test_wrap_honours_cache_options(client: Any, server: LocalServer, memo: Cache) -> None:
    client.chat.completions.create(**ask())
    with cache_options(read=False):
        client.chat.completions.create(**ask())
    assert upstream(server) == 2
    with cache_options(write=False):
        client.chat.completions.create(**ask("never stored"))
    client.chat.completions.create(**ask("never stored"))
    assert upstream(server) == 4


def test_the_header_carries_the_controls_and_never_leaves(client: Any, server: LocalServer, memo: Cache) -> None:
    client.chat.completions.create(**ask())
    client.chat.completions.create(**ask(), extra_headers={"x-llm-memo": "no-read"})
    assert upstream(server) == 2
    client.chat.completions.create(**ask("q2"), extra_headers={"X-LLM-Memo": "no-store"})
    client.chat.completions.create(**ask("q2"))
    assert upstream(server) == 4
    client.chat.completions.create(**ask("q3"), extra_headers={"x-llm-memo": "ttl=60, tag=batch-1"})
    assert memo.invalidate(tag="batch-1") == 1
    assert all("x-llm-memo" not in r.headers for r in server.requests)


def test_a_malformed_header_fails_before_anything_is_sent(client: Any, server: LocalServer) -> None:
    with pytest.raises(ValueError, match=r"x-llm-memo.*no-read"):
        client.chat.completions.create(**ask(), extra_headers={"x-llm-memo": "dont-read"})
    assert upstream(server) == 0


# ---- single-flight for streams --------------------------------------------------------------

def _read_stream(client: Any, times: dict[str, list[float]], texts: list[str], start: threading.Barrier) -> None:
    start.wait()
    began = time.monotonic()
    text = ""
    for n, chunk in enumerate(client.chat.completions.create(**ask("stream me"), stream=True)):
        if n == 0:
            times["first"].append(time.monotonic() - began)
        text += "".join(c.delta.content or "" for c in chunk.choices)
    times["end"].append(time.monotonic() - began)
    texts.append(text)


def test_concurrent_identical_streams_run_once_and_followers_read_along(client: Any, server: LocalServer) -> None:
    server.chunk_delay = 0.15
    times: dict[str, list[float]] = {"first": [], "end": []}
    texts: list[str] = []
    start = threading.Barrier(4)
    threads = [threading.Thread(target=_read_stream, args=(client, times, texts, start)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert upstream(server) == 1
    assert len(texts) == 4 and len(set(texts)) == 1 and texts[0]
    # Every caller had its first chunk before any caller had the whole answer: followers read along.
    assert max(times["first"]) < min(times["end"]), times


def test_concurrent_identical_async_streams_run_once(server: LocalServer, memo: Cache) -> None:
    server.chunk_delay = 0.15

    async def main() -> list[tuple[float, float, str]]:
        raw = openai.AsyncOpenAI(base_url=server.url, api_key="sk-test", max_retries=0, timeout=30)
        client = llm_memo.wrap(raw, cache=memo, policy="forever")

        async def one() -> tuple[float, float, str]:
            began, first, text = time.monotonic(), 0.0, ""
            async for chunk in await client.chat.completions.create(**ask("stream me"), stream=True):
                first = first or time.monotonic() - began
                text += "".join(c.delta.content or "" for c in chunk.choices)
            return first, time.monotonic() - began, text
        try:
            return await asyncio.gather(*(one() for _ in range(4)))
        finally:
            await raw.close()

    results = asyncio.run(main())
    assert upstream(server) == 1
    assert len({text for _, _, text in results}) == 1
    assert max(first for first, _, _ in results) < min(end for _, end, _ in results)


def test_a_cached_generator_called_at_once_runs_once_and_streams_to_everyone(memo: Cache) -> None:
    runs: list[int] = []
    release = threading.Event()
    firsts = threading.Semaphore(0)

    @llm_cache(cache=memo, policy="forever")
    def chunks(q: str) -> Iterator[str]:
        runs.append(1)
        yield "first "
        release.wait(20)  # the body holds on until every caller has had its first chunk
        yield "second"

    results: list[list[str]] = []
    start = threading.Barrier(4)

    def consume() -> None:
        start.wait()
        got = []
        for chunk in chunks("q"):
            if not got:
                firsts.release()
            got.append(chunk)
        results.append(got)

    threads = [threading.Thread(target=consume) for _ in range(4)]
    for thread in threads:
        thread.start()
    everyone = all(firsts.acquire(timeout=10) for _ in range(4))
    release.set()
    for thread in threads:
        thread.join(30)
    assert everyone, "a caller got its first chunk only after the body finished"
    assert runs == [1]
    assert results == [["first ", "second"]] * 4
    assert chunks.cache_info().hits == 3
    assert list(chunks("q")) == ["first ", "second"]  # stored once whole
    assert runs == [1]


def test_a_cached_async_generator_called_at_once_runs_once(memo: Cache) -> None:
    runs: list[int] = []

    @llm_cache(cache=memo, policy="forever")
    async def chunks(q: str) -> Any:
        runs.append(1)
        yield "first "
        await asyncio.sleep(0.3)
        yield "second"

    async def main() -> list[list[str]]:
        async def one() -> list[str]:
            return [c async for c in chunks("q")]
        return await asyncio.gather(*(one() for _ in range(4)))

    assert asyncio.run(main()) == [["first ", "second"]] * 4
    assert runs == [1]


# ---- the OpenAI miss path: one key, each tier read once ----------------------------------------

def test_an_openai_miss_keys_once_and_reads_each_tier_once(client: Any, memo: Cache, server: LocalServer,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    counts: Counter[str] = Counter()
    key = KeyMaker.key

    def counting_key(self: KeyMaker, keyed: Any) -> str:
        counts["key"] += 1
        return key(self, keyed)

    monkeypatch.setattr(KeyMaker, "key", counting_key)
    for tier in memo.tiers:
        def counted(k: str, _get: Callable[..., Any] = tier.get, _name: str = tier.name) -> Any:
            counts[_name] += 1
            return _get(k)
        monkeypatch.setattr(tier, "get", counted)
    client.chat.completions.create(**ask("counted"))
    assert upstream(server) == 1
    assert counts == {"key": 1, "memory": 1, "disk": 1}
    counts.clear()
    client.chat.completions.create(**ask("counted"))
    assert counts == {"key": 1, "memory": 1}  # a hit: the memory tier has it


# ---- a call that sets no temperature --------------------------------------------------------

def test_a_decorated_call_that_sets_no_temperature_is_cached_unless_told_otherwise(memo: Cache) -> None:
    calls: list[str] = []

    @llm_cache(cache=memo, policy="forever")
    def relaxed(q: str, temperature: float | None = None) -> str:
        calls.append(q)
        return q

    @llm_cache(cache=memo, policy="forever", on_unset_temperature="bypass")
    def strict(q: str, temperature: float | None = None) -> str:
        calls.append(q)
        return q

    relaxed("a")
    relaxed("a")
    assert calls == ["a"]
    with pytest.warns(llm_memo.NonDeterministicCallWarning, match="temperature not set"):
        strict("b")
    strict("b")
    strict("b", temperature=0)
    strict("b", temperature=0)
    assert calls == ["a", "b", "b", "b"]
