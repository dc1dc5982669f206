"""The engine: one call path for every front-end.

A front-end (the decorator, the openai transport, a framework adapter) uses four methods and
their async twins, and nothing else:

    look = engine.lookup(args, kwargs)      # plan, key once, read each tier once
    if look.hit: value = engine.serve(look) # count the hit, hand back the stored value
    value = engine.run(look, compute)       # single-flight, lease, compute, store, count
    chunks = engine.stream(look, open)      # the same for a stream, shared chunk by chunk

`look.plan` is None when the call runs uncached (caching off, or the guard bypassed it); `run`
then just calls `compute`. The flow behind `run` is written once (see flow.py).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

from .._logic.pricing import savings_of
from .._logic.records import Stats
from .._storage.cache import Cache, Hit
from .config import caching_enabled, default_cache
from .flight import AsyncFlights, Flights
from .flow import BODY, Flow, adrive, drive, io, lease, sleep
from .lookup import Lookup
from .options import CallOptions, current_options
from .plan import Plan, Planner
from .refresh import EarlyRefresh
from .stats import Accounts
from .streams import AsyncSharedStream, SharedStream, StreamFlights, areplay, replay

__all__ = ["Engine", "Lookup", "Plan"]

logger = logging.getLogger("llm_memo")
Final = Callable[[list[Any]], Any] | None


async def _aiter(source: Any) -> Any:
    """An async iterable, from one or from an awaitable of one."""
    return await source if inspect.isawaitable(source) else source


def _seconds(name: str, value: object, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ValueError(f"{name} must be {hint}; got {name}={value!r}")
    return float(value)


class Engine:
    """One function's (or one endpoint's) cache: its planner, counters, flights and settings."""

    def __init__(self, func: Callable[..., Any], *, cache: Cache | None = None, semantic: Any = None,
                 lease: float = 10.0, early_refresh: float = 0.0, **planning: Any) -> None:
        if cache is not None and not isinstance(cache, Cache):
            raise TypeError(f"cache= takes an llm_memo.Cache or None (the default cache); got {cache!r}")
        self.planner = Planner(func, **planning)
        self.cache = cache
        self.function = self.planner.function
        self.accounts = Accounts(self.function)
        self.lease = _seconds("lease", lease, "seconds >= 0 (0 turns cross-process single-flight off)")
        beta = _seconds("early_refresh", early_refresh, "a number >= 0 (XFetch's beta: 1.0 is usual, 0 turns it off)")
        self.refresher = EarlyRefresh(beta) if beta else None
        self.flights = Flights()
        self.aflights = AsyncFlights()
        self.streams = StreamFlights()
        self._generations = itertools.count(1)
        self._stored = 0  # changes whenever this engine stores: a miss then checks memory again
        # semantic mode (llm_memo.SemanticMatch): consulted on an exact miss, None when off
        self.semantic = semantic.attach(self) if semantic is not None else None

    # ---- what the front-ends and semantic mode read (semantic mode: engine.planner, engine.accounts)

    @property
    def tag(self) -> str:
        """The tag every entry of this function carries."""
        return self.planner.tags[0]

    def current_cache(self) -> Cache | None:
        """The cache to use now, or None when caching is turned off."""
        if not caching_enabled():
            return None
        return self.cache if self.cache is not None else default_cache()

    def key_of(self, args: tuple[Any, ...], kwargs: dict[str, Any], instance: Any = None) -> str:
        """The key a call would use; nothing is called or stored."""
        return self.planner.key_of(instance, args, kwargs)

    def stats(self) -> Stats:
        return self.accounts.snapshot()

    # ---- the adapter API -------------------------------------------------------------------

    def check(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise what planning this call would raise (the guard's "raise" mode), before anything is sent."""
        self.planner.check(args, kwargs)

    def lookup(self, args: tuple[Any, ...], kwargs: dict[str, Any], instance: Any = None, *,
               options: CallOptions | None = None, stream: bool = False, bypass: str | None = None) -> Lookup:
        """Plan a call and read the cache for it: each tier once, the key computed once. `bypass`: the
        front-end's reason to run this call uncached (counted as a bypass)."""
        if bypass is not None:
            return self._bypass(bypass, kwargs)
        look = self._start(instance, args, kwargs, options, stream)
        if look.plan is not None and look.hit is None and look.options.read:
            self._below(look, look.cache.get_lower(look.key, self.accounts.counters), stream)  # type: ignore[union-attr]
            if look.hit is None and self.semantic is not None and not stream:
                body = self._body_of(look)
                self._paraphrase(look, body, *self.semantic.consult(look.cache, look.plan, body, instance))
        return look

    async def alookup(self, args: tuple[Any, ...], kwargs: dict[str, Any], instance: Any = None, *,
                      options: CallOptions | None = None, stream: bool = False, bypass: str | None = None) -> Lookup:
        """`lookup` for async callers: disk and Redis are read in a worker thread."""
        if bypass is not None:
            return self._bypass(bypass, kwargs)
        look = self._start(instance, args, kwargs, options, stream)
        if look.plan is not None and look.hit is None and look.options.read:
            self._below(look, await asyncio.to_thread(look.cache.get_lower, look.key, self.accounts.counters), stream)  # type: ignore[union-attr]
            if look.hit is None and self.semantic is not None and not stream:
                body = self._body_of(look)
                self._paraphrase(look, body, *await asyncio.to_thread(
                    self.semantic.consult, look.cache, look.plan, body, instance, True))
        return look

    def serve(self, look: Lookup) -> Any:
        """Count the hit `look` found and return its value."""
        hit = look.hit
        assert hit is not None and look.cache is not None and look.plan is not None
        self.accounts.hit(look.cache, hit, look.plan)
        look.tier = hit.tier
        return hit.value

    def run(self, look: Lookup, compute: Callable[[], Any]) -> Any:
        """The answer to a looked-up call: served, or computed once however many ask at once."""
        if look.plan is None:
            return compute()
        if look.hit is not None:
            return drive(self.refresher.flow(self, look), compute) if look.refresh else self.serve(look)
        look.body = compute
        value, led = self.flights.run(look.key, lambda: drive(self._miss(look), look.compute or compute))
        return self._settle(look, value, led)

    async def arun(self, look: Lookup, compute: Callable[[], Awaitable[Any]]) -> Any:
        """`run` for async callers."""
        if look.plan is None:
            return await compute()
        if look.hit is not None:
            return await adrive(self.refresher.flow(self, look), compute) if look.refresh else self.serve(look)
        look.body = compute
        value, led = await self.aflights.run(look.key, lambda: adrive(self._miss(look), look.compute or compute))
        return self._settle(look, value, led)

    def stream(self, look: Lookup, open_stream: Callable[[], Iterable[Any]], *, final: Final = None,
               finished: Callable[[Any], bool] | None = None, replay_of: Callable[[Any], Iterable[Any]] = replay,
               abort: Callable[[], None] | None = None) -> Iterator[Any]:
        """The chunks of a looked-up streaming call. On a hit, `replay_of(stored value)`. On a miss,
        one source opened once and shared chunk by chunk with identical calls made meanwhile;
        `final(chunks)` is what to store (default: the chunks; None: nothing), once the source
        ends or `finished(chunk)` says the answer is whole. `abort()` closes the source's connection
        when every reader leaves before the end (from any thread)."""
        if look.plan is None:
            return iter(open_stream())
        if look.hit is not None:
            return iter(replay_of(self.serve(look)))

        def lead() -> Any:
            found, token = drive(self._claim(look))
            if found is not None:
                return iter(replay_of(self._found(look, found)))
            complete, ended = self._ending(look, token, final)
            try:
                source = open_stream()
            except BaseException:
                ended(True)
                raise
            return SharedStream(source, complete, ended, finished, abort)

        return self.streams.join(look.key, lead, lambda: self._follow(look))

    async def astream(self, look: Lookup, open_stream: Callable[[], Any], *, final: Final = None,
                      finished: Callable[[Any], bool] | None = None,
                      replay_of: Callable[[Any], Iterable[Any]] = replay) -> AsyncIterator[Any]:
        """`stream` for async sources; `open_stream()` returns an async iterable, or an awaitable of one."""
        if look.plan is None:
            return await _aiter(open_stream())
        if look.hit is not None:
            return areplay(replay_of(self.serve(look)))

        async def lead() -> Any:
            found, token = await adrive(self._claim(look))
            if found is not None:
                return areplay(replay_of(self._found(look, found)))
            complete, ended = self._ending(look, token, final)
            try:
                source = await _aiter(open_stream())
            except BaseException:
                await asyncio.to_thread(ended, True)
                raise
            return AsyncSharedStream(source, complete, ended, finished)

        return await self.streams.ajoin(look.key, lead, lambda: self._follow(look))

    # ---- the flow ------------------------------------------------------------------------------

    def _start(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
               options: CallOptions | None, stream: bool) -> Lookup:
        """Plan the call and read the memory tier (never blocks)."""
        controls = current_options() if options is None else current_options().merged(options)
        cache = self.current_cache()
        if cache is None:
            return Lookup(None, None, controls)
        plan = self.planner.plan(instance, args, kwargs)
        if plan.key is None:
            self.accounts.bypass(cache, "non-deterministic", plan.arguments)
            return Lookup(cache, None, controls)
        look = Lookup(cache, plan, controls, self._stored)
        if controls.read:
            look.hit = cache.get_memory(plan.key, self.accounts.counters)
            if look.hit is not None and self.refresher is not None and not stream:
                look.refresh = self.refresher.claim(cache, look.hit, plan.key)
        return look

    def _bypass(self, why: str, arguments: dict[str, Any]) -> Lookup:
        cache = self.current_cache()
        if cache is not None:
            self.accounts.bypass(cache, why, arguments)
        return Lookup(cache, None, current_options())

    def _below(self, look: Lookup, hit: Hit | None, stream: bool) -> None:
        """What the lower tiers answered (early refresh: is it due, and is it this caller's?)."""
        if hit is not None:
            look.hit = hit
            if self.refresher is not None and not stream:
                look.refresh = self.refresher.claim(look.cache, hit, look.key)  # type: ignore[arg-type]

    @staticmethod
    def _body_of(look: Lookup) -> Callable[..., Any]:
        def body(*_: Any, **__: Any) -> Any:
            return look.body()  # the compute `run` is given; semantic mode wraps it to learn
        return body

    @staticmethod
    def _paraphrase(look: Lookup, body: Callable[..., Any], hit: Hit | None, learn: Callable[..., Any]) -> None:
        """Semantic mode's answer: a paraphrase's hit, or the body wrapped to learn from (unless the
        call stores nothing: then it learns nothing either)."""
        look.hit = hit
        if hit is None and look.options.write and learn is not body:
            look.compute = learn

    def _lifetime(self, look: Lookup) -> tuple[Any, float | None]:
        ttl = look.options.ttl
        return (None, ttl) if ttl is not None else self.planner.lifetime(look.plan.arguments)  # type: ignore[union-attr]

    def _miss(self, look: Lookup) -> Flow[Any]:
        """Lease, wait for another process's answer or compute, store, give the lease back."""
        cache, key = look.cache, look.key
        assert cache is not None
        fresh = not look.options.read  # a fresh answer wanted: no waiting for, or reading, another's
        if self._stored != look.mark and not fresh:  # a caller of this process may have stored it since
            again = cache.get_memory(key)
            if again is not None:
                return again
        lifetime = self._lifetime(look)
        token, failed = None, False
        try:
            if self.lease and lifetime[1] != 0 and look.options.write and not fresh:
                again = yield from self._lease(cache, key)
                if isinstance(again, Hit):
                    return again
                token = again
            start = time.perf_counter()
            try:
                value = yield BODY
            except Exception:
                failed = True
                raise
            yield io(self._store, look, value, time.perf_counter() - start, lifetime)
            return value
        finally:
            if token is not None:
                yield io(cache.release, key, token, failed)

    def _lease(self, cache: Cache, key: str, renew: bool = True) -> Flow[Hit | str | None]:
        """This caller's lease on `key`, or the answer another process stored meanwhile: waited for
        while another holds the lease; read again only when a holder let go since our lookup."""
        token, recent = yield lease(cache, key, self.lease, renew)
        if token is None:  # another process computes it: wait for its answer
            again, token = yield from self._wait(cache, key, renew)
            recent = again is None and token is not None
            if again is not None:
                return again
        if recent:
            try:
                again = yield io(cache.get_lower, key)
            except BaseException:
                yield io(cache.release, key, token)
                raise
            if again is not None:
                yield io(cache.release, key, token)
                return again
        return token

    def _wait(self, cache: Cache, key: str, renew: bool) -> Flow[tuple[Hit | None, str | None]]:
        """Poll for the leaseholder's answer until it appears or the lease is ours to take (its
        holder finished without storing, failed, or died): (hit, token). A live holder renews its
        lease, so a call longer than `lease` is waited for, never run twice."""
        pause = 0.02
        while True:
            yield sleep(pause)
            pause = min(pause * 1.5, 0.25)
            hit = yield io(cache.get_lower, key)
            if hit is not None:
                return hit, None
            token, _ = yield lease(cache, key, self.lease, renew)
            if token is not None:
                return None, token

    def _store(self, look: Lookup, value: Any, latency: float, lifetime: tuple[Any, float | None]) -> None:
        """Count the miss and store its result unless the policy or the call's controls say not to."""
        cache, plan, key = look.cache, look.plan, look.key
        assert cache is not None and plan is not None
        policy, seconds = lifetime
        if seconds == 0:
            self.accounts.bypass(cache, f"policy {getattr(policy, 'value', policy)} stores nothing",
                                 plan.arguments, key)
            return
        self.accounts.miss(cache, plan, value)
        if not look.options.write:
            self.accounts.stored(cache, key, latency, seconds, False)
            return
        self._stored = next(self._generations)
        try:
            tokens, cost = savings_of(value)
            stored = cache.set(key, value, lifetime=seconds, metadata=self.planner.metadata(plan.arguments, policy),
                               tags=self.planner.entry_tags(plan.arguments, look.options.tags), latency=latency,
                               tokens=tokens, cost=cost, stats=self.accounts.counters)
        except Exception as exc:  # the answer was paid for: the caller gets it, stored or not
            self.accounts.unstored(cache, exc)
            stored = False
        self.accounts.stored(cache, key, latency, seconds, stored)

    def _settle(self, look: Lookup, value: Any, led: bool) -> Any:
        """Count how a miss was answered: found after waiting, shared by another caller, or computed."""
        assert look.cache is not None and look.plan is not None
        if isinstance(value, Hit):
            return self._found(look, value)
        if not led:
            self.accounts.shared(look.cache, value, look.plan)
            look.tier = "flight"
        return value

    def _claim(self, look: Lookup) -> Flow[tuple[Hit | None, str | None]]:
        """A stream's lease: (the answer another process stored meanwhile, None) or (None, token)."""
        cache, key = look.cache, look.key
        assert cache is not None
        if not (self.lease and self._lifetime(look)[1] != 0 and look.options.write and look.options.read):
            return None, None
        found = yield from self._lease(cache, key, renew=False)  # its reader may never finish
        return (found, None) if isinstance(found, Hit) else (None, found)

    def _follow(self, look: Lookup) -> None:
        """A caller reading along another's stream: a hit of the flight (its savings are not known yet)."""
        assert look.cache is not None and look.plan is not None
        self.accounts.shared(look.cache, None, look.plan)
        look.tier = "flight"

    def _found(self, look: Lookup, hit: Hit) -> Any:
        look.hit = hit
        return self.serve(look)

    def _ending(self, look: Lookup, token: str | None, final: Final) -> tuple[Callable[[list[Any]], None],
                                                                               Callable[[bool], None]]:
        """(complete, ended) of a stream this caller opens: store the whole answer, give the lease back."""
        cache, key, lifetime, start = look.cache, look.key, self._lifetime(look), time.perf_counter()
        assert cache is not None

        def complete(chunks: list[Any]) -> None:
            value = list(chunks) if final is None else final(chunks)
            if value is not None:
                self._store(look, value, time.perf_counter() - start, lifetime)

        def ended(failed: bool) -> None:
            if token is not None:
                cache.release(key, token, failed)

        return complete, ended
