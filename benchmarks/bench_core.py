#!/usr/bin/env python
"""Per-call cost of llm_memo hits and misses, side by side with its peers and with raw floors.

    python benchmarks/bench_core.py            # full run, about 5 minutes
    python benchmarks/bench_core.py --quick    # about 1 minute, fewer samples, no 100k scaling point
    python benchmarks/bench_core.py --json results.json

Sections (each skippable): core (memory hit, disk hit, miss x 3 prompt sizes x contenders),
breakdown (where the 4 KB memory hit spends its time, step by step), scaling (disk hit at
1k/10k/100k stored entries) and process (fresh-process cost of one disk hit, import check).

Every timed call is bracketed by time.perf_counter_ns() with the garbage collector off
(as timeit does); numbers include the timer's own cost, which is printed. Contenders run
one after another inside a round, in a rotating order, and each reports the round with
its lowest median, which filters out bursts from other processes on a small machine.
This file only measures: it asserts nothing about timings (STYLE.md section 14).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import cachetools
import diskcache
import joblib
import orjson
from _provenance import git_state
from cachier import cachier

import llm_memo

MODEL = "gpt-4o-mini"
SIZES = (("200 B", 200, 1), ("4 KB", 4096, 8), ("100 KB", 100 * 1024, 50))
CASES = ("memory", "disk", "miss")
CASE_TITLES = {"memory": "memory hit", "disk": "disk hit", "miss": "miss (key+store)"}

# Samples per contender and round, by case and size; contenders scale these by their `share`.
FULL = dict(
    rounds=4, scale=1.0, scaling=(1_000, 10_000, 100_000), scaling_samples=3000, process_runs=15
)
QUICK = dict(rounds=2, scale=0.1, scaling=(1_000, 10_000), scaling_samples=800, process_runs=5)
SAMPLES = {
    "memory": {"200 B": 20_000, "4 KB": 20_000, "100 KB": 2_000},
    "disk": {"200 B": 5_000, "4 KB": 5_000, "100 KB": 1_000},
    "miss": {"200 B": 1_500, "4 KB": 1_500, "100 KB": 300},
}

# ---- workload ------------------------------------------------------------------------

_WORDS = [
    "the",
    "model",
    "should",
    "answer",
    "a",
    "question",
    "about",
    "cache",
    "keys",
    "and",
    "tokens",
    "when",
    "the",
    "user",
    "asks",
    "for",
    "a",
    "short",
    "summary",
    "of",
    "the",
    "document",
    "please",
    "explain",
    "why",
    "this",
    "function",
    "returns",
    "a",
    "different",
    "value",
    "after",
    "the",
    "prompt",
    "changes",
    "because",
    "latency",
    "matters",
    "in",
    "production",
    "systems",
    "we",
    "need",
    "to",
    "keep",
    "costs",
    "low",
    "while",
    "naïve",
    "retries",
    "café",
    "déjà",
    "vu",
    "—",
    "streaming",
    "responses",
    "include",
    "every",
    "chunk",
    "in",
    "order",
    "so",
    "that",
    "replay",
    "is",
    "exact",
    "and",
    "the",
    "assistant",
    "can",
    "cite",
    "sources",
    "like",
    "RFC",
    "8259",
]


def _text(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(_WORDS)
        if rng.random() < 0.08:
            word += "."
        words.append(word)
        size += len(word) + 1
    text = " ".join(words)[:chars]
    return text[:1].upper() + text[1:]


def make_messages(total: int, count: int, seed: int) -> list[dict[str, str]]:
    """An OpenAI-style conversation of `count` messages whose JSON is about `total` bytes."""
    rng = random.Random(seed)
    roles = (
        ["user"]
        if count == 1
        else ["system"] + ["user" if i % 2 == 0 else "assistant" for i in range(count - 1)]
    )
    empty = len(orjson.dumps([{"role": r, "content": ""} for r in roles]))
    per = max(1, (total - empty) // count)
    messages = [{"role": r, "content": _text(rng, per)} for r in roles]
    missing = total - len(orjson.dumps(messages))
    if missing > 0:
        messages[-1]["content"] += " " + _text(rng, missing)
    while len(orjson.dumps(messages)) > total:
        messages[-1]["content"] = messages[-1]["content"][:-1]
    return messages


def variant(messages: list[dict[str, str]], tag: str) -> list[dict[str, str]]:
    """The same conversation with a different last turn of the same length (a fresh key)."""
    last = messages[-1]
    suffix = f" #{tag}"
    return [
        *messages[:-1],
        {"role": last["role"], "content": last["content"][: -len(suffix)] + suffix},
    ]


ANSWER = _text(random.Random(7), 500)


def floor_key(messages: Any) -> str:
    return hashlib.sha256(orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _json_key(messages: Any, **kw: Any) -> str:
    return hashlib.sha256(json.dumps([messages, kw], sort_keys=True).encode()).hexdigest()


# ---- timing --------------------------------------------------------------------------


def sample(
    call: Callable[[Any], Any], args: Iterable[Any], setup: Callable[[], Any] | None = None
) -> list[int]:
    """Nanoseconds of each call(arg); setup() runs before each call, outside the timing."""
    pc = time.perf_counter_ns
    out: list[int] = []
    add = out.append
    gc.disable()  # callers collect between blocks: a full collection here would cost more than the block
    try:
        if setup is None:
            for arg in args:
                t0 = pc()
                call(arg)
                add(pc() - t0)
        else:
            for arg in args:
                setup()
                t0 = pc()
                call(arg)
                add(pc() - t0)
    finally:
        gc.enable()
    return out


def summarize(ns: Sequence[int]) -> tuple[float, float]:
    """(median, p99) in microseconds."""
    ordered = sorted(ns)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return statistics.median(ordered) / 1e3, p99 / 1e3


def per_call_ns(
    steps: Sequence[Callable[[], Any]], target_s: float = 0.01, repeats: int = 9
) -> list[float]:
    """Best per-call ns of each step, timed in batches of about target_s, the steps interleaved
    (round-robin over `repeats`) so a burst of load from elsewhere hits them alike."""
    pc = time.perf_counter_ns
    loops = []
    for fn in steps:
        n = 10
        while True:
            t0 = pc()
            for _ in range(n):
                fn()
            took = pc() - t0
            if took > target_s * 1e9 / 4 or n > 1_000_000:
                break
            n *= 4
        loops.append(max(1, int(n * target_s * 1e9 / max(took, 1))))
    best = [float("inf")] * len(steps)
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            for i, fn in enumerate(steps):
                n = loops[i]
                t0 = pc()
                for _ in range(n):
                    fn()
                best[i] = min(best[i], (pc() - t0) / n)
    finally:
        gc.enable()
    return best


# ---- contenders ----------------------------------------------------------------------


@dataclass
class Contender:
    case: str
    name: str
    call: Callable[[Any], Any]
    share: float = 1.0  # fraction of the case's sample count (slow contenders take fewer)
    setup: Callable[[], Any] | None = None
    stats: Callable[[], Any] | None = None  # llm_memo: cache_info, checked after timing
    expect_tier: str | None = None
    note: str = ""
    verified: int = 0
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


def _ask_body(messages: Any, model: str = MODEL, temperature: float = 0) -> str:
    return ANSWER


def build_contenders(root: str, notes: list[str]) -> tuple[list[Contender], Callable[[Any], None]]:
    """Every contender on fresh directories under root; hits and misses use separate stores."""

    def directory(name: str) -> str:
        path = os.path.join(root, name)
        os.makedirs(path, exist_ok=True)
        return path

    def with_kwargs(fn: Callable[..., Any]) -> Callable[[Any], Any]:
        return lambda m: fn(m, model=MODEL, temperature=0)

    def llm(cache: llm_memo.Cache) -> Any:
        @llm_memo.llm_cache(cache=cache, policy="long")
        def ask(messages, model=MODEL, temperature=0):
            return ANSWER

        return ask

    def cachetools_fn() -> Any:
        @cachetools.cached(cachetools.LRUCache(maxsize=1_000_000), key=_json_key)
        def ask(messages, model=MODEL, temperature=0):
            return ANSWER

        return ask

    def diskcache_fn(path: str) -> Any:
        @diskcache.Cache(path).memoize()
        def ask(messages, model=MODEL, temperature=0):
            return ANSWER

        return ask

    def joblib_fn(path: str) -> Any:
        return joblib.Memory(path, verbose=0).cache(_ask_body)

    def cachier_fn(path: str, reload: bool) -> Any:
        fn = cachier(cache_dir=path, pickle_reload=reload)(_ask_body)
        try:
            fn([{"role": "user", "content": "probe"}], model=MODEL, temperature=0)
            fn.clear_cache()
        except TypeError:
            fn = cachier(
                cache_dir=path, pickle_reload=reload, hash_func=lambda a, k: _json_key(*a, **k)
            )(_ask_body)
            notes.append(
                "cachier: default hash_func refused list-of-dict args; given a json+sha256 hash_func"
            )
        return fn

    # memory hits
    store: dict[str, str] = {}

    def memory_floor(messages: Any) -> str:
        return store[
            hashlib.sha256(orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)).hexdigest()
        ]

    mem_cache = llm_memo.Cache(directory("llm_mem"))
    llm_mem = llm(mem_cache)

    # disk hits: floors hold exactly the workload's entries
    sq_path = os.path.join(directory("sqlite_floor"), "floor.db")
    con = sqlite3.connect(sq_path, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("CREATE TABLE t (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
    dc_floor = diskcache.Cache(directory("diskcache_floor"))
    keys: dict[int, str] = {}  # id(messages) -> precomputed key for the raw floors

    def sqlite_floor(messages: Any) -> Any:
        return orjson.loads(
            con.execute("SELECT value FROM t WHERE key = ?", (keys[id(messages)],)).fetchone()[0]
        )

    def diskcache_get(messages: Any) -> Any:
        return orjson.loads(dc_floor.get(keys[id(messages)]))

    def diskcache_get_keyed(messages: Any) -> Any:
        return orjson.loads(dc_floor.get(floor_key(messages)))

    def fill_floors(messages: Any) -> None:
        key = keys[id(messages)] = floor_key(messages)
        store[key] = ANSWER
        con.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (key, orjson.dumps(ANSWER)))
        dc_floor.set(key, orjson.dumps(ANSWER))

    disk_cache = llm_memo.Cache(directory("llm_disk"))
    llm_disk = llm(disk_cache)
    nomem_cache = llm_memo.Cache(directory("llm_nomem"), memory_maxsize=0)
    llm_nomem = llm(nomem_cache)
    notes.append(
        "llm_memo disk hit: 'memory cleared' empties cache.memory before each call (outside the timing), "
        "so the hit includes promotion into memory; 'memory_maxsize=0' keeps nothing in memory"
    )

    llm_miss = llm(llm_memo.Cache(directory("llm_miss")))
    llm_miss_mem = llm(llm_memo.Cache(directory("llm_miss_memonly"), disk=False))

    contenders = [
        Contender("memory", "floor: orjson+sha256+dict", memory_floor),
        Contender(
            "memory",
            "llm_memo",
            with_kwargs(llm_mem),
            stats=llm_mem.cache_info,
            expect_tier="memory",
        ),
        Contender("memory", "cachetools.cached (json+sha256 key)", with_kwargs(cachetools_fn())),
        Contender(
            "memory",
            "cachier pickle, pickle_reload=False",
            with_kwargs(cachier_fn(directory("cachier_mem"), False)),
            share=0.25,
        ),
        Contender("disk", "floor: sqlite3 SELECT + orjson.loads", sqlite_floor),
        Contender("disk", "diskcache.Cache.get + orjson.loads", diskcache_get),
        Contender("disk", "  same, key computed (orjson+sha256)", diskcache_get_keyed),
        Contender(
            "disk",
            "llm_memo (memory cleared)",
            with_kwargs(llm_disk),
            setup=disk_cache.memory.clear,
            stats=llm_disk.cache_info,
            expect_tier="disk",
        ),
        Contender(
            "disk",
            "llm_memo (memory_maxsize=0)",
            with_kwargs(llm_nomem),
            stats=llm_nomem.cache_info,
            expect_tier="disk",
        ),
        Contender("disk", "diskcache memoize", with_kwargs(diskcache_fn(directory("dc_hit")))),
        Contender(
            "disk",
            "joblib.Memory.cache",
            with_kwargs(joblib_fn(directory("joblib_hit"))),
            share=0.2,
        ),
        Contender(
            "disk",
            "cachier pickle (pickle_reload=True)",
            with_kwargs(cachier_fn(directory("cachier_disk"), True)),
            share=0.2,
        ),
        Contender(
            "miss",
            "llm_memo (memory + disk)",
            with_kwargs(llm_miss),
            share=0.5,
            stats=llm_miss.cache_info,
        ),
        Contender(
            "miss",
            "llm_memo (memory only, disk=False)",
            with_kwargs(llm_miss_mem),
            stats=llm_miss_mem.cache_info,
        ),
        Contender("miss", "cachetools.cached (json+sha256 key)", with_kwargs(cachetools_fn())),
        Contender(
            "miss", "diskcache memoize", with_kwargs(diskcache_fn(directory("dc_miss"))), share=0.5
        ),
        Contender(
            "miss",
            "joblib.Memory.cache",
            with_kwargs(joblib_fn(directory("joblib_miss"))),
            share=0.1,
        ),
        Contender(
            "miss",
            "cachier pickle",
            with_kwargs(cachier_fn(directory("cachier_miss"), True)),
            share=0.04,
        ),
    ]
    return contenders, fill_floors


# ---- section: core -------------------------------------------------------------------


def run_core(
    cfg: dict[str, Any], root: str, notes: list[str], log: Callable[[str], None]
) -> list[Contender]:
    contenders, fill_floors = build_contenders(root, notes)
    workloads = {
        label: make_messages(total, count, seed=i) for i, (label, total, count) in enumerate(SIZES)
    }
    for label, messages in workloads.items():
        fill_floors(messages)
        for c in contenders:
            if c.case != "miss":
                got = c.call(messages)  # first call stores (or just reads, for the floors)
                assert got == ANSWER, (c.name, label, got)
                assert c.call(messages) == ANSWER, (c.name, label)
    sizes = ", ".join(
        f"{label}: {len(orjson.dumps(m))} B in {len(m)} messages" for label, m in workloads.items()
    )
    notes.append(f"workload: {sizes}; answer {len(ANSWER)} chars")

    spent: dict[tuple[str, str], float] = {}
    for rnd in range(cfg["rounds"]):
        start = time.perf_counter()
        for label, messages in workloads.items():
            gc.collect()
            for case in CASES:
                group = [c for c in contenders if c.case == case]
                shift = rnd % len(group)
                for c in group[shift:] + group[:shift]:
                    began = time.perf_counter()
                    n = max(20, int(SAMPLES[case][label] * cfg["scale"] * c.share))
                    warm = max(3, n // 20)
                    if case == "miss":
                        args: Iterable[Any] = [variant(messages, f"{rnd}-{i}") for i in range(n)]
                        warm_args: Iterable[Any] = [
                            variant(messages, f"w{rnd}-{i}") for i in range(warm)
                        ]
                    else:
                        args, warm_args = [messages] * n, [messages] * warm
                    sample(c.call, warm_args, c.setup)
                    before = c.stats() if c.stats else None
                    times = sample(c.call, args, c.setup)
                    if before is not None:
                        _check_tiers(c, before, c.stats(), n, case)
                    median, p99 = summarize(times)
                    slot = c.results.setdefault(label, {"rounds": []})
                    slot["rounds"].append(round(median, 3))
                    if "median_us" not in slot or median < slot["median_us"]:
                        slot.update(median_us=median, p99_us=p99, n=n)
                    spent[c.case, c.name] = (
                        spent.get((c.case, c.name), 0.0) + time.perf_counter() - began
                    )
        log(f"core round {rnd + 1}/{cfg['rounds']} took {time.perf_counter() - start:.0f} s")
    if os.environ.get("BENCH_DEBUG"):
        for (case, name), s in sorted(spent.items(), key=lambda kv: -kv[1]):
            log(f"  {s:6.1f} s  {case:<7}{name}")
    return contenders


def _check_tiers(c: Contender, before: Any, after: Any, n: int, case: str) -> None:
    """Fail loudly if an llm_memo contender was not served the way its row claims."""
    if case == "miss":
        if after.misses - before.misses != n:
            raise RuntimeError(
                f"{c.name}: expected {n} misses, cache_info went {before} -> {after}"
            )
        c.verified += n
        c.note = f"verified: all {c.verified} timed calls were misses (cache_info().misses)"
        return
    delta = {
        t: after.hits_by_tier.get(t, 0) - before.hits_by_tier.get(t, 0) for t in after.hits_by_tier
    }
    served = {t: d for t, d in delta.items() if d}
    if served != {c.expect_tier: n}:
        raise RuntimeError(f"{c.name}: expected {n} hits from {c.expect_tier}, got {served}")
    c.verified += n
    c.note = f"verified: all {c.verified} timed calls were hits from the {c.expect_tier} tier (cache_info().hits_by_tier)"


def print_core(
    contenders: list[Contender], timer_ns: float, out: Callable[[str], None]
) -> dict[str, Any]:
    labels = [label for label, _, _ in SIZES]
    name_w = max(len(c.name) for c in contenders) + 2
    head1 = f"{'case':<18}{'contender':<{name_w}}" + "".join(f"{label:>20}" for label in labels)
    head2 = f"{'':<18}{'':<{name_w}}" + "".join(f"{'median':>10}{'p99':>10}" for _ in labels)
    out(head1)
    out(head2)
    out("-" * len(head1))
    for case in CASES:
        first = True
        for c in (c for c in contenders if c.case == case):
            cells = ""
            for label in labels:
                r = c.results.get(label)
                cells += (
                    f"{_fmt(r['median_us']):>10}{_fmt(r['p99_us']):>10}"
                    if r
                    else f"{'-':>10}{'-':>10}"
                )
            out(f"{CASE_TITLES[case] if first else '':<18}{c.name:<{name_w}}{cells}")
            first = False
        out("")
    out(f"(µs per call; timer pair + call overhead ≈ {timer_ns:.0f} ns is included in every cell)")
    for c in contenders:
        if c.note:
            out(f"  {c.name.strip()} [{c.case}]: {c.note}")

    def med(case: str, name: str) -> dict[str, float]:
        c = next(c for c in contenders if c.case == case and c.name == name)
        return {label: c.results[label]["median_us"] for label in labels if label in c.results}

    ratios: dict[str, dict[str, float]] = {}

    def ratio(title: str, top: dict[str, float], bottom: dict[str, float]) -> None:
        values = {
            label: top[label] / bottom[label]
            for label in labels
            if label in top and label in bottom
        }
        ratios[title] = values
        out(f"  {title:<58}" + "".join(f"{label:>8} {v:6.2f}x" for label, v in values.items()))

    out("")
    out("ratios (best-of-rounds medians):")
    llm_mem, llm_disk = med("memory", "llm_memo"), med("disk", "llm_memo (memory cleared)")
    llm_nomem = med("disk", "llm_memo (memory_maxsize=0)")
    ratio("llm_memo memory hit / memory floor", llm_mem, med("memory", "floor: orjson+sha256+dict"))
    ratio(
        "llm_memo memory hit / cachetools.cached",
        llm_mem,
        med("memory", "cachetools.cached (json+sha256 key)"),
    )
    ratio(
        "llm_memo disk hit (memory cleared) / bare diskcache get",
        llm_disk,
        med("disk", "diskcache.Cache.get + orjson.loads"),
    )
    ratio(
        "llm_memo disk hit (memory_maxsize=0) / bare diskcache get",
        llm_nomem,
        med("disk", "diskcache.Cache.get + orjson.loads"),
    )
    ratio(
        "llm_memo disk hit (memory cleared) / keyed diskcache get",
        llm_disk,
        med("disk", "  same, key computed (orjson+sha256)"),
    )
    ratio(
        "llm_memo disk hit (memory cleared) / sqlite3 floor",
        llm_disk,
        med("disk", "floor: sqlite3 SELECT + orjson.loads"),
    )
    ratio(
        "diskcache memoize / llm_memo disk hit (memory cleared)",
        med("disk", "diskcache memoize"),
        llm_disk,
    )
    ratio(
        "joblib.Memory / llm_memo disk hit (memory cleared)",
        med("disk", "joblib.Memory.cache"),
        llm_disk,
    )
    ratio(
        "cachier pickle (reload) / llm_memo disk hit (memory cleared)",
        med("disk", "cachier pickle (pickle_reload=True)"),
        llm_disk,
    )
    llm_miss = med("miss", "llm_memo (memory + disk)")
    ratio(
        "llm_memo miss (memory+disk) / diskcache memoize miss",
        llm_miss,
        med("miss", "diskcache memoize"),
    )
    ratio(
        "joblib.Memory miss / llm_memo miss (memory+disk)",
        med("miss", "joblib.Memory.cache"),
        llm_miss,
    )
    ratio(
        "cachier pickle miss / llm_memo miss (memory+disk)", med("miss", "cachier pickle"), llm_miss
    )
    ratio(
        "llm_memo miss (memory only) / cachetools.cached miss",
        med("miss", "llm_memo (memory only, disk=False)"),
        med("miss", "cachetools.cached (json+sha256 key)"),
    )
    return ratios


def _fmt(us: float) -> str:
    return f"{us:.2f}" if us < 100 else f"{us:.1f}" if us < 1000 else f"{us:,.0f}"


def timer_overhead() -> float:
    noop = lambda m: None  # noqa: E731
    return statistics.median(sample(noop, [None] * 20_000))


# ---- section: breakdown --------------------------------------------------------------


def run_breakdown(root: str, out: Callable[[str], None]) -> dict[str, list[dict[str, Any]]]:
    """Per-step cost of the 4 KB memory hit and disk hit, each step timed alone in batches.

    Reaches into llm_memo internals, so a step whose internals moved prints 'n/a'. Steps in
    a tight loop run with warm CPU caches, so the steps of a path sum to less than the path.
    """
    import marshal

    import llm_memo._logic.canonical as _canonical
    import llm_memo._logic.codec as _codec
    import llm_memo._logic.guard as _guard
    import llm_memo._storage.cache as _cache
    import llm_memo._storage.envelope as _envelope

    cache = llm_memo.Cache(os.path.join(root, "breakdown"))

    @llm_memo.llm_cache(cache=cache, policy="long")
    def ask(messages, model=MODEL, temperature=0):
        return ANSWER

    messages = make_messages(4096, 8, seed=1)
    ask(messages, model=MODEL, temperature=0)
    args, kwargs = (messages,), {"model": MODEL, "temperature": 0}
    floor = diskcache.Cache(os.path.join(root, "breakdown_floor"))
    env: dict[str, Any] = {}
    try:
        engine = env["engine"] = ask._self_engine
        env["wrapped"] = ask.__wrapped__
        arguments = env["arguments"] = engine.keys.binder.bind(args, kwargs)
        keyed = env["keyed"] = engine.keys.keyed_arguments(arguments, None)
        env["encoded"] = _canonical.encode_arguments(keyed)
        key = env["key"] = engine.keys.key(keyed)
        data = env["data"] = cache.memory.get(key)
        header, meta, value_json = env["unpacked"] = _codec.unpack(data, verify=False)
        env["hit"] = _cache.Hit(ANSWER, "memory", header.latency, header.tokens, header.cost)
        env["plan"] = engine.plan(None, args, kwargs)
        disk = env["disk"] = cache.tiers[1]
        env["diskcache"] = _diskcache_of(disk)
        floor.set(key, orjson.dumps(ANSWER))
    except Exception as exc:  # internals moved: the core table still stands
        out(f"breakdown unavailable: {type(exc).__name__}: {exc}")
        return {}

    def hash_only() -> str:
        h = engine.keys._hasher.copy()
        h.update(env["encoded"])
        return h.hexdigest()

    def guard() -> Any:
        temperature = _guard.find_temperature(arguments)
        return _guard.decide(
            engine.mode, _guard.is_nondeterministic(temperature, default=engine.default_temperature)
        )

    def values() -> list[Any]:
        return [v for v in keyed.values() if type(v) not in (str, int, float, bool, type(None))]

    def disk_hit() -> Any:
        cache.memory.clear()
        return ask(messages, model=MODEL, temperature=0)

    def lower() -> Any:
        cache.memory.clear()
        return cache.get_lower(key)

    memory_steps: list[tuple[str, Callable[[], Any]]] = [
        ("empty lambda (subtracted from every row)", lambda: None),
        (
            "whole hit: ask(messages, model=..., temperature=0)",
            lambda: ask(messages, model=MODEL, temperature=0),
        ),
        (
            "Engine.call without the wrapt proxy",
            lambda: engine.call(env["wrapped"], None, args, kwargs),
        ),
        ("  current_cache()", lambda: engine.current_cache()),
        ("  plan(): bind + guard + keyed + key", lambda: engine.plan(None, args, kwargs)),
        ("    Binder.bind", lambda: engine.keys.binder.bind(args, kwargs)),
        ("    guard: find_temperature + is_nondeterministic + decide", guard),
        ("    KeyMaker.keyed_arguments", lambda: engine.keys.keyed_arguments(arguments, None)),
        ("    KeyMaker.key (encode + sha256)", lambda: engine.keys.key(keyed)),
        ("      _canonical.encode_arguments", lambda: _canonical.encode_arguments(keyed)),
        ("        ref: is_plain(keyed) walk", lambda: _canonical.is_plain(keyed)),
        (
            "        ref: orjson.dumps(keyed, OPT_SORT_KEYS)",
            lambda: orjson.dumps(keyed, option=orjson.OPT_SORT_KEYS),
        ),
        ("        ref: marshal.dumps(non-scalar values)", lambda: marshal.dumps(values())),
        (
            "        ref: b'null' in json or b'\\\\u0000' in json",
            lambda: b"null" in env["encoded"] or b"\\u0000" in env["encoded"],
        ),
        ("        ref: b'\\\\' in json (one byte: memchr)", lambda: b"\\" in env["encoded"]),
        ("      sha256: copy + update + hexdigest", hash_only),
        ("  Cache.get (memory hit)", lambda: cache.get(key, engine.counters)),
        ("    clock()", lambda: cache.clock()),
        ("    MemoryTier.get (lock + TLRUCache)", lambda: cache.memory.get(key)),
        ("    codec.unpack(verify=False)", lambda: _codec.unpack(data, verify=False)),
        ("    codec.decode_value", lambda: _codec.decode_value(value_json, header.flags)),
        (
            "    Hit(...)",
            lambda: _cache.Hit(ANSWER, "memory", header.latency, header.tokens, header.cost),
        ),
        ("  count_hit (counters + logger check)", lambda: engine.count_hit(cache, env["hit"], env["plan"])),
        (
            "floor: orjson.dumps(messages, OPT_SORT_KEYS)",
            lambda: orjson.dumps(messages, option=orjson.OPT_SORT_KEYS),
        ),
        ("floor: sha256(4 KB).hexdigest()", lambda: hashlib.sha256(env["encoded"]).hexdigest()),
        ("floor: whole (dumps + sha256 + dict lookup)", lambda: {key: 1}.get(floor_key(messages))),
    ]
    disk_steps: list[tuple[str, Callable[[], Any]]] = [
        ("empty lambda (subtracted from every row)", lambda: None),
        ("memory.clear() (in every row below)", cache.memory.clear),
        ("whole hit: clear + ask(...)", disk_hit),
        ("  clear + Cache.get_lower (disk -> unpack -> decode -> promote)", lower),
        ("    DiskTier.get", lambda: disk.get(key)),
        ("      diskcache.Cache.get (llm_memo's Disk)", lambda: env["diskcache"].get(key)),
        (
            "      os.stat (the tier's inode check)",
            lambda: os.stat(os.path.join(disk.directory, "cache.db")),
        ),
        ("    codec.unpack(verify=True: crc32)", lambda: _codec.unpack(data)),
        (
            "    MemoryTier.set (promotion: tags read only if an invalidation asks)",
            lambda: cache.memory.set(key, data, header.expires_at, None),
        ),
        ("    ref: tags_of(metadata), paid when promoting past memory", lambda: _envelope.tags_of(meta)),
        (f"  (metadata {len(meta)} B of the {len(data)} B envelope)", lambda: None),
        ("floor: diskcache.Cache.get + orjson.loads", lambda: orjson.loads(floor.get(key))),
    ]
    result = {}
    for title, steps in (("memory hit", memory_steps), ("disk hit, memory cleared", disk_steps)):
        out(
            f"{'step (4 KB ' + title + '; interleaved 1 ms batches, best of 60)':<64}{'µs/call':>10}"
        )
        result[title] = _time_steps(steps, out)
        out("")
    return result


def _time_steps(
    steps: list[tuple[str, Callable[[], Any]]], out: Callable[[str], None]
) -> list[dict[str, Any]]:
    runnable = []
    for name, fn in steps:
        try:
            fn()
            runnable.append((name, fn))
        except Exception as exc:
            out(f"{name:<64}{'n/a':>10}  ({type(exc).__name__}: {exc})")
    timings = per_call_ns([fn for _, fn in runnable], target_s=0.001, repeats=60)
    rows = []
    for i, ((name, _), ns) in enumerate(zip(runnable, timings, strict=True)):
        us = (ns if i == 0 else ns - timings[0]) / 1e3
        out(f"{name:<64}{us:>10.3f}")
        rows.append({"step": name.strip(), "us": round(us, 4)})
    return rows


def _diskcache_of(tier: Any) -> diskcache.Cache | None:
    """The diskcache.Cache a disk tier holds, found without naming its attribute."""
    for value in vars(tier).values():
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, diskcache.Cache):
                return item
    return None


# ---- section: scaling ----------------------------------------------------------------


def run_scaling(cfg: dict[str, Any], root: str, out: Callable[[str], None]) -> dict[str, Any]:
    """Disk-hit latency as the store grows (4 KB messages, a random stored key per call)."""
    cache = llm_memo.Cache(os.path.join(root, "scaling"), memory_maxsize=0)

    @llm_memo.llm_cache(cache=cache, policy="long")
    def ask(messages, model=MODEL, temperature=0):
        return ANSWER

    base = make_messages(4096, 8, seed=1)
    tags = (f"fn:{ask.cache_function_name}", f"model:{MODEL}")
    disk = cache.tiers[-1]
    first = ask.cache_key(base, model=MODEL, temperature=0)
    cache.set(first, ANSWER, lifetime=None, tags=tags)
    envelope = disk.get(
        first
    )  # the tier's bytes for one entry; every filled key gets the same bytes
    batch = _transaction(disk)
    out(
        "fill: Tier.set(key, envelope, None, tags) per key, "
        + ("1000 rows per diskcache transaction" if batch is not None else "one commit per row")
    )
    stored: list[list[dict[str, str]]] = []
    rng = random.Random(3)
    results: dict[str, Any] = {}
    out(f"{'entries':>9}{'fill s':>9}{'median µs':>12}{'p99 µs':>10}{'served':>16}")
    for target in cfg["scaling"]:
        start = time.perf_counter()
        while len(stored) < target:
            chunk = [
                variant(base, f"s{len(stored) + i}") for i in range(min(1000, target - len(stored)))
            ]
            keys = [ask.cache_key(m, model=MODEL, temperature=0) for m in chunk]
            with batch() if batch is not None else contextlib.nullcontext():
                for key in keys:
                    disk.set(key, envelope, None, tags)
            stored.extend(chunk)
        fill = time.perf_counter() - start
        n = cfg["scaling_samples"]
        call = lambda m: ask(m, model=MODEL, temperature=0)  # noqa: E731
        sample(call, [rng.choice(stored) for _ in range(max(10, n // 10))])
        before = ask.cache_info().hits_by_tier.get("disk", 0)
        median, p99 = summarize(sample(call, [rng.choice(stored) for _ in range(n)]))
        served = ask.cache_info().hits_by_tier.get("disk", 0) - before
        results[str(target)] = {"median_us": median, "p99_us": p99, "n": n, "fill_s": fill}
        out(f"{target:>9,}{fill:>9.1f}{median:>12.1f}{p99:>10.1f}{f'{served}/{n} disk':>16}")
    first, last = cfg["scaling"][0], cfg["scaling"][-1]
    r = results[str(last)]["median_us"] / results[str(first)]["median_us"]
    results["ratio"] = {f"{last // 1000}k/{first // 1000}k": r}
    out(f"median ratio {last // 1000}k/{first // 1000}k: {r:.2f}x")
    return results


def _transaction(tier: Any) -> Callable[[], Any] | None:
    """transact() of the diskcache.Cache a disk tier holds (None: commit row by row)."""
    found = _diskcache_of(tier)
    return None if found is None else found.transact


# ---- section: fresh process ----------------------------------------------------------

_LLM_SCRIPT = """\
import os, sys
import llm_memo
MESSAGES = {messages!r}
@llm_memo.llm_cache(cache=llm_memo.Cache(sys.argv[1]), policy="long")
def ask(messages, model="gpt-4o-mini", temperature=0):
    if os.environ.get("BENCH_FILL"):
        return {answer!r}
    raise SystemExit("miss")
