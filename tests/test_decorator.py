"""@llm_cache as a user meets it: call forms, hits, values, methods, streams, concurrency,
the determinism guard and cache policies. Everything goes through the public API."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import inspect
import json
import math
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pydantic
import pytest

import llm_memo
from llm_memo import (
    Cache,
    CachePolicy,
    LLMMemoError,
    NonDeterministicCallError,
    NonDeterministicCallWarning,
    llm_cache,
)

HEX64 = set("0123456789abcdef")


def lifetime(cache: Cache, key: str) -> float | None:
    """Seconds the stored entry under `key` was given (None: never expires)."""
    entry = cache.get_entry(key)
    assert entry is not None, "expected a stored entry"
    return None if entry.expires_at is None else entry.expires_at - entry.created_at


# ---- call forms --------------------------------------------------------------------------


def test_bare_and_called_forms_both_cache(cache: Cache) -> None:
    calls: list[str] = []

    @llm_cache
    def bare(prompt: str) -> str:
        calls.append("bare")
        return prompt.upper()

    @llm_cache(cache=cache, ttl=60)
    def called(prompt: str) -> str:
        calls.append("called")
        return prompt.lower()

    assert [bare("Hi"), bare("Hi"), called("Hi"), called("Hi")] == ["HI", "HI", "hi", "hi"]
    assert calls == ["bare", "called"]


@pytest.mark.parametrize("form", ["bare", "called"])
def test_the_wrapper_keeps_name_doc_signature_and_wrapped(form: str) -> None:
    def ask(prompt: str, *, model: str = "gpt-4o-mini", temperature: float = 0.0) -> str:
        """Ask the model one question."""
        return prompt

    cached = llm_cache(ask) if form == "bare" else llm_cache(ttl=60, ignore=["model"])(ask)
    assert cached.__wrapped__ is ask
    assert cached.__name__ == "ask"
    assert cached.__qualname__ == ask.__qualname__
    assert cached.__doc__ == "Ask the model one question."
    assert inspect.signature(cached) == inspect.signature(ask)
    assert cached("x") == "x"


def test_async_functions_stay_coroutine_functions() -> None:
    @llm_cache
    async def ask(prompt: str) -> str:
        return prompt

    assert inspect.iscoroutinefunction(ask)
    assert inspect.signature(ask) == inspect.signature(ask.__wrapped__)


def test_a_positional_policy_string_suggests_the_keyword() -> None:
    with pytest.raises(TypeError, match=r"policy='long'"):

        @llm_cache("long")  # type: ignore[call-overload]
        def ask(prompt: str) -> str:
            return prompt


# ---- plain functions ---------------------------------------------------------------------


def test_second_identical_call_is_a_hit(cache: Cache) -> None:
    calls: list[str] = []

    @llm_cache(cache=cache)
    def ask(prompt: str, model: str = "gpt-4o-mini") -> str:
        calls.append(prompt)
        return f"answer to {prompt}"

    assert ask("hi") == "answer to hi"
    assert ask("hi") == "answer to hi"
    assert calls == ["hi"]
    info = ask.cache_info()
    assert (info.hits, info.misses, info.bypassed, info.errors) == (1, 1, 0, 0)
    assert info.hit_rate == 0.5
    assert dict(info.hits_by_tier) == {"memory": 1}

    assert ask("other") == "answer to other"
    assert calls == ["hi", "other"]
    assert ask.cache_info().hit_rate == pytest.approx(1 / 3)


def test_cache_info_starts_empty(cache: Cache) -> None:
    @llm_cache(cache=cache)
    def ask(prompt: str) -> str:
        return prompt

    info = ask.cache_info()
    assert (info.hits, info.misses, info.hit_rate, dict(info.hits_by_tier)) == (0, 0, 0.0, {})


def test_cache_key_is_hex_and_the_same_for_equivalent_spellings(cache: Cache) -> None:
    calls: list[str] = []

    @llm_cache(cache=cache)
    def ask(prompt: str, model: str = "gpt-4o-mini", *, max_tokens: int = 64) -> str:
        calls.append(prompt)
        return prompt

    key = ask.cache_key("hi")
    assert len(key) == 64 and set(key) <= HEX64
    assert {
        key,
        ask.cache_key(prompt="hi"),
        ask.cache_key("hi", "gpt-4o-mini"),
        ask.cache_key("hi", model="gpt-4o-mini"),
        ask.cache_key(model="gpt-4o-mini", prompt="hi", max_tokens=64),
        ask.cache_key(max_tokens=64, prompt="hi"),
    } == {key}
    assert ask.cache_key("ho") != key
    assert ask.cache_key("hi", model="gpt-4o") != key
    assert ask.cache_key("hi", max_tokens=65) != key
    assert calls == []  # cache_key never calls the function

    ask("hi")
    ask(model="gpt-4o-mini", prompt="hi")  # another spelling of the same call: a hit
    assert calls == ["hi"]


def test_invalidate_removes_one_entry(cache: Cache) -> None:
    calls: list[str] = []

    @llm_cache(cache=cache)
    def ask(prompt: str) -> str:
        calls.append(prompt)
        return prompt * 2

    ask("a")
    ask("b")
    assert ask.invalidate(prompt="a") is True
    assert ask.invalidate("a") is False
    assert ask("a") == "aa"
    assert ask("b") == "bb"
    assert calls == ["a", "b", "a"]


def test_cache_clear_removes_only_this_functions_entries(cache: Cache) -> None:
    calls: list[str] = []

    @llm_cache(cache=cache)
    def ask(prompt: str) -> str:
        calls.append(f"ask:{prompt}")
        return prompt

    @llm_cache(cache=cache)
    def other(prompt: str) -> str:
        calls.append(f"other:{prompt}")
        return prompt

    for prompt in ("a", "b"):
        ask(prompt)
        other(prompt)
    assert ask.cache_clear() == 2
    ask("a")
    other("a")
    other("b")
    assert calls == ["ask:a", "other:a", "ask:b", "other:b", "ask:a"]
    with Cache(cache.directory, clock=cache.clock) as fresh:  # the disk copies went too
        assert fresh.get_entry(ask.cache_key("b")) is None
        assert fresh.get_entry(other.cache_key("b")) is not None


def test_a_cached_none_is_a_hit(cache: Cache) -> None:
    calls: list[str] = []

    @llm_cache(cache=cache)
    def nothing(prompt: str) -> None:
        calls.append(prompt)

    assert nothing("q") is None
    assert nothing("q") is None
    assert calls == ["q"]
    assert nothing.cache_info().hits == 1


def test_exceptions_are_never_cached(cache: Cache) -> None:
    attempts: list[str] = []

    @llm_cache(cache=cache)
    def flaky(prompt: str) -> str:
        attempts.append(prompt)
        if len(attempts) == 1:
            raise ConnectionError("rate limited")
        return "ok"

    with pytest.raises(ConnectionError, match="rate limited"):
        flaky("q")
    assert cache.get_entry(flaky.cache_key("q")) is None
    assert flaky("q") == "ok"
    assert flaky("q") == "ok"
    assert attempts == ["q", "q"]


def test_bad_arguments_raise_like_python_before_the_body_runs(cache: Cache) -> None:
    calls: list[str] = []

    @llm_cache(cache=cache)
    def ask(prompt: str) -> str:
        calls.append(prompt)
        return prompt

    with pytest.raises(TypeError):
        ask()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ask("a", "b")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ask("a", nope=1)  # type: ignore[call-arg]
    assert calls == []


# ---- values keep their types, from the disk tier -----------------------------------------


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: float
    label: str


class Reply(pydantic.BaseModel):
    text: str
    tokens: int
    tags: list[str]


VALUES: dict[str, Any] = {
    "str": "naïve ☃ text\x00with a NUL",
    "empty str": "",
    "bytes": b"\x00\xffbinary",
    "int": 7,
    "big int": 2**80,
    "float": 0.1,
    "negative zero": -0.0,
    "bool": True,
    "none": None,
    "tuple": (1, "a", (2, 3)),
    "list": [1, "a", [2, 3]],
    "list of tuples": [(1, 2), (3, 4)],
    "dict with int keys": {1: "one", 2: "two"},
    "dict with tuple keys": {(1, 2): "pair"},
    "set": {1, 2, 3},
    "frozenset": frozenset({"a", "b"}),
    "aware datetime": dt.datetime(2024, 5, 17, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    "naive datetime": dt.datetime(2024, 5, 17, 12, 30, 1, 5),
    "date": dt.date(2024, 1, 1),
    "timedelta": dt.timedelta(days=1, seconds=2, microseconds=3),
    "decimal": Decimal("1.10"),
    "dataclass": Point(1, 2.5, "p"),
    "pydantic model": Reply(text="hello", tokens=3, tags=["a", "b"]),
    "reserved key": {"\x00": "tuple", "v": [1, 2]},
    "nested reserved key": [{"\x00": "pickle", "v": "Y29z"}],
    "openai-like": {"choices": [{"message": {"content": "hi"}}], "usage": (1, 2), "id": None},
}


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 != 1.0 != True, tuple != list)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        if sorted(map(repr, a)) != sorted(map(repr, b)):
            return False
        return all(same(a[k], b[k]) for k in a)
    if isinstance(a, (float, Decimal)):
        return repr(a) == repr(b)
    return bool(a == b)


@pytest.mark.parametrize("kind", list(VALUES))
def test_values_round_trip_with_their_types_from_the_disk_tier(kind: str, cache: Cache) -> None:
    calls: list[str] = []

    def produce(kind: str) -> Any:
        calls.append(kind)
        return VALUES[kind]

    assert same(llm_cache(cache=cache, ttl=3600)(produce)(kind), VALUES[kind])
    with Cache(cache.directory, clock=cache.clock) as fresh:
        from_disk = llm_cache(cache=fresh, ttl=3600)(produce)
        value = from_disk(kind)
        assert calls == [kind]
        assert dict(from_disk.cache_info().hits_by_tier) == {"disk": 1}
        assert same(value, VALUES[kind]), (value, VALUES[kind])
        again = from_disk(kind)  # and from the memory tier it was promoted to
        assert same(again, VALUES[kind])
        assert dict(from_disk.cache_info().hits_by_tier) == {"disk": 1, "memory": 1}


# Classes that a fresh process has not seen produced: rebuilding them from a cache must be
# allowed (allow_type or the cached function's return annotation), never imported by name.
_MODELS = '''
import dataclasses
import os
import pathlib

import pydantic

from llm_memo import llm_cache


def _ran(name):
    with pathlib.Path(os.environ["RUNS_FILE"]).open("a") as f:
        f.write(name + "\\n")


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Reply(pydantic.BaseModel):
    text: str


@llm_cache(ttl=3600)
def point(prompt):
    _ran("point")
    return Point(1, 2)


@llm_cache(ttl=3600)
def reply(prompt):
    _ran("reply")
    return Reply(text="hello")
'''

# Apart from the models: importing a function annotated "-> Point" allows Point in that process.
_ANNOTATED = '''
from llm_memo import llm_cache
from models_for_memo import Point, Reply, _ran


@llm_cache(ttl=3600)
def annotated_point(prompt) -> Point:
    _ran("annotated_point")
    return Point(3, 4)


@llm_cache(ttl=3600)
def annotated_reply(prompt) -> Reply:
    _ran("annotated_reply")
    return Reply(text="annotated")
'''

_DRIVER = '''
import json
import sys

import importlib

import llm_memo

if sys.argv[1] == "allow":
    models = importlib.import_module("models_for_memo")
    llm_memo.allow_type(models.Point)
    llm_memo.allow_type(models.Reply)
out = {}
for name in sys.argv[2:]:
    module = "annotated_for_memo" if name.startswith("annotated") else "models_for_memo"
    fn = getattr(importlib.import_module(module), name)
    value = fn("q")
    info = fn.cache_info()
    out[name] = {"type": type(value).__name__, "value": repr(value),
                 "tiers": dict(info.hits_by_tier), "misses": info.misses, "errors": info.errors}
print(json.dumps(out))
'''


class Processes:
    """Runs the models module in fresh interpreters that share one cache directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "models_for_memo.py").write_text(_MODELS)
        (root / "annotated_for_memo.py").write_text(_ANNOTATED)
        (root / "driver.py").write_text(_DRIVER)
        self.runs = root / "runs.txt"
        self.env = {**os.environ, "LLM_MEMO_DIR": str(root / "cache"), "RUNS_FILE": str(self.runs),
                    "PYTHONPATH": str(root)}
        self.env.pop("LLM_MEMO_DISABLE", None)

    def run(self, mode: str, *names: str) -> dict[str, Any]:
        done = subprocess.run([sys.executable, str(self.root / "driver.py"), mode, *names],
                              env=self.env, cwd=self.root, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def count(self, name: str) -> int:
        return self.runs.read_text().split().count(name) if self.runs.exists() else 0


def test_a_class_not_allowed_is_a_counted_miss_and_allow_type_makes_it_a_hit(tmp_path: Path) -> None:
    procs = Processes(tmp_path)
    stored = procs.run("deny", "point", "reply")
    assert {n: r["type"] for n, r in stored.items()} == {"point": "Point", "reply": "Reply"}

    refused = procs.run("deny", "point", "reply")  # a fresh process never saw these classes
    for name, result in refused.items():
        assert result["tiers"] == {}, name
        assert (result["misses"], result["errors"]) == (1, 1), name
        assert procs.count(name) == 2, name
    assert refused["point"]["value"] == "Point(x=1, y=2)"
    assert refused["reply"]["value"] == "Reply(text='hello')"

    allowed = procs.run("allow", "point", "reply")
    for name, result in allowed.items():
        assert result["tiers"] == {"disk": 1}, name
        assert procs.count(name) == 2, name
    assert allowed["point"]["value"] == "Point(x=1, y=2)"
    assert allowed["reply"]["value"] == "Reply(text='hello')"


def test_a_return_annotation_allows_its_class(tmp_path: Path) -> None:
    procs = Processes(tmp_path)
    procs.run("deny", "annotated_point", "annotated_reply")
    again = procs.run("deny", "annotated_point", "annotated_reply")
    for name, result in again.items():
        assert result["tiers"] == {"disk": 1}, (name, result)
        assert result["errors"] == 0, (name, result)
        assert procs.count(name) == 1, name
    assert again["annotated_point"]["type"] == "Point"
    assert again["annotated_reply"]["value"] == "Reply(text='annotated')"


def test_allow_type_refuses_what_is_not_a_class() -> None:
    with pytest.raises(TypeError, match="cls"):
        llm_memo.allow_type(Point(1, 2.0, "p"))  # type: ignore[arg-type]
    assert llm_memo.allow_type(Point) is Point  # usable as a class decorator


# ---- async functions ---------------------------------------------------------------------


def test_async_hit_and_miss(cache: Cache) -> None:
    calls: list[str] = []

    @llm_cache(cache=cache)
    async def ask(prompt: str) -> str:
        calls.append(prompt)
        await asyncio.sleep(0)
        return prompt[::-1]

    async def main() -> list[str]:
        return [await ask("abc"), await ask("abc"), await ask("xyz")]

    assert asyncio.run(main()) == ["cba", "cba", "zyx"]
    assert calls == ["abc", "xyz"]
    info = ask.cache_info()
    assert (info.hits, info.misses) == (1, 2)


def test_async_disk_hit_from_a_fresh_cache(cache: Cache) -> None:
    calls: list[str] = []

    async def ask(prompt: str) -> tuple[str, int]:
        calls.append(prompt)
        return (prompt, len(prompt))

    assert asyncio.run(llm_cache(cache=cache, ttl=60)(ask)("abc")) == ("abc", 3)
    with Cache(cache.directory, clock=cache.clock) as fresh:
        again = llm_cache(cache=fresh, ttl=60)(ask)
        assert asyncio.run(again("abc")) == ("abc", 3)
        assert dict(again.cache_info().hits_by_tier) == {"disk": 1}
    assert calls == ["abc"]


def test_fifty_concurrent_async_calls_on_one_key_run_the_body_once(cache: Cache) -> None:
    calls: list[str] = []

    @llm_cache(cache=cache)
    async def ask(prompt: str) -> dict[str, str]:
        calls.append(prompt)
        await asyncio.sleep(0.05)
        return {"answer": prompt}

    async def main() -> list[dict[str, str]]:
        return await asyncio.gather(*(ask("same") for _ in range(50)))

    results = asyncio.run(main())
    assert calls == ["same"]
    assert results == [{"answer": "same"}] * 50
    info = ask.cache_info()
    assert (info.hits, info.misses) == (49, 1)


# ---- generators and async generators -----------------------------------------------------


def test_generator_miss_streams_live_and_a_hit_replays(cache: Cache) -> None:
    events: list[str] = []

    @llm_cache(cache=cache)
    def stream(prompt: str):  # type: ignore[no-untyped-def]
        events.append("start")
        for word in prompt.split():
            yield {"delta": word, "at": (len(events), word)}
        events.append("end")

    gen = stream("a b c")
    assert next(gen) == {"delta": "a", "at": (1, "a")}
    assert events == ["start"]  # the first chunk arrived before the body finished
    assert cache.get_entry(stream.cache_key("a b c")) is None
    rest = list(gen)
    assert events == ["start", "end"]
    live = [{"delta": "a", "at": (1, "a")}, *rest]

    replayed = list(stream("a b c"))
    assert same(replayed, live)
    assert events == ["start", "end"]  # the body did not run again
    info = stream.cache_info()
    assert (info.hits, info.misses) == (1, 1)


def test_generator_stopped_early_stores_nothing(cache: Cache) -> None:
    runs: list[str] = []

    @llm_cache(cache=cache)
    def stream(prompt: str):  # type: ignore[no-untyped-def]
        runs.append(prompt)
        yield from ["x", "y", "z"]

    with contextlib.closing(stream("p")) as gen:
        assert next(gen) == "x"
    assert cache.get_entry(stream.cache_key("p")) is None
    assert list(stream("p")) == ["x", "y", "z"]
    assert list(stream("p")) == ["x", "y", "z"]
    assert runs == ["p", "p"]


def test_generator_that_raises_midway_stores_nothing(cache: Cache) -> None:
    runs: list[str] = []

    @llm_cache(cache=cache)
    def stream(prompt: str):  # type: ignore[no-untyped-def]
        runs.append(prompt)
        yield "x"
        if len(runs) == 1:
            raise ConnectionError("stream dropped")
        yield "y"

    with pytest.raises(ConnectionError):
        list(stream("p"))
    assert list(stream("p")) == ["x", "y"]
    assert list(stream("p")) == ["x", "y"]
    assert runs == ["p", "p"]


def test_async_generator_miss_streams_live_and_a_hit_replays(cache: Cache) -> None:
    events: list[str] = []

    @llm_cache(cache=cache)
    async def stream(prompt: str):  # type: ignore[no-untyped-def]
        events.append("start")
        for word in prompt.split():
            await asyncio.sleep(0)
            yield (word, len(word))
        events.append("end")

    async def main() -> None:
        agen = stream("a bb ccc")
        assert await agen.__anext__() == ("a", 1)
        assert events == ["start"]
        rest = [chunk async for chunk in agen]
        assert rest == [("bb", 2), ("ccc", 3)]
        assert events == ["start", "end"]
        replayed = [chunk async for chunk in stream("a bb ccc")]
        assert same(replayed, [("a", 1), ("bb", 2), ("ccc", 3)])
        assert events == ["start", "end"]

    asyncio.run(main())
    info = stream.cache_info()
    assert (info.hits, info.misses) == (1, 1)


def test_async_generator_stopped_early_stores_nothing(cache: Cache) -> None:
    runs: list[str] = []

    @llm_cache(cache=cache)
    async def stream(prompt: str):  # type: ignore[no-untyped-def]
        runs.append(prompt)
        for chunk in ("x", "y", "z"):
            yield chunk

    async def main() -> None:
        async with contextlib.aclosing(stream("p")) as agen:
            async for _chunk in agen:
                break
        assert cache.get_entry(stream.cache_key("p")) is None
        assert [c async for c in stream("p")] == ["x", "y", "z"]
        assert [c async for c in stream("p")] == ["x", "y", "z"]

    asyncio.run(main())
    assert runs == ["p", "p"]


# ---- methods -----------------------------------------------------------------------------


def test_instance_class_and_static_methods(cache: Cache) -> None:
    calls: list[tuple[str, str]] = []

    class Bot:
        @llm_cache(cache=cache)
        def ask(self, prompt: str) -> str:
            calls.append(("ask", prompt))
            return f"bot:{prompt}"

        @classmethod
        @llm_cache(cache=cache)
        def make(cls, prompt: str) -> str:
            calls.append(("make", prompt))
            return f"{cls.__name__}:{prompt}"

        @staticmethod
        @llm_cache(cache=cache)
        def util(prompt: str) -> str:
            calls.append(("util", prompt))
            return f"util:{prompt}"

    first, second = Bot(), Bot()
    assert [first.ask("q"), second.ask("q")] == ["bot:q", "bot:q"]  # instances share entries
    assert [Bot.make("q"), first.make("q")] == ["Bot:q", "Bot:q"]
    assert [Bot.util("q"), second.util("q")] == ["util:q", "util:q"]
    assert calls == [("ask", "q"), ("make", "q"), ("util", "q")]

    assert first.ask.cache_key("q") == second.ask.cache_key("q")
    assert first.ask.cache_key("q") != first.ask.cache_key("r")
    assert first.ask.cache_info().hits == 1
    assert second.ask.invalidate("q") is True
    assert first.ask("q") == "bot:q"
    assert calls[-1] == ("ask", "q")


def test_llm_memo_key_separates_instances(cache: Cache) -> None:
    calls: list[tuple[str, str]] = []

    class Agent:
        def __init__(self, persona: str) -> None:
            self.persona = persona

        def __llm_memo_key__(self) -> str:
            return self.persona

        @llm_cache(cache=cache)
        def ask(self, prompt: str) -> str:
            calls.append((self.persona, prompt))
            return f"{self.persona}:{prompt}"

    pirate, poet, another_pirate = Agent("pirate"), Agent("poet"), Agent("pirate")
    assert pirate.ask("hi") == "pirate:hi"
    assert poet.ask("hi") == "poet:hi"
    assert another_pirate.ask("hi") == "pirate:hi"
    assert calls == [("pirate", "hi"), ("poet", "hi")]
    assert pirate.ask.cache_key("hi") != poet.ask.cache_key("hi")
    assert pirate.ask.cache_key("hi") == another_pirate.ask.cache_key("hi")


# ---- single-flight with threads ----------------------------------------------------------


def _hammer(fn: Callable[[str], Any], threads: int = 16) -> list[Any]:
    """Call fn("cold") from `threads` threads at once; each result or exception."""
    barrier = threading.Barrier(threads)

    def one(_: int) -> Any:
        barrier.wait()
        return fn("cold")

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(one, i) for i in range(threads)]
        return [f.exception(timeout=30) or f.result() for f in futures]


