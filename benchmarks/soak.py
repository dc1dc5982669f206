#!/usr/bin/env python
"""Soak: a bounded mixed workload through @llm_cache, watching memory, disk and hit latency.

    python benchmarks/soak.py                  # 3 minutes, memory + disk tiers
    python benchmarks/soak.py --minutes 10     # longer
    python benchmarks/soak.py --redis          # add a private redis-server on 127.0.0.1

Workload: 4 threads call one decorated function ``ask(prompt, n, model=..., temperature=0)``
on ``Cache(tmpdir, memory_maxsize=8 MiB, disk_size_limit=64 MiB)`` (``policy="long"``, so
nothing expires during the run). 80% of calls pick key n from a Zipf distribution (s = 1.0)
over 50,000 keys, about 8 times what the disk tier holds and 60 times the memory tier; the
other 20% are fresh keys never asked before, so the tiers must keep evicting. A miss returns
a chat-completion-like dict whose content is 1-20 KB (uniform, fixed per key), taken from a
pre-built text; every returned value is checked against its key.

The function answers at once (``--miss-ms`` makes it sleep like a model), so the tiers churn
far faster than behind a real LLM: that is the point of a soak. With --redis the cache gets
a Redis tier on a redis-server this file starts on 127.0.0.1 (free port, no persistence,
maxmemory 128 MiB allkeys-lru) and stops at the end; a Redis hit includes its promotion
into the disk tier (a SQLite write) and memory.

Every interval (15 s) one row: calls, hit rate, hits by tier, p50/p99 latency of memory and
disk hits (and Redis hits with --redis), the process RSS and its anonymous part from
/proc/self/status, the bytes of every file under the cache directory and of its WAL, the
disk tier's entries and tag rows, cache errors (``cache_info().errors``) and calls that
raised or returned a wrong value. A verdict follows: RSS first->last interval, the largest
disk footprint (sampled every second) against the limit plus 16 MiB of slack, and each
tier's p99 hit latency in the last interval over the first.

Bounded: it stops at --minutes, after --max-calls calls, or early when the cache directory
passes --disk-cap-gib (4 GiB), saying so.

How a call is classified: each call is timed alone with ``perf_counter_ns`` around the
decorated call. The tier that served it comes from the engine's ``on_hit`` observer
(``llm_memo._engine.config.hooks``), which records ``Hit.tier`` in a thread-local, so each call is
classified exactly even with 4 threads (``cache_info()`` deltas would mix the threads, and
timing buckets would guess). The observer runs inside the timed call and adds about 0.1 µs.
A call with no hit event is a miss. At the end the per-tier totals are checked against
``cache_info().hits_by_tier`` and ``misses``; a mismatch is reported and fails the run.

Latency here is what a caller in a threaded program sees: it includes waiting for the GIL
while the other threads run (Python's switch interval is 5 ms), so p99 is far above the
single-thread numbers of bench_core.py; use --threads 1 for those. What this file watches is
the trend: the same percentile in the first and the last interval. It measures and reports;
it asserts nothing about timings. The exit status is 1 only if a call raised, returned a
wrong value, or the classification check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import os
import platform
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from _provenance import git_state

import llm_memo
from llm_memo._engine.config import hooks

MiB = 2**20
MODEL = "gpt-4o-mini"
MEMORY_MAXSIZE = 8 * MiB
DISK_LIMIT = 64 * MiB
DISK_SLACK = 16 * MiB  # WAL file (SQLite checkpoints at 1000 pages), -shm, ledger, cull lag
REDIS_MAXMEMORY = 128 * MiB
KEYS = 50_000
ZIPF_S = 1.0
REPEATS = 0.8  # share of calls drawn from the Zipf key space; the rest are fresh keys
MIN_VALUE, MAX_VALUE = 1024, 20 * 1024
TIERS = ("memory", "disk", "redis", "flight")
KINDS = (*TIERS, "miss", "failed")
PREFIX = (
    "You are a careful assistant. Answer the user's question in a short paragraph, cite the "
    "document section you rely on, and say so plainly when the document does not cover it. "
    "Question number "
)

# ---- workload -----------------------------------------------------------------------------

_rng = random.Random(1234)
_ALPHABET = "abcdefghijklmnopqrstuvwxyz      ,.ABCDEFGHIJ0123456789"
TEXT = "".join(_rng.choices(_ALPHABET, k=256 * 1024))  # random enough that nothing compresses it


def value_size(n: int) -> int:
    return MIN_VALUE + (n * 2654435761) % (MAX_VALUE - MIN_VALUE + 1)


def make_value(n: int) -> dict[str, Any]:
    size = value_size(n)
    start = (n * 7919) % (len(TEXT) - MAX_VALUE)
    return {
        "id": f"chatcmpl-{n}",
        "model": MODEL,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": TEXT[start : start + size]}}
        ],
        "usage": {"prompt_tokens": 60, "completion_tokens": size // 4},
    }


def is_right(value: Any, n: int) -> bool:
    try:
        return value["id"] == f"chatcmpl-{n}" and len(
            value["choices"][0]["message"]["content"]
        ) == value_size(n)
    except (TypeError, KeyError, IndexError):
        return False


def zipf_cdf(keys: int, s: float) -> list[float]:
    total, cdf = 0.0, []
    for rank in range(1, keys + 1):
        total += rank**-s
        cdf.append(total)
    return [c / total for c in cdf]


# ---- measuring ----------------------------------------------------------------------------

_seen = threading.local()


def _record_tier(function: str, hit: Any) -> None:
    _seen.tier = hit.tier


def new_buffers() -> dict[str, array]:
    return {kind: array("q") for kind in KINDS}


class Worker(threading.Thread):
    def __init__(
        self,
        index: int,
        ask: Any,
        cdf: list[float],
        fresh: Iterator[int],
        stop: threading.Event,
        max_calls: int,
        seed: int,
    ) -> None:
        super().__init__(name=f"soak-{index}", daemon=True)
        self.ask, self.cdf, self.fresh, self.stop, self.max_calls = ask, cdf, fresh, stop, max_calls
        self.rng = random.Random(seed * 1000 + index)
        self.buffers = new_buffers()  # swapped out by the reporter at every interval
        self.calls = 0
        self.failures: list[str] = []

    def run(self) -> None:
        ask, cdf, rng, fresh, stop = self.ask, self.cdf, self.rng, self.fresh, self.stop
        clock, seen, random_ = time.perf_counter_ns, _seen, rng.random
        while not stop.is_set() and self.calls < self.max_calls:
            n = bisect_left(cdf, random_()) if random_() < REPEATS else KEYS + next(fresh)
            prompt = PREFIX + str(n)
            seen.tier = None
            t0 = clock()
            try:
                value = ask(prompt, n, model=MODEL, temperature=0)
            except Exception as exc:
                elapsed = clock() - t0
                kind = "failed"
                if len(self.failures) < 5:
                    self.failures.append(f"key {n}: {type(exc).__name__}: {exc}")
            else:
                elapsed = clock() - t0
                kind = seen.tier or "miss"
                if not is_right(value, n):
                    kind = "failed"
                    if len(self.failures) < 5:
                        self.failures.append(
                            f"key {n}: wrong value from {seen.tier or 'the function'}"
                        )
            self.buffers[kind].append(elapsed)
            self.calls += 1


def percentile(ordered: array | list[int], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e3 if ordered else float("nan")


def proc_status() -> dict[str, int]:
    """VmRSS, RssAnon and RssFile of this process, in bytes."""
    out = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile"):
                out[name] = int(rest.split()[0]) * 1024
    return out


def disk_bytes(directory: str) -> dict[str, int]:
    """Apparent bytes of the files under directory: the database, its WAL, and the rest."""
    parts = {"db": 0, "wal": 0, "other": 0}
    for root, _dirs, files in os.walk(directory):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                size = os.stat(os.path.join(root, name)).st_size
                part = "db" if name == "cache.db" else "wal" if name == "cache.db-wal" else "other"
                parts[part] += size
    parts["total"] = sum(parts.values())
    return parts


def disk_rows(directory: str) -> tuple[int, int] | None:
    """(entries, tag rows) in the disk tier's database, read on a short-lived read-only connection."""
    try:
        con = sqlite3.connect(
            f"file:{os.path.join(directory, 'cache.db')}?mode=ro", uri=True, timeout=5
        )
        try:
            entries = con.execute("SELECT count(*) FROM Cache").fetchone()[0]
            tags = con.execute("SELECT count(*) FROM llm_memo_tags").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return entries, tags


