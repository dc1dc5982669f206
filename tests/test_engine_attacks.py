"""Attacks on the one-engine call path, each through the public API.

Every test here failed when it was written (see the review report); a fix makes it pass.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

import llm_memo
from llm_memo import Cache, cache_options, llm_cache
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


def text_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


# ---- 1. a stream that is opened and never read holds its lease forever --------------------------

def test_a_cached_generator_closed_before_its_first_chunk_gives_its_lease_back(memo: Cache) -> None:
    @llm_cache(cache=memo, ttl=60, lease=0.6)
    def tokens(question: str) -> Iterator[str]:
        yield "a"
        yield "b"

    stream = tokens("q")
    stream.close()  # the caller changed its mind before reading anything
    del stream
    time.sleep(1.5)  # two and a half lease lengths: even an unreleased lease would have lapsed
    token = memo.lease(tokens.cache_key("q"), 0.6)
    assert token is not None, "the heartbeat still renews the lease of a stream nobody will ever read"
    memo.release(tokens.cache_key("q"), token)


_UNREAD_STREAM_THEN_CALL = """
    import sys, threading, openai, llm_memo
    from llm_memo.testing import LocalServer

    with LocalServer() as server, llm_memo.Cache(sys.argv[1]) as cache:
        raw = openai.OpenAI(base_url=server.url, api_key="sk-test", max_retries=0, timeout=10)
        client = llm_memo.wrap(raw, cache=cache, policy="forever")
        ask = dict(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], temperature=0)
        client.chat.completions.create(**ask, stream=True).close()  # opened, not read, closed
        answers = []
        worker = threading.Thread(target=lambda: answers.append(client.chat.completions.create(**ask)),
                                  daemon=True)
        worker.start()
        worker.join(15)
        print("answered" if answers else "still waiting", flush=True)
        sys.stdout.flush()
        import os; os._exit(0)
"""


def test_a_call_after_an_unread_closed_stream_is_answered(tmp_path: Path) -> None:
    """wrap(): a non-streamed call with the same request as a stream that was opened and closed
    unread waits for that stream's lease, which its heartbeat renews forever."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(_UNREAD_STREAM_THEN_CALL), str(tmp_path / "c")],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.stdout.strip() == "answered", result.stdout + result.stderr


_PARTLY_READ_STREAM_THEN_CALL = """
    import os, sys, threading, openai, llm_memo
    from llm_memo.testing import LocalServer

    with LocalServer() as server, llm_memo.Cache(sys.argv[1]) as cache:
        raw = openai.OpenAI(base_url=server.url, api_key="sk-test", max_retries=0, timeout=10)
        client = llm_memo.wrap(raw, cache=cache, policy="forever")
        ask = dict(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], temperature=0)
        stream = client.chat.completions.create(**ask, stream=True)
        for chunk in stream:
            break  # seen enough; `stream` stays referenced, as in a notebook's namespace
        answers = []
        worker = threading.Thread(target=lambda: answers.append(client.chat.completions.create(**ask)),
                                  daemon=True)
        worker.start()
        worker.join(15)
        print("answered" if answers else "still waiting", flush=True)
        os._exit(0)
"""