def test_sixteen_threads_on_one_cold_key_run_the_body_once(cache: Cache) -> None:
    calls: list[str] = []

    @llm_cache(cache=cache)
    def slow(prompt: str) -> str:
        calls.append(prompt)
        time.sleep(0.4)
        return f"done:{prompt}"

    assert _hammer(slow) == ["done:cold"] * 16
    assert calls == ["cold"]
    info = slow.cache_info()
    assert (info.hits, info.misses) == (15, 1)


def test_a_failing_leader_fails_its_waiters_and_nothing_is_cached(cache: Cache) -> None:
    calls: list[str] = []
    failing = True

    @llm_cache(cache=cache)
    def slow(prompt: str) -> str:
        calls.append(prompt)
        time.sleep(0.4)
        if failing:
            raise TimeoutError("upstream timed out")
        return "ok"

    outcomes = _hammer(slow)
    assert all(isinstance(o, TimeoutError) for o in outcomes), outcomes
    assert calls == ["cold"]
    assert cache.get_entry(slow.cache_key("cold")) is None

    failing = False
    assert slow("cold") == "ok"
    assert slow("cold") == "ok"
    assert calls == ["cold", "cold"]


# ---- the determinism guard ---------------------------------------------------------------


def _sampling_function(shape: str, cache: Cache, calls: list[int],
                       **options: Any) -> tuple[Any, Callable[[], str]]:
    """A cached function and a call of it at temperature 0.7, the temperature passed as `shape`."""
    if shape == "parameter":

        @llm_cache(cache=cache, **options)
        def by_parameter(prompt: str, temperature: float = 0.0) -> str:
            calls.append(1)
            return "sampled"

        return by_parameter, lambda: by_parameter("hi", temperature=0.7)
    if shape == "kwargs":

        @llm_cache(cache=cache, **options)
        def by_kwargs(prompt: str, **kwargs: Any) -> str:
            calls.append(1)
            return "sampled"

        return by_kwargs, lambda: by_kwargs("hi", temperature=0.7, max_tokens=5)

    @llm_cache(cache=cache, **options)
    def by_settings(prompt: str, settings: dict[str, Any]) -> str:
        calls.append(1)
        return "sampled"

    return by_settings, lambda: by_settings("hi", {"temperature": 0.7, "max_tokens": 5})