class Interval:
    """What one interval measured (latencies in µs)."""

    def __init__(
        self,
        elapsed: float,
        buffers: list[dict[str, array]],
        errors: int,
        rss: dict[str, int],
        disk: dict[str, int],
        rows: tuple[int, int] | None,
        redis_used: int | None,
    ) -> None:
        self.elapsed, self.rss, self.disk, self.errors, self.redis_used = (
            elapsed,
            rss,
            disk,
            errors,
            redis_used,
        )
        self.rows = rows
        self.counts = {kind: sum(len(b[kind]) for b in buffers) for kind in KINDS}
        self.calls = sum(self.counts.values())
        hits = sum(self.counts[t] for t in TIERS)
        lookups = hits + self.counts["miss"]
        self.hit_rate = hits / lookups if lookups else 0.0
        self.latency: dict[str, tuple[float, float, int]] = {}
        for tier in ("memory", "disk", "redis"):
            ordered = sorted(itertools.chain.from_iterable(b[tier] for b in buffers))
            self.latency[tier] = (
                percentile(ordered, 0.50),
                percentile(ordered, 0.99),
                len(ordered),
            )


# ---- redis --------------------------------------------------------------------------------


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A private redis-server on 127.0.0.1 (free port, no persistence, maxmemory + LRU); its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not on PATH: install it with `bash .ci/system-deps`")
    import redis

    with tempfile.TemporaryDirectory(prefix="llm_memo_soak_redis_") as directory:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        process = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxmemory",
                str(REDIS_MAXMEMORY),
                "--maxmemory-policy",
                "allkeys-lru",
                "--dir",
                directory,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            client = redis.Redis(host="127.0.0.1", port=port)
            for _ in range(400):
                with contextlib.suppress(redis.ConnectionError):
                    if client.ping():
                        break
                time.sleep(0.025)
            else:
                sys.exit("redis-server did not answer within 10 s")
            client.close()
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# ---- reporting ----------------------------------------------------------------------------


