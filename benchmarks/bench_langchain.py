#!/usr/bin/env python
"""LangChain hit latency: llm_memo beside LangChain's InMemoryCache and SQLiteCache, in one run.

    python benchmarks/bench_langchain.py            # about a minute
    python benchmarks/bench_langchain.py --quick    # a few seconds, fewer samples

Needs langchain-core, langchain-openai and langchain-community (pip install -e '.[bench]').
A ChatOpenAI talks to llm_memo's local server (no network). Three tables:

- lookup(): the cache's own `lookup(prompt, llm_string)` for a stored answer.
- invoke(): `ChatOpenAI.invoke` answered from the cache, LangChain's whole call path included;
  "no cache" is the local server's round trip, for scale (a real provider takes 0.3-3 s).
- stream(): a repeated `ChatOpenAI.stream`; "provider calls" counts the requests that reached
  the server per repeat (LangChain's caches do not serve streams).

"disk" rows empty llm_memo's memory tier before each call (outside the timing). Each figure is
the lowest median of the rounds (timer: perf_counter_ns, garbage collector off).
This file only measures: it asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from _provenance import git_state
from langchain_core.caches import InMemoryCache
from langchain_core.globals import set_llm_cache
from langchain_openai import ChatOpenAI

import llm_memo
from llm_memo.integrations.langchain import LLMMemoCache, cached_chat_openai
from llm_memo.testing.server import LocalServer

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # langchain-community announces its own sunset on import
    from langchain_community.cache import SQLiteCache

PROMPT = "Summarise the trade-offs of write-through caching in two sentences."


def timed(call: Callable[[], Any], samples: int, rounds: int, before: Callable[[], Any] | None = None) -> float:
    """The lowest per-round median of `call`, in microseconds."""
    medians = []
    for _ in range(rounds):
        times = []
        gc.disable()
        try:
            for _ in range(samples):
                if before is not None:
                    before()
                start = time.perf_counter_ns()
                call()
                times.append(time.perf_counter_ns() - start)
        finally:
            gc.enable()
        medians.append(statistics.median(times) / 1000)
    return min(medians)


def chat(server: LocalServer, cache: Any = None) -> ChatOpenAI:
    return ChatOpenAI(model="gpt-4o-mini", base_url=server.url, api_key="bench", temperature=0,
                      max_retries=0, cache=cache)


def lookups(server: LocalServer, work: Path, samples: int, rounds: int) -> list[tuple[str, float]]:
    """Each cache's lookup() of an answer stored by a real invoke (so prompt and llm_string are LangChain's)."""
    seen: dict[str, tuple[str, str]] = {}

    class Spy(InMemoryCache):
        def update(self, prompt: str, llm_string: str, return_val: Any) -> None:
            seen["key"] = (prompt, llm_string)
            super().update(prompt, llm_string, return_val)

    spy = Spy()
    chat(server, spy).invoke(PROMPT)
    prompt, llm_string = seen["key"]
    generations = spy.lookup(prompt, llm_string)
    memory_cache = llm_memo.Cache(work / "lookup-memo")
    disk_cache = llm_memo.Cache(work / "lookup-disk")
    contenders = [("LangChain InMemoryCache", InMemoryCache(), None),
                  ("LangChain SQLiteCache", SQLiteCache(str(work / "lookup.db")), None),
                  ("llm_memo LLMMemoCache, memory tier", LLMMemoCache(memory_cache), None),
                  ("llm_memo LLMMemoCache, disk tier", LLMMemoCache(disk_cache), disk_cache.memory.clear)]
    rows = []
    for name, cache, before in contenders:
        cache.update(prompt, llm_string, generations)
        assert cache.lookup(prompt, llm_string) is not None, name
        rows.append((name, timed(lambda c=cache: c.lookup(prompt, llm_string), samples, rounds, before)))
    return rows


def invokes(server: LocalServer, work: Path, samples: int, rounds: int) -> list[tuple[str, float, int]]:
    """ChatOpenAI.invoke on a hit, per cache: (name, microseconds, requests that reached the server)."""
    memory_cache = llm_memo.Cache(work / "invoke-memo")
    disk_cache = llm_memo.Cache(work / "invoke-disk")
    transport_memory = llm_memo.Cache(work / "transport-memo")
    transport_disk = llm_memo.Cache(work / "transport-disk")
    contenders = [
        ("no cache (local server round trip)", chat(server, False), None),
        ("LangChain InMemoryCache", chat(server, InMemoryCache()), None),
        ("LangChain SQLiteCache", chat(server, SQLiteCache(str(work / "invoke.db"))), None),
        ("llm_memo LLMMemoCache, memory tier", chat(server, LLMMemoCache(memory_cache)), None),
        ("llm_memo LLMMemoCache, disk tier", chat(server, LLMMemoCache(disk_cache)), disk_cache.memory.clear),
        ("llm_memo cached_chat_openai, memory tier",
         cached_chat_openai(chat(server, False), cache=transport_memory), None),
        ("llm_memo cached_chat_openai, disk tier",
         cached_chat_openai(chat(server, False), cache=transport_disk), transport_disk.memory.clear),
    ]
    rows = []
    for name, llm, before in contenders:
        llm.invoke(PROMPT)  # stores the answer
        server.reset()
        micros = timed(lambda m=llm: m.invoke(PROMPT), samples, rounds, before)
        rows.append((name, micros, len(server.requests)))
    return rows


def streams(server: LocalServer, work: Path, samples: int, rounds: int) -> list[tuple[str, float, float]]:
    """A repeated ChatOpenAI.stream: (name, microseconds, provider calls per repeat)."""
    transport = llm_memo.Cache(work / "stream-memo")
    contenders = [("LangChain InMemoryCache", chat(server, InMemoryCache())),
                  ("LangChain SQLiteCache", chat(server, SQLiteCache(str(work / "stream.db")))),
                  ("llm_memo cached_chat_openai, memory tier", cached_chat_openai(chat(server, False), cache=transport))]
    rows = []
    for name, llm in contenders:
        list(llm.stream(PROMPT))
        server.reset()
        micros = timed(lambda m=llm: list(m.stream(PROMPT)), samples, rounds)
        rows.append((name, micros, len(server.requests) / (samples * rounds)))
    return rows


def table(title: str, header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    def cell(value: Any) -> str:
        return f"{value:,.1f}" if isinstance(value, float) else str(value)

    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    args = parser.parse_args(argv)
    scale = 0.1 if args.quick else 1.0
    rounds = 2 if args.quick else 3
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in
                         ("llm_memo", "langchain-core", "langchain-openai", "langchain-community", "openai"))
    print(f"# LangChain hit latency ({git_state()}; {versions}; Python {sys.version.split()[0]})\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the process default cache is never used; nothing to warn about
        with tempfile.TemporaryDirectory() as tmp, LocalServer() as server:
            work = Path(tmp)
            set_llm_cache(None)
            print(table("lookup() of a stored answer", ("cache", "median µs"),
                        lookups(server, work, int(20_000 * scale), rounds)))
            print(table("ChatOpenAI.invoke() on a hit", ("cache", "median µs", "requests to server"),
                        invokes(server, work, int(2_000 * scale), rounds)))
            print(table("ChatOpenAI.stream() repeated", ("cache", "median µs", "provider calls per repeat"),
                        streams(server, work, int(500 * scale), rounds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
