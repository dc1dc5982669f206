#!/usr/bin/env python
"""Redis-tier hit latency and throughput with 1, 4 and 16 client threads, beside its floor and LangChain.

    python benchmarks/bench_redis.py            # about 30 s
    python benchmarks/bench_redis.py --quick    # about 8 s

Starts its own redis-server on 127.0.0.1 (a free port, no persistence) and stores one chat
completion (about 1.5 KB of JSON) under each contender's scheme, then reads it back:

- ``redis-py GET``: a bare GET of the same JSON bytes on one shared client. The floor.
- ``RedisTier.get``: llm_memo's tier: the breaker, GET, the tier header check.
- ``Cache hit (redis)``: what a process with a cold memory tier pays for a Redis hit:
  ``Cache.get_lower`` with no disk tier: tier get, envelope checksum, JSON decode and the
  promotion into memory (``get_lower`` never reads the memory tier, so every call goes to Redis).
- ``LangChain RedisCache``: ``langchain_community.cache.RedisCache.lookup`` (HGETALL of a
  hash, Generation objects rebuilt), if ``langchain-community`` is installed.

Each thread times every call with perf_counter_ns; a configuration runs for a fixed time
after a warm-up. Medians and p99 are over all calls of all threads; throughput is calls
per second of wall time. Contenders take turns in rounds, in a rotating order, and each
reports its round with the lowest median, which filters out bursts from other processes.
Ratios compare with the floor at the same concurrency. Python threads share one GIL, so
throughput past one thread shows how much of each call is Python rather than waiting on
the socket. This file only measures: it asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import redis

from llm_memo import Cache
from llm_memo._storage.redis import RedisTier

CONCURRENCY = (1, 4, 16)
PAYLOAD = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "gpt-4o-mini",
    "choices": [{
        "index": 0,
        "finish_reason": "stop",
        "message": {"role": "assistant", "content": ("Caching deterministic LLM calls saves money "
                                                      "and time when prompts repeat. ") * 14},
    }],
    "usage": {"prompt_tokens": 412, "completion_tokens": 236, "total_tokens": 648},
}
PROMPT = "Explain why caching deterministic LLM calls saves money."
LLM_STRING = "model=gpt-4o-mini,temperature=0"
KEY = "9f" * 32


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A private redis-server for the run; its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not on PATH: install it with `bash .ci/system-deps`")
    with tempfile.TemporaryDirectory() as directory:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
             "--dir", directory], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client = redis.Redis(port=port)
            for _ in range(400):
                with contextlib.suppress(redis.ConnectionError):
                    if client.ping():
                        break
                time.sleep(0.025)
            client.close()
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.kill()
            process.wait()


def langchain_lookup(url: str) -> tuple[Callable[[], Any], Callable[[], None]] | str:
    """(lookup, close) over LangChain's RedisCache, or why it is not available."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # langchain-community announces its own sunset
            from langchain_community.cache import RedisCache
            from langchain_core.outputs import Generation
    except ImportError as exc:
        return f"LangChain RedisCache skipped: {exc} (pip install langchain-community)"
    client = redis.Redis.from_url(url)
    cache = RedisCache(client)
    cache.update(PROMPT, LLM_STRING, [Generation(text=orjson.dumps(PAYLOAD).decode())])
    if cache.lookup(PROMPT, LLM_STRING) is None:
        return "LangChain RedisCache skipped: its lookup missed"
    return (lambda: cache.lookup(PROMPT, LLM_STRING)), client.close


def contenders(url: str, directory: str) -> tuple[dict[str, Callable[[], Any]], list[Callable[[], None]], list[str]]:
    raw = redis.Redis.from_url(url)
    raw.set("bench:floor", orjson.dumps(PAYLOAD))
    tier = RedisTier(url, prefix="bench-tier")
    tier.set(KEY, orjson.dumps(PAYLOAD), None)
    cache = Cache(directory, disk=False, redis_url=url, redis_prefix="bench-cache")
    cache.set(KEY, PAYLOAD, lifetime=None)
    assert cache.get_lower(KEY) is not None and cache.get_lower(KEY).tier == "redis"
    runs: dict[str, Callable[[], Any]] = {
        "redis-py GET": lambda: raw.get("bench:floor"),
        "RedisTier.get": lambda: tier.get(KEY),
        "Cache hit (redis)": lambda: cache.get_lower(KEY),
    }
    closers: list[Callable[[], None]] = [raw.close, tier.close, cache.close]
    notes = []
    lang = langchain_lookup(url)
    if isinstance(lang, str):
        notes.append(lang)
    else:
        runs["LangChain RedisCache"], close = lang
        closers.append(close)
    return runs, closers, notes


def measure(call: Callable[[], Any], threads: int, seconds: float) -> tuple[list[int], float]:
    """Per-call nanoseconds from ``threads`` threads calling for ``seconds``; and calls per second."""
    samples: list[list[int]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads + 1)
    stop = threading.Event()

    def worker(out: list[int]) -> None:
        clock = time.perf_counter_ns
        for _ in range(50):  # warm the connection pool and the code paths
            call()
        start.wait()
        while not stop.is_set():
            t0 = clock()
            call()
            out.append(clock() - t0)

    pool = [threading.Thread(target=worker, args=(out,)) for out in samples]
    for thread in pool:
        thread.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - began
    merged = [ns for out in samples for ns in out]
    return merged, len(merged) / elapsed


def p99(values: list[int]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) > 1 else values[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 0.3 s instead of 4 of 0.6 s")
    args = parser.parse_args(argv)
    rounds, seconds = (2, 0.3) if args.quick else (4, 0.6)
    print(f"# python {platform.python_version()}, redis-py {redis.__version__}, {os.cpu_count()} CPUs, "
          f"best of {rounds} rounds of {seconds:g} s, payload {len(orjson.dumps(PAYLOAD))} B of JSON")
    with redis_server() as url, tempfile.TemporaryDirectory() as directory:
        server = redis.Redis.from_url(url)
        print(f"# redis-server {server.info('server')['redis_version']} on {url}")
        server.close()
        runs, closers, notes = contenders(url, directory)
        for note in notes:
            print(f"# {note}")
        header = f"{'contender':<22} {'clients':>7} {'median µs':>10} {'p99 µs':>9} {'calls/s':>9} " \
                 f"{'median/floor':>13} {'calls/s/floor':>14}"
        print(header)
        print("-" * len(header))
        names = list(runs)
        for threads in CONCURRENCY:
            best: dict[str, tuple[float, float, float]] = {}  # name: (median µs, p99 µs, calls/s)
            for r in range(rounds):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    samples, rate = measure(runs[name], threads, seconds)
                    median = statistics.median(samples) / 1000
                    if name not in best or median < best[name][0]:
                        best[name] = (median, p99(samples) / 1000, rate)
            floor = best[names[0]]
            for name in names:
                median, tail, rate = best[name]
                print(f"{name:<22} {threads:>7} {median:>10.1f} {tail:>9.1f} {rate:>9.0f} "
                      f"{median / floor[0]:>13.2f} {rate / floor[2]:>14.2f}", flush=True)
            print()
        for close in closers:
            close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