def header(with_redis: bool) -> str:
    cols = [f"{'time s':>6}", f"{'calls':>7}", f"{'hit %':>5}", f"{'memory':>7}", f"{'disk':>6}"]
    if with_redis:
        cols.append(f"{'redis':>6}")
    cols += [
        f"{'flight':>6}",
        f"{'miss':>6}",
        f"{'mem p50':>7}",
        f"{'mem p99':>7}",
        f"{'disk p50':>8}",
        f"{'disk p99':>8}",
    ]
    if with_redis:
        cols += [f"{'rds p50':>7}", f"{'rds p99':>7}"]
    cols += [
        f"{'RSS MiB':>7}",
        f"{'anon':>5}",
        f"{'disk MiB':>8}",
        f"{'wal':>6}",
        f"{'entries':>7}",
        f"{'tag rows':>8}",
    ]
    if with_redis:
        cols.append(f"{'redis MiB':>9}")
    cols += [f"{'errors':>6}", f"{'failed':>6}"]
    return " ".join(cols)


def us(value: float, digits: int) -> str:
    return "-" if value != value else f"{value:,.{digits}f}"  # NaN: no hit of that tier


def row(i: Interval, with_redis: bool) -> str:
    c, lat = i.counts, i.latency
    cols = [
        f"{i.elapsed:>6.0f}",
        f"{i.calls:>7,}",
        f"{100 * i.hit_rate:>5.1f}",
        f"{c['memory']:>7,}",
        f"{c['disk']:>6,}",
    ]
    if with_redis:
        cols.append(f"{c['redis']:>6,}")
    cols += [
        f"{c['flight']:>6,}",
        f"{c['miss']:>6,}",
        f"{us(lat['memory'][0], 1):>7}",
        f"{us(lat['memory'][1], 0):>7}",
        f"{us(lat['disk'][0], 1):>8}",
        f"{us(lat['disk'][1], 0):>8}",
    ]
    if with_redis:
        cols += [f"{us(lat['redis'][0], 1):>7}", f"{us(lat['redis'][1], 0):>7}"]
    entries, tags = (f"{n:,}" for n in i.rows) if i.rows else ("n/a", "n/a")
    cols += [
        f"{i.rss['VmRSS'] / MiB:>7.1f}",
        f"{i.rss['RssAnon'] / MiB:>5.1f}",
        f"{i.disk['total'] / MiB:>8.1f}",
        f"{i.disk['wal'] / MiB:>6.1f}",
        f"{entries:>7}",
        f"{tags:>8}",
    ]
    if with_redis:
        cols.append(f"{(i.redis_used or 0) / MiB:>9.1f}")
    cols += [f"{i.errors:>6}", f"{c['failed']:>6}"]
    return " ".join(cols)