SHAPES = ["parameter", "kwargs", "settings"]


@pytest.mark.parametrize("shape", SHAPES)
def test_sampling_calls_bypass_and_warn_once_per_function(shape: str, cache: Cache) -> None:
    calls: list[int] = []
    fn, call = _sampling_function(shape, cache, calls)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = [call() for _ in range(3)]
    assert results == ["sampled"] * 3
    assert len(calls) == 3
    assert [w.category for w in caught] == [NonDeterministicCallWarning]
    assert "temperature=0.7" in str(caught[0].message)
    assert caught[0].filename == __file__  # points at the caller's line
    info = fn.cache_info()
    assert (info.bypassed, info.hits, info.misses) == (3, 0, 0)
    assert list(cache.keys()) == []


def test_the_bypass_warning_works_with_pytest_warns(cache: Cache) -> None:
    calls: list[int] = []
    _, call = _sampling_function("parameter", cache, calls)
    with pytest.warns(NonDeterministicCallWarning, match="temperature"):
        call()
    call()  # no second warning: under filterwarnings=error it would raise here
    assert len(calls) == 2


@pytest.mark.parametrize("shape", SHAPES)
def test_raise_mode_refuses_before_the_body_runs(shape: str, cache: Cache) -> None:
    calls: list[int] = []
    _, call = _sampling_function(shape, cache, calls, on_nondeterministic="raise")
    with pytest.raises(NonDeterministicCallError) as raised:
        call()
    assert isinstance(raised.value, LLMMemoError)
    assert raised.value.temperature == 0.7
    assert "temperature=0.7" in str(raised.value)
    assert calls == []