assert ask(MESSAGES, model="gpt-4o-mini", temperature=0) == {answer!r}
"""
_DC_SCRIPT = """\
import os, sys
import diskcache
MESSAGES = {messages!r}
@diskcache.Cache(sys.argv[1]).memoize()
def ask(messages, model="gpt-4o-mini", temperature=0):
    if os.environ.get("BENCH_FILL"):
        return {answer!r}
    raise SystemExit("miss")
assert ask(MESSAGES, model="gpt-4o-mini", temperature=0) == {answer!r}
"""
FORBIDDEN = (
    "openai",
    "anthropic",
    "redis",
    "numpy",
    "pandas",
    "pydantic",
    "IPython",
    "tqdm",
    "httpx",
    "requests",
)
HEAVY_STDLIB = (
    "asyncio",
    "ssl",
    "socket",
    "subprocess",
    "concurrent",
    "email",
    "http",
    "urllib",
    "importlib.metadata",
    "zipfile",
    "csv",
    "sqlite3",
    "diskcache",
    "multiprocessing",
    "tempfile",
    "shutil",
    "pickle",
    "decimal",
    "uuid",
    "logging",
)


def run_process(cfg: dict[str, Any], root: str, out: Callable[[str], None]) -> dict[str, Any]:
    messages = make_messages(4096, 8, seed=1)
    scripts = {
        "python -c pass": ("pass", None),
        "import llm_memo": ("import llm_memo", None),
        "import diskcache": ("import diskcache", None),
        "llm_memo: one disk hit": (
            _LLM_SCRIPT.format(messages=messages, answer=ANSWER),
            os.path.join(root, "proc_llm"),
        ),
        "diskcache memoize: one disk hit": (
            _DC_SCRIPT.format(messages=messages, answer=ANSWER),
            os.path.join(root, "proc_dc"),
        ),
    }
    for script, directory in scripts.values():
        if directory is not None:
            _run([sys.executable, "-c", script, directory], root, fill=True)
            _run(
                [sys.executable, "-c", script, directory], root
            )  # cold .pyc and page cache out of the way
    runs: dict[str, list[float]] = {name: [] for name in scripts}
    for _ in range(cfg["process_runs"]):
        for name, (script, directory) in scripts.items():
            cmd = [sys.executable, "-c", script] + ([directory] if directory else [])
            start = time.perf_counter()
            _run(cmd, root)
            runs[name].append((time.perf_counter() - start) * 1e3)
    med = {name: statistics.median(v) for name, v in runs.items()}
    py = med["python -c pass"]
    out(
        f"{'fresh process (median of ' + str(cfg['process_runs']) + ' runs)':<40}{'ms':>9}{'minus python start':>20}"
    )
    for name, ms in med.items():
        out(f"{name:<40}{ms:>9.1f}{ms - py:>20.1f}")
    llm, dc = med["llm_memo: one disk hit"], med["diskcache memoize: one disk hit"]
    ratio, net = llm / dc, (llm - py) / max(dc - py, 1e-9)
    out(
        f"ratio llm_memo / diskcache memoize: {ratio:.2f}x wall, {net:.2f}x after interpreter start"
    )
    out("")
    imports = import_report(root, out)
    return {"median_ms": med, "ratio": ratio, "ratio_net": net, "imports": imports}


def _run(cmd: list[str], cwd: str, fill: bool = False) -> subprocess.CompletedProcess[str]:
    env = (
        dict(os.environ, BENCH_FILL="1")
        if fill
        else {k: v for k, v in os.environ.items() if k != "BENCH_FILL"}
    )
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{cmd[:2]} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done


def import_report(root: str, out: Callable[[str], None]) -> dict[str, Any]:
    probe = (
        "import sys, json; before = set(sys.modules); import llm_memo; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    new = set(json.loads(_run([sys.executable, "-c", probe], root).stdout))
    forbidden = sorted(m for m in FORBIDDEN if m in new)
    heavy = [m for m in HEAVY_STDLIB if m in new]
    out(f"`import llm_memo` adds {len(new)} modules to sys.modules")
    out(
        f"  optional/heavy third-party present: {', '.join(forbidden) if forbidden else 'none'} "
        f"(checked: {', '.join(FORBIDDEN)})"
    )
    # -X importtime: best of 3 per module, and who pulled each heavy module in.
    best: dict[str, int] = {}
    parents: dict[str, str] = {}
    for _ in range(3):
        lines = _run(
            [sys.executable, "-X", "importtime", "-c", "import llm_memo"], root
        ).stderr.splitlines()
        rows = []
        for line in lines:
            parts = line.split("|")
            if len(parts) != 3 or not parts[1].strip().isdigit():
                continue
            name = parts[2].rstrip()
            rows.append((len(name) - len(name.lstrip()), name.strip(), int(parts[1])))
        for i, (depth, name, cum) in enumerate(rows):
            best[name] = min(best.get(name, cum), cum)
            parent = next((n for d, n, _ in rows[i + 1 :] if d < depth), "")
            parents[name] = parent
    total = best.get("llm_memo", 0)
    out(f"  -X importtime, import llm_memo: {total:,} µs cumulative (best of 3)")
    out(f"  heavy stdlib present: {', '.join(heavy) if heavy else 'none'}")
    for m in heavy:
        if m in best:
            chain = [m]
            while parents.get(chain[-1]) and len(chain) < 8:
                chain.append(parents[chain[-1]])
            out(f"    {m:<20}{best[m]:>9,} µs   via {' <- '.join(chain[1:])}")
    # What llm_memo's own modules import directly, largest first.
    direct = sorted(
        (
            (cum, n)
            for n, cum in best.items()
            if not n.startswith("llm_memo") and parents.get(n, "").startswith("llm_memo")
        ),
        reverse=True,
    )
    out("  largest direct imports of llm_memo modules (cumulative):")
    for cum, n in direct[:8]:
        out(f"    {n:<20}{cum:>9,} µs   imported by {parents[n]}")
    return {
        "new_modules": len(new),
        "forbidden_present": forbidden,
        "heavy_present": heavy,
        "importtime_us": {m: best[m] for m in ["llm_memo", *heavy] if m in best},
    }


# ---- main ----------------------------------------------------------------------------


def versions() -> str:
    names = ("llm_memo", "cachetools", "diskcache", "joblib", "cachier", "orjson", "wrapt")
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} ?")
    return ", ".join(found)




def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (about a minute)")
    parser.add_argument("--json", metavar="FILE", help="also save the results as JSON")
    parser.add_argument(
        "--rounds", type=int, help="rounds of the core section (default 4, quick 2)"
    )
    for section in ("core", "breakdown", "scaling", "process"):
        parser.add_argument(
            f"--skip-{section}", action="store_true", help=f"skip the {section} section"
        )
    opts = parser.parse_args(argv)
    cfg = dict(QUICK if opts.quick else FULL)
    if opts.rounds:
        cfg["rounds"] = opts.rounds

    lines: list[str] = []

    def out(line: str = "") -> None:
        lines.append(line)
        print(line, flush=True)

    def log(line: str) -> None:
        print(f"# {line}", file=sys.stderr, flush=True)

    began = time.perf_counter()
    load = os.getloadavg()
    out(
        f"llm_memo core benchmark ({'quick' if opts.quick else 'full'} run, {cfg['rounds']} rounds)"
    )
    out(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        "(other processes may be running: best-of-rounds medians, p99 from the same round)"
    )
    out(versions())
    out(f"llm_memo imported from {os.path.dirname(llm_memo.__file__)} ({git_state()})")
    result: dict[str, Any] = {
        "mode": "quick" if opts.quick else "full",
        "config": cfg,
        "versions": versions(),
        "llm_memo_source": git_state(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_start": load,
    }
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="llm_memo_bench_") as root:
        if not opts.skip_core:
            out("")
            timer = timer_overhead()
            contenders = run_core(cfg, root, notes, log)
            for note in notes:
                out(f"note: {note}")
            out("")
            ratios = print_core(contenders, timer, out)
            result["core"] = [
                {"case": c.case, "contender": c.name.strip(), "size": label, **r}
                for c in contenders
                for label, r in c.results.items()
            ]
            result["ratios"] = ratios
            result["timer_overhead_ns"] = timer
            result["notes"] = notes
        if not opts.skip_breakdown:
            out("")
            result["breakdown"] = run_breakdown(root, out)
        if not opts.skip_scaling:
            out("")
            out(
                "disk hit vs stored entries (4 KB messages, random stored key per call, memory_maxsize=0)"
            )
            result["scaling"] = run_scaling(cfg, root, out)
        if not opts.skip_process:
            out("")
            result["process"] = run_process(cfg, root, out)
    load = os.getloadavg()
    out("")
    out(
        f"load average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; total {time.perf_counter() - began:.0f} s"
    )
    result["loadavg_end"] = load
    result["seconds"] = time.perf_counter() - began
    if opts.json:
        with open(opts.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2, default=str)
        out(f"saved {opts.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