class LogCounter(logging.Handler):
    """Counts llm_memo's log records at WARNING and above, keeping the first few."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.first) < 5:
            self.first.append(f"{record.levelname}: {record.getMessage()[:200]}")


def disk_tier_report(cache: llm_memo.Cache, directory: str) -> str:
    """Entries, diskcache volume and tag rows of the disk tier at the end (n/a where unknown)."""
    parts = []
    disk = next((t for t in cache.tiers if t.name == "disk"), None)
    if disk is not None:
        with contextlib.suppress(Exception):
            parts.append(f"{len(disk):,} entries")
        with contextlib.suppress(Exception):
            parts.append(f"volume() {disk.volume() / MiB:.1f} MiB")
    try:
        con = sqlite3.connect(
            f"file:{os.path.join(directory, 'cache.db')}?mode=ro", uri=True, timeout=5
        )
        try:
            tags = con.execute("SELECT count(*) FROM llm_memo_tags").fetchone()[0]
            tagged = con.execute("SELECT count(DISTINCT key) FROM llm_memo_tags").fetchone()[0]
            parts.append(f"{tags:,} tag rows for {tagged:,} keys")
        finally:
            con.close()
    except sqlite3.Error as exc:
        parts.append(f"tag rows n/a ({exc})")
    return ", ".join(parts) or "n/a"


def verdict(
    rows: list[Interval],
    max_disk: dict[str, int],
    with_redis: bool,
    redis_peak: int | None,
    out: Any,
) -> None:
    if len(rows) < 2:
        out("verdict: needs at least two intervals")
        return
    first, mid, last = rows[0], rows[len(rows) // 2], rows[-1]
    out("verdict (thresholds are this file's reading aids, not assertions)")

    def change(name: str, a: Interval, b: Interval) -> str:
        x, y = a.rss[name] / MiB, b.rss[name] / MiB
        return f"{x:.1f} -> {y:.1f} MiB ({y - x:+.1f} MiB, {100 * (y - x) / x:+.1f}%)"

    late_pct = 100 * (last.rss["RssAnon"] - mid.rss["RssAnon"]) / mid.rss["RssAnon"]
    out(
        f"  memory: RSS {change('VmRSS', first, last)} first->last interval; "
        f"second half {change('VmRSS', mid, last)}"
    )
    out(
        f"    anonymous (heap) {change('RssAnon', first, last)}, second half {change('RssAnon', mid, last)}  "
        f"[{'steady' if late_pct <= 5 else 'GROWING'}: anonymous <= +5% over the second half; the "
        "first intervals also fill each thread's SQLite page cache, up to 32 MiB per connection]"
    )
    out(
        f"    file-backed {change('RssFile', first, last)}: shared libraries, and cache.db pages SQLite "
        "maps (sqlite_mmap_size 64 MiB), bounded by the database size"
    )
    total = max_disk["total"]
    bound = DISK_LIMIT + DISK_SLACK
    out(
        f"  disk: max {total / MiB:,.1f} MiB (db {max_disk['db'] / MiB:.1f}, wal {max_disk['wal'] / MiB:.1f}, "
        f"other {max_disk['other'] / MiB:.1f}; max of 1 s samples) vs limit {DISK_LIMIT / MiB:.0f} MiB "
        f"+ {DISK_SLACK / MiB:.0f} MiB slack  [{'bounded' if total <= bound else 'OVER'}]; "
        f"last interval {last.disk['total'] / MiB:.1f} MiB"
    )
    if max_disk["wal"] > DISK_SLACK:
        out(
            "    the -wal file is what grew: disk_size_limit bounds the database pages (diskcache's "
            "volume()), not the WAL; SQLite reuses the WAL from its start only after a checkpoint "
            "that no connection's snapshot holds back, and the file keeps its high-water size "
            "(journal_size_limit is -1)"
        )
    if first.rows and last.rows:
        out(
            f"    disk entries {first.rows[0]:,} -> {last.rows[0]:,}, tag rows {first.rows[1]:,} -> "
            f"{last.rows[1]:,} first->last interval (each stored entry has 2 tag rows)"
        )
    if with_redis and redis_peak is not None:
        out(
            f"  redis: used_memory_peak {redis_peak / MiB:.1f} MiB vs maxmemory {REDIS_MAXMEMORY / MiB:.0f} MiB "
            "(allkeys-lru)"
        )
    for tier in ("memory", "disk", *(("redis",) if with_redis else ())):
        p50a, p99a, na = first.latency[tier]
        p50b, p99b, nb = last.latency[tier]
        if na < 100 or nb < 100:
            out(f"  {tier} hit latency: too few hits to compare ({na} first, {nb} last interval)")
            continue
        ratio = p99b / p99a
        out(
            f"  {tier} hit p99: {p99a:.0f} -> {p99b:.0f} µs first->last interval, ratio {ratio:.2f} "
            f"(p50 {p50a:.1f} -> {p50b:.1f} µs, ratio {p50b / p50a:.2f}; {na:,} and {nb:,} hits)  "
            f"[{'not degrading' if ratio <= 1.5 else 'SLOWER'}: p99 ratio <= 1.5]"
        )


# ---- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="run time (default 3)")
    parser.add_argument(
        "--redis", action="store_true", help="add a Redis tier on a private redis-server"
    )
    parser.add_argument("--interval", type=float, default=15.0, help="seconds per row (default 15)")
    parser.add_argument("--threads", type=int, default=4, help="calling threads (default 4)")
    parser.add_argument(
        "--max-calls", type=int, default=50_000_000, help="stop after this many calls"
    )
    parser.add_argument(
        "--miss-ms",
        type=float,
        default=0.0,
        help="milliseconds the function sleeps on a miss, like a model would (default 0)",
    )
    parser.add_argument(
        "--disk-cap-gib",
        type=float,
        default=4.0,
        help="stop early if the cache directory passes this many GiB (default 4)",
    )
    parser.add_argument("--seed", type=int, default=1)
    opts = parser.parse_args(argv)
    if not 0 < opts.minutes <= 24 * 60 or opts.interval <= 0 or opts.threads < 1:
        parser.error("--minutes must be in (0, 1440], --interval > 0, --threads >= 1")
    duration = opts.minutes * 60
    miss_s = opts.miss_ms / 1000
    disk_cap = int(opts.disk_cap_gib * 2**30)

    def out(line: str = "") -> None:
        print(line, flush=True)

    log = LogCounter()
    logging.getLogger("llm_memo").addHandler(log)
    load = os.getloadavg()
    out(
        f"llm_memo soak: {opts.minutes:g} min, {opts.threads} threads, a row every {opts.interval:g} s"
    )
    out(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    out(
        f"llm_memo {llm_memo.__version__} from {os.path.dirname(llm_memo.__file__)} ({git_state()})"
    )
    out(
        f"Cache(tmpdir, memory_maxsize={MEMORY_MAXSIZE // MiB} MiB, disk_size_limit={DISK_LIMIT // MiB} MiB"
        f"{', redis_url=<private redis-server>' if opts.redis else ''}), policy='long'"
    )
    out(
        f"workload: {REPEATS:.0%} Zipf(s={ZIPF_S:g}) over {KEYS:,} keys, {1 - REPEATS:.0%} fresh keys; "
        f"values {MIN_VALUE // 1024}-{MAX_VALUE // 1024} KB (mean {(MIN_VALUE + MAX_VALUE) / 2 / 1024:.1f} KB, "
        f"key space ~{KEYS * (MIN_VALUE + MAX_VALUE) / 2 / MiB:.0f} MiB)"
    )
    out(
        f"the function answers {f'after {opts.miss_ms:g} ms' if miss_s else 'at once'}; latency: µs per "
        "decorated call (perf_counter_ns), classified by the Hit each call produced; includes GIL waits"
    )
    out(
        f"RSS before the cache opens: {proc_status()['VmRSS'] / MiB:.1f} MiB; stops early past "
        f"{opts.disk_cap_gib:g} GiB on disk or {opts.max_calls:,} calls"
    )

    with contextlib.ExitStack() as stack:
        url = stack.enter_context(redis_server()) if opts.redis else None
        directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="llm_memo_soak_"))
        cache_dir = os.path.join(directory, "cache")
        cache = llm_memo.Cache(
            cache_dir,
            memory_maxsize=MEMORY_MAXSIZE,
            disk_size_limit=DISK_LIMIT,
            redis_url=url,
            redis_prefix="soak",
        )
        stack.callback(cache.close)
        info_client = None
        if url is not None:
            import redis

            info_client = redis.Redis.from_url(url)
            stack.callback(info_client.close)
            out(
                f"redis-server {info_client.info('server')['redis_version']} on {url}, "
                f"maxmemory {REDIS_MAXMEMORY // MiB} MiB allkeys-lru, no persistence"
            )

        @llm_memo.llm_cache(cache=cache, policy="long")
        def ask(prompt: str, n: int, model: str = MODEL, temperature: float = 0) -> dict[str, Any]:
            if miss_s:
                time.sleep(miss_s)
            return make_value(n)

        previous_hook = hooks.on_hit
        hooks.on_hit = _record_tier
        stack.callback(setattr, hooks, "on_hit", previous_hook)

        cdf = zipf_cdf(KEYS, ZIPF_S)
        stop = threading.Event()
        fresh = itertools.count()
        per_thread = -(-opts.max_calls // opts.threads)
        workers = [
            Worker(i, ask, cdf, fresh, stop, per_thread, opts.seed) for i in range(opts.threads)
        ]

        def redis_used() -> int | None:
            return (
                int(info_client.info("memory")["used_memory"]) if info_client is not None else None
            )

        out("")
        out(header(opts.redis))
        rows: list[Interval] = []
        max_disk = {"db": 0, "wal": 0, "other": 0, "total": 0}
        stopped_early = ""
        base_errors = ask.cache_info().errors
        began = time.monotonic()
        for w in workers:
            w.start()
        deadline = began + duration

        def next_boundary(after: float) -> float:
            nxt = after + opts.interval
            return deadline if deadline - nxt < opts.interval / 2 else nxt  # no short last row

        boundary = next_boundary(began)
        try:
            while True:
                time.sleep(max(0.0, min(1.0, boundary - time.monotonic())))
                sample = disk_bytes(cache_dir)
                for part, size in sample.items():
                    max_disk[part] = max(max_disk[part], size)
                now = time.monotonic()
                done = not any(w.is_alive() for w in workers)
                if sample["total"] > disk_cap and not stop.is_set():
                    stopped_early = f"the cache directory passed {opts.disk_cap_gib:g} GiB"
                    done = True
                if now < boundary and not done:
                    continue
                if now >= deadline or done:
                    if done and not stopped_early and now < deadline:
                        stopped_early = "every thread reached --max-calls"
                    stop.set()
                    for w in workers:
                        w.join()
                    now = time.monotonic()
                buffers = []
                for w in workers:
                    buffers.append(w.buffers)
                    w.buffers = new_buffers()
                errors = ask.cache_info().errors
                interval = Interval(
                    now - began,
                    buffers,
                    errors - base_errors,
                    proc_status(),
                    sample,
                    disk_rows(cache_dir),
                    redis_used(),
                )
                base_errors = errors
                del buffers
                rows.append(interval)
                out(row(interval, opts.redis))
                if stop.is_set():
                    break
                boundary = next_boundary(boundary)
        except KeyboardInterrupt:
            stop.set()
            for w in workers:
                w.join()
            out("interrupted")
        redis_peak = (
            int(info_client.info("memory")["used_memory_peak"]) if info_client is not None else None
        )

        # ---- totals and the classification check ----
        totals = {kind: sum(r.counts[kind] for r in rows) for kind in KINDS}
        calls = sum(totals.values())
        stats = ask.cache_info()
        seen_tiers = {t: totals[t] for t in TIERS if totals[t]}
        counted_tiers = {t: n for t, n in stats.hits_by_tier.items() if n}
        check_ok = seen_tiers == counted_tiers and totals["miss"] == stats.misses
        out("")
        if stopped_early:
            out(f"STOPPED EARLY: {stopped_early}")
        elapsed = rows[-1].elapsed if rows else 0.0
        out(
            f"total: {calls:,} calls in {elapsed:.0f} s ({calls / max(elapsed, 1e-9):,.0f}/s), "
            f"hit rate {stats.hit_rate:.1%}, {next(fresh):,} fresh keys asked"
        )
        out(
            f"classification check: per-call tiers {seen_tiers}, misses {totals['miss']:,} vs "
            f"cache_info() {counted_tiers}, misses {stats.misses:,}: {'match' if check_ok else 'MISMATCH'}"
        )
        out(
            f"memory tier at end: {len(cache.memory):,} entries, {cache.memory.volume() / MiB:.1f} MiB "
            f"of {MEMORY_MAXSIZE // MiB} MiB"
        )
        out(f"disk tier at end: {disk_tier_report(cache, cache_dir)}")
        out(
            f"cache errors {stats.errors}, llm_memo log records at WARNING+ {log.count}"
            + "".join(f"\n  {line}" for line in log.first)
        )
        failures = [f for w in workers for f in w.failures]
        out(
            f"failed calls (raised or wrong value): {totals['failed']}"
            + "".join(f"\n  {line}" for line in failures[:5])
        )
        out("")
        if rows:
            verdict(rows, max_disk, opts.redis, redis_peak, out)
    load = os.getloadavg()
    out(f"load average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0 if check_ok and not totals["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