@pytest.mark.parametrize("shape", SHAPES)
def test_cache_mode_records_one_sample(shape: str, cache: Cache) -> None:
    calls: list[int] = []
    _, call = _sampling_function(shape, cache, calls, on_nondeterministic="cache")
    assert [call(), call(), call()] == ["sampled"] * 3
    assert len(calls) == 1


@pytest.mark.parametrize("temperature", [0, 0.0])
def test_temperature_zero_is_cached_without_a_warning(temperature: float, cache: Cache) -> None:
    calls: list[int] = []

    @llm_cache(cache=cache)
    def ask(prompt: str, temperature: float = 1.0) -> str:
        calls.append(1)
        return "x"

    ask("hi", temperature=temperature)
    ask("hi", temperature=temperature)
    assert len(calls) == 1


def test_a_bad_on_nondeterministic_value_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="on_nondeterministic='sometimes'"):

        @llm_cache(on_nondeterministic="sometimes")
        def ask(prompt: str) -> str:
            return prompt


# ---- policies ----------------------------------------------------------------------------


NEWS = "What's the latest news today?"


def test_auto_never_stores_a_time_sensitive_prompt(cache: Cache) -> None:
    calls: list[str] = []

    @llm_cache(cache=cache, policy="auto")
    def ask(prompt: str) -> str:
        calls.append(prompt)
        return "headlines"

    assert ask(NEWS) == "headlines"
    assert ask(NEWS) == "headlines"
    assert calls == [NEWS, NEWS]
    info = ask.cache_info()
    assert (info.bypassed, info.hits) == (2, 0)
    assert cache.get_entry(ask.cache_key(NEWS)) is None