def test_a_call_after_a_partly_read_stream_is_answered(tmp_path: Path) -> None:
    """wrap(): a stream read in part and kept (not closed) holds its lease while the process lives;
    the same request made non-streamed, in this process or any other, waits for it forever."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(_PARTLY_READ_STREAM_THEN_CALL),
                             str(tmp_path / "c")], capture_output=True, text=True, env=env, timeout=60)
    assert result.stdout.strip() == "answered", result.stdout + result.stderr


# ---- 2. a cancelled (or interrupted) leader takes its followers down with it -------------------

def test_a_follower_of_an_async_stream_is_not_cancelled_with_its_leader(memo: Cache) -> None:
    runs: list[str] = []

    @llm_cache(cache=memo, ttl=60)
    async def tokens(question: str) -> AsyncIterator[str]:
        runs.append(question)
        for part in ("a", "b", "c"):
            await asyncio.sleep(0.2)
            yield part

    async def read() -> list[str]:
        return [chunk async for chunk in tokens("q")]

    async def main() -> Any:
        leader = asyncio.create_task(read())
        await asyncio.sleep(0.05)
        follower = asyncio.create_task(read())  # reads along the leader's source
        await asyncio.sleep(0.1)
        leader.cancel()  # e.g. the leader's HTTP client disconnected
        return (await asyncio.gather(follower, return_exceptions=True))[0]

    got = asyncio.run(main())
    assert got == ["a", "b", "c"], f"the follower, never cancelled itself, got {got!r}"


def test_a_wrapped_async_stream_reader_is_not_cancelled_with_the_leader(server: LocalServer, memo: Cache) -> None:
    server.chunk_delay = 0.1
    raw = openai.AsyncOpenAI(base_url=server.url, api_key="sk-test", max_retries=0, timeout=30)
    client = llm_memo.wrap(raw, cache=memo, policy="forever")

    async def read() -> str:
        stream = await client.chat.completions.create(**ask("Tell me a long story"), stream=True)
        return text_of([chunk async for chunk in stream])

    async def main() -> Any:
        leader = asyncio.create_task(read())
        await asyncio.sleep(0.25)
        follower = asyncio.create_task(read())
        await asyncio.sleep(0.25)
        leader.cancel()
        result = (await asyncio.gather(follower, return_exceptions=True))[0]
        await raw.close()
        return result

    got = asyncio.run(main())
    assert isinstance(got, str) and got, f"the follower, never cancelled itself, got {got!r}"


def test_a_thread_waiting_for_an_interrupted_call_is_not_interrupted(memo: Cache) -> None:
    """Ctrl-C lands in the main thread's call; a worker thread that asked for the same call meanwhile
    gets the KeyboardInterrupt raised in it (asyncio followers of a cancelled leader retry instead)."""
    runs: list[str] = []

    @llm_cache(cache=memo, ttl=60)
    def answer(question: str) -> str:
        runs.append(threading.current_thread().name)
        time.sleep(0.3)
        if threading.current_thread() is threading.main_thread():
            raise KeyboardInterrupt
        return "the answer"

    got: list[Any] = []

    def worker() -> None:
        time.sleep(0.1)
        try:
            got.append(answer("q"))
        except BaseException as exc:  # what the worker saw is the finding
            got.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    with pytest.raises(KeyboardInterrupt):
        answer("q")
    thread.join(10)
    assert got == ["the answer"], f"the worker thread got {got!r}"


# ---- 3. storing fails the call ------------------------------------------------------------------

def test_an_answer_that_cannot_be_stored_is_still_returned(memo: Cache) -> None:
    """The function ran and returned; the codec refusing the value (Python's int-to-str digit limit)
    must fall through like any other unstorable value, not fail the call."""
    @llm_cache(cache=memo, ttl=60)
    def big(question: str) -> int:
        return 10**5000

    assert big("q") == 10**5000
    assert big.cache_info().errors >= 1


# ---- 4. a no-store call still writes its prompt to disk (semantic index) -----------------------

def test_a_no_store_call_leaves_nothing_in_the_semantic_index(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_semantic import Embedder, serve_all

    with Cache(tmp_path / "c") as cache:
        @llm_cache(cache=cache, ttl=60, semantic=serve_all(Embedder()))
        def answer(prompt: str) -> str:
            return "ok"

        with cache_options(write=False):
            answer("my password is hunter2")
        assert cache.get(answer.cache_key("my password is hunter2")) is None  # the answer: not stored
    index = tmp_path / "c" / "semantic.sqlite3"
    rows = sqlite3.connect(index).execute("SELECT prompt FROM entries").fetchall() if index.exists() else []
    assert rows == [], f"a write=False call's prompt was written to {index.name}: {rows!r}"


# ---- 5. closing a wrapped stream from another thread ---------------------------------------------

def test_closing_a_wrapped_stream_from_another_thread_stops_it(server: LocalServer, memo: Cache) -> None:
    """A UI's stop button closes the SDK stream from another thread; with the raw client that works
    (the reader stops), with wrap() close() raises ValueError and the stream runs to its end."""
    server.chunk_delay = 0.2
    raw = openai.OpenAI(base_url=server.url, api_key="sk-test", max_retries=0, timeout=30)
    client = llm_memo.wrap(raw, cache=memo, policy="forever")
    stream = client.chat.completions.create(**ask("Tell me a long story"), stream=True)
    read: list[Any] = []

    def reader() -> None:
        try:
            for chunk in stream:
                read.append(chunk)
        except Exception as exc:  # a closed stream may end with an error
            read.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    time.sleep(0.5)
    try:
        stream.close()
    finally:
        thread.join(30)
        raw.close()
    chunks = [c for c in read if not isinstance(c, Exception)]
    assert len(chunks) < 8, f"the stream ran on after close(): {len(chunks)} chunks"


# ---- 6. exceptions change type through the flow generators ---------------------------------------

def test_stop_iteration_from_the_function_reaches_the_caller_as_it_is(memo: Cache) -> None:
    """The body's exception is thrown into the flow generator, where PEP 479 turns StopIteration
    into RuntimeError('generator raised StopIteration')."""
    @llm_cache(cache=memo, ttl=60)
    def first_answer(question: str) -> str:
        return next(iter([]))  # no answer: StopIteration, as the uncached function raises

    with pytest.raises(StopIteration):
        first_answer.__wrapped__("q")
    with pytest.raises(StopIteration):
        first_answer("q")