def test_auto_keeps_a_reference_question_a_day(cache: Cache) -> None:
    calls: list[str] = []

    @llm_cache(cache=cache)
    def ask(prompt: str) -> str:
        calls.append(prompt)
        return "Paris"

    question = "What is the capital of France?"
    ask(question)
    ask(question)
    assert calls == [question]
    assert lifetime(cache, ask.cache_key(question)) == 86400
    assert cache.get_entry(ask.cache_key(question)).metadata["policy"] == "long"  # type: ignore[union-attr]


@pytest.mark.parametrize("prompt", ["Do you know the capital of Peru?", "Why is snow white?",
                                    "Write a haiku about knowledge"])
def test_words_containing_now_are_not_time_sensitive(prompt: str, cache: Cache) -> None:
    calls: list[str] = []

    @llm_cache(cache=cache)
    def ask(prompt: str) -> str:
        calls.append(prompt)
        return "answer"

    ask(prompt)
    ask(prompt)
    assert calls == [prompt]
    assert lifetime(cache, ask.cache_key(prompt)) != 0


@pytest.mark.parametrize("ttl", [120, 120.0, dt.timedelta(minutes=2)])
def test_ttl_overrides_the_policy(ttl: Any, cache: Cache) -> None:
    calls: list[str] = []

    @llm_cache(cache=cache, ttl=ttl)
    def ask(prompt: str) -> str:
        calls.append(prompt)
        return "headlines"

    ask(NEWS)
    ask(NEWS)
    assert calls == [NEWS]
    assert lifetime(cache, ask.cache_key(NEWS)) == 120


@pytest.mark.parametrize("options", [{"ttl": 0}, {"ttl": dt.timedelta(0)},
                                     {"policy": CachePolicy.NEVER}, {"policy": "never"}])
def test_nothing_is_stored_for_ttl_zero_or_never(options: dict[str, Any], cache: Cache) -> None:
    calls: list[str] = []

    @llm_cache(cache=cache, **options)
    def ask(prompt: str) -> str:
        calls.append(prompt)
        return "x"

    question = "What is the capital of France?"
    ask(question)
    ask(question)
    assert len(calls) == 2
    assert cache.get_entry(ask.cache_key(question)) is None
    assert ask.cache_info().bypassed == 2


@pytest.mark.parametrize(("policy", "seconds"), [(CachePolicy.FOREVER, None), ("SHORT", 300),
                                                 (" medium ", 3600), (CachePolicy.LONG, 86400)])
def test_a_fixed_policy_sets_the_lifetime(policy: Any, seconds: float | None, cache: Cache) -> None:
    @llm_cache(cache=cache, policy=policy)
    def ask(prompt: str) -> str:
        return "x"

    ask(NEWS)  # a fixed policy ignores the prompt's intent
    assert lifetime(cache, ask.cache_key(NEWS)) == seconds


@pytest.mark.parametrize(("returned", "seconds"), [(CachePolicy.MEDIUM, 3600), ("short", 300)])
def test_a_callable_policy_is_given_the_prompt(returned: Any, seconds: float, cache: Cache) -> None:
    seen: list[str] = []

    def pick(text: str) -> Any:
        seen.append(text)
        return returned

    @llm_cache(cache=cache, policy=pick)
    def ask(prompt: str, model: str = "m") -> str:
        return "x"

    ask("hello there")
    assert seen == ["hello there"]
    assert lifetime(cache, ask.cache_key("hello there")) == seconds


def test_rules_of_ones_own_go_ahead_of_the_defaults(cache: Cache) -> None:
    rules = (llm_memo.IntentRule("never", ("stock", "exchange rate")), *llm_memo.DEFAULT_RULES)

    @llm_cache(cache=cache, policy=lambda text: llm_memo.classify_intent(text, rules=rules))
    def ask(prompt: str) -> str:
        return "x"

    for prompt in ("What is the EUR exchange   rate?", "What is a stock?", "What is a monad?"):
        ask(prompt)
    assert ask.cache_info().bypassed == 2  # "what is" alone would keep both a day
    assert lifetime(cache, ask.cache_key("What is a monad?")) == 86400  # the defaults still apply


@pytest.mark.parametrize(("ttl", "error"), [(-1, ValueError), (math.nan, ValueError),
                                            (math.inf, ValueError), (dt.timedelta(seconds=-1), ValueError),
                                            ("10", (TypeError, ValueError)), (True, (TypeError, ValueError)),
                                            ([10], (TypeError, ValueError))])
def test_an_invalid_ttl_fails_at_decoration_time(ttl: Any, error: Any) -> None:
    calls: list[int] = []
    with pytest.raises(error, match=r"ttl"):

        @llm_cache(ttl=ttl)
        def ask(prompt: str) -> str:
            calls.append(1)
            return prompt

    assert calls == []


@pytest.mark.parametrize(("policy", "error"), [("lng", ValueError), ("", ValueError),
                                               (3, (TypeError, ValueError)), (object(), (TypeError, ValueError))])
def test_an_invalid_policy_fails_at_decoration_time(policy: Any, error: Any) -> None:
    with pytest.raises(error, match=r"policy"):

        @llm_cache(policy=policy)
        def ask(prompt: str) -> str:
            return prompt


def test_chat_messages_classify_the_user_turns_not_the_system_prompt(cache: Cache) -> None:
    calls: list[int] = []

    @llm_cache(cache=cache)
    def chat(messages: list[dict[str, Any]], model: str = "gpt-4o-mini") -> str:
        calls.append(1)
        return "reply"

    newsy_system = {"role": "system", "content": "You are a news bot. Today give the latest headlines."}
    reference = [newsy_system, {"role": "user", "content": "What is a monad?"}]
    chat(reference)
    chat(reference)
    assert len(calls) == 1
    assert lifetime(cache, chat.cache_key(reference)) == 86400

    parts = [newsy_system, {"role": "user", "content": [{"type": "text", "text": "Explain monads"}]}]
    chat(parts)
    assert lifetime(cache, chat.cache_key(parts)) == 86400

    calm_system = {"role": "system", "content": "You are a helpful assistant."}
    urgent = [calm_system, {"role": "user", "content": "Any breaking news right now?"}]
    chat(urgent)
    chat(urgent)
    assert len(calls) == 4
    assert cache.get_entry(chat.cache_key(urgent)) is None
    assert chat.cache_info().bypassed == 2
