"""The engine: decide what a call means for the cache, then drive it.

`Engine.plan` is the one place where a call becomes a key, a guard verdict and (on a
miss) a lifetime. The four drivers - plain, async, generator and async generator -
are thin shells over it, picked once when a function is decorated.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from .._errors import NonDeterministicCallError, NonDeterministicCallWarning
from .._logic.guard import Verdict, decide, find_temperature, is_nondeterministic, validate_mode
from .._logic.keys import KeyMaker
from .._logic.policy import (
    CachePolicy,
    PolicyCallable,
    extract_prompt,
    resolve_lifetime,
    validate_policy,
    validate_ttl,
)
from .._logic.pricing import savings_of
from .._logic.records import Stats
from .._logic.redact import preview
from .._logic.trust import allow_returned
from .._storage.cache import Cache, Hit
from .._storage.ledger import Counters
from .config import caching_enabled, default_cache, default_policy, hooks
from .flight import AsyncFlights, Flights
from .streams import arecord, areplay, record, replay

__all__ = ["Engine", "Plan"]

logger = logging.getLogger("llm_memo")
_DEBUG = logging.DEBUG


def _model_of(arguments: Mapping[str, Any] | None) -> str | None:
    """The call's `model` argument when it is a str (what the savings ledger groups by)."""
    model = arguments.get("model") if arguments is not None else None
    return model if isinstance(model, str) else None


def _renewed(found: Hit | None, hit: Hit) -> Hit | None:
    """`found` when it is a newer copy of `hit`'s entry (due for refresh, so it has an expiry), one that
    expires later: another process refreshed it."""
    if found is None or (found.expires_at is not None and found.expires_at <= (hit.expires_at or 0.0)):
        return None
    return found


async def _take_lease(cache: Cache, key: str, seconds: float) -> str | None:
    """`cache.lease` in a worker thread. The thread runs on if the task is cancelled meanwhile (or
    its loop closes); whichever side finds the other gone gives the lease back, in a thread, so a
    cancelled caller never holds a key for `seconds`."""
    guard = threading.Lock()
    state: dict[str, Any] = {"abandoned": False, "token": None}

    def take() -> str | None:
        token = cache.lease(key, seconds)
        with guard:
            if state["abandoned"]:
                if token is not None:
                    cache.release(key, token)
                return None
            state["token"] = token
        return token

    try:
        return await asyncio.to_thread(take)
    except asyncio.CancelledError:
        with guard:
            state["abandoned"] = True
            token = state["token"]
        if token is not None:  # taken just before the cancellation landed
            threading.Thread(target=cache.release, args=(key, token), daemon=True).start()
        raise


class Plan(NamedTuple):
    """What one call means for the cache. key is None for a call that bypasses it; started is
    the perf_counter() reading when planning began (the DEBUG log reports lookup time from it)."""

    key: str | None
    arguments: dict[str, Any]
    started: float


_LIBRARIES = ("llm_memo", "openai", "httpx", "httpx2", "wrapt", "asyncio")  # between the user and the warning


def _stacklevel_of_caller() -> int:
    """The `stacklevel` of the first frame outside llm_memo and the libraries it sits in.

    A warning then points at the user's line, however deep the SDK, the HTTP client and the
    sync/async/generator drivers nest the call (skip_file_prefixes does this from 3.12 on).
    """
    prefixes = tuple(os.path.dirname(module.__file__) + os.sep for name in _LIBRARIES
                     if (module := sys.modules.get(name)) is not None and module.__file__)
    frame, level = sys._getframe(2), 2  # the caller of the function that calls warnings.warn
    while frame.f_back is not None and frame.f_code.co_filename.startswith(prefixes):
        frame, level = frame.f_back, level + 1
    return level


def _own_policy(policy: Any) -> CachePolicy | PolicyCallable | None:
    """A function's own policy=, checked; None: the process default, read at each call (so
    configure(policy=...) after decorating applies), checked now that a bad LLM_MEMO_POLICY
    fails at decoration rather than after a call was paid for."""
    if policy is None:
        default_policy()
        return None
    return validate_policy(policy)


class Engine:
    """Per-function state: how to key, guard and time-limit its calls, and its counters."""

    def __init__(self, func: Callable[..., Any], *, policy: Any = None, ttl: Any = None,
                 cache: Cache | None = None, ignore: Iterable[str] = (), key: Callable[..., Any] | None = None,
                 version: Any = None, tags: Sequence[str] = (), namespace: str | None = None,
                 on_nondeterministic: str = "bypass", intent_arg: str | None = None,
                 track_source: bool = True, default_temperature: float | None = None,
                 semantic: Any = None, lease: float = 10.0, early_refresh: float = 0.0) -> None:
        if cache is not None and not isinstance(cache, Cache):
            raise TypeError(f"cache= takes an llm_memo.Cache or None (the default cache); got {cache!r}")
        if key is not None and not callable(key):
            raise TypeError(f"key= takes a callable returning a keyable value; got {key!r}")
        if namespace is not None and not isinstance(namespace, str):
            raise TypeError(f"namespace= takes a str; got namespace={namespace!r}")
        if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
            raise TypeError(f"tags= takes a list of str; got tags={tags!r}")
        self.policy = _own_policy(policy)
        self.ttl = validate_ttl(ttl)
        self.mode = validate_mode(on_nondeterministic)
        self.keys = KeyMaker(func, ignore=ignore, version=version, namespace=namespace, track_source=track_source)
        if intent_arg is not None and intent_arg not in self.keys.signature.parameters:
            raise ValueError(f"intent_arg={intent_arg!r} is not a parameter; its parameters are "
                             f"{list(self.keys.signature.parameters)!r}")
        self.cache = cache
        self.key_function = key
        self.intent_arg = intent_arg
        self.default_temperature = default_temperature
        self.function = self.keys.function
        scope = f"{namespace}/" if namespace else ""  # invalidating one tenant's function spares the others
        self.tags = (f"fn:{scope}{self.function}", *tags)
        allow_returned(func)  # what the function is declared to return may be rebuilt from the cache
        self.counters = Counters()
        self.flights = Flights()
        self.aflights = AsyncFlights()
        self._warned = False
        self.shown: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # arguments as metadata shows them
        # semantic mode (llm_memo.SemanticMatch): consulted on an exact miss, None when off
        self.semantic = semantic.attach(self) if semantic is not None else None
        if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not 0 <= lease < float("inf"):
            raise ValueError(f"lease must be seconds >= 0 (0 turns cross-process single-flight off); got lease={lease!r}")
        self.lease = float(lease)
        if isinstance(early_refresh, bool) or not isinstance(early_refresh, (int, float)) \
                or not 0 <= early_refresh < float("inf"):
            raise ValueError("early_refresh must be a number >= 0 (XFetch's beta: 1.0 is usual, 0 turns it off); "
                             f"got early_refresh={early_refresh!r}")
        self.early_refresh = float(early_refresh)
        self._refreshing: set[str] = set()  # keys this process is refreshing early
        self._refreshing_lock = threading.Lock()

    # ---- decisions ---------------------------------------------------------------------

    def current_cache(self) -> Cache | None:
        """The cache to use now, or None when caching is turned off."""
        if not caching_enabled():
            return None
        return self.cache if self.cache is not None else default_cache()

    def plan(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Plan:
        """Bind, guard and key one call; raises before the body runs for caller mistakes."""
        started = time.perf_counter()
        full = args if instance is None else (instance, *args)  # wrapt hands methods their instance apart
        arguments = self.keys.binder.bind(full, kwargs)
        temperature = find_temperature(arguments, self.keys.var_keyword)
        if temperature is not None or self.default_temperature is not None:
            verdict = decide(self.mode, is_nondeterministic(temperature, default=self.default_temperature))
            if verdict is Verdict.RAISE:
                raise NonDeterministicCallError(self.function, temperature)
            if verdict is Verdict.BYPASS:
                self._warn_bypass(temperature)
                return Plan(None, arguments, started)
        if self.key_function is not None:
            keyed = {"\x00key": self.key_function(*args, **kwargs)}
        else:
            keyed = self.keys.keyed_arguments(arguments, instance)
        return Plan(self.keys.key(keyed), arguments, started)

    def _warn_bypass(self, temperature: Any) -> None:
        if not self._warned:
            self._warned = True
            called = (f"with temperature={temperature!r}" if temperature is not None
                      else "with temperature not set (the provider samples at its default)")
            warnings.warn(
                f"{self.function}() was called {called}: its answers vary, so llm_memo calls it "
                "uncached. Pass temperature=0 to cache it, or choose on_nondeterministic='cache' "
                "(record one sample) or 'raise'.",
                NonDeterministicCallWarning, stacklevel=_stacklevel_of_caller(),
            )

    def lifetime(self, arguments: dict[str, Any]) -> tuple[Any, float | None]:
        """(policy used, seconds to keep; 0 stores nothing, None never expires)."""
        prompt = extract_prompt(arguments, self.intent_arg)
        return resolve_lifetime(default_policy() if self.policy is None else self.policy, self.ttl, prompt)

    def metadata(self, arguments: dict[str, Any], policy: Any) -> dict[str, Any]:
        """What an entry records about the call that produced it (secrets redacted)."""
        model = arguments.get("model")
        shown = self.shown(arguments) if self.shown is not None else arguments
        return {
            "function": self.function,
            "policy": getattr(policy, "value", None),
            "model": model if isinstance(model, str) else None,
            "args": {k: preview(v, name=k) for k, v in shown.items() if k not in ("self", "cls")},
        }

    def entry_tags(self, arguments: dict[str, Any]) -> tuple[str, ...]:
        """The function tag, a model tag when the call names a model, and the user's tags."""
        model = arguments.get("model")
        return (*self.tags, f"model:{model}") if isinstance(model, str) else self.tags

    # ---- bookkeeping -------------------------------------------------------------------

    def count_hit(self, cache: Cache, hit: Hit, plan: Plan) -> None:
        self.counters.hit(hit.tier, hit.latency, hit.tokens, hit.cost)
        cache.counters.hit(hit.tier, hit.latency, hit.tokens, hit.cost)
        if cache.ledger is not None:
            cache.ledger.hit(self.function, _model_of(plan.arguments), hit.tier, hit.latency, hit.tokens, hit.cost)
        if hooks.on_hit is not None:
            hooks.on_hit(self.function, hit)
        if logger.isEnabledFor(_DEBUG):
            logger.debug("hit %s key=%s tier=%s lookup=%.0fus saved=%.3fs", self.function, (plan.key or "")[:12],
                         hit.tier, (time.perf_counter() - plan.started) * 1e6, hit.latency)

    def count_bypass(self, cache: Cache | None, why: str, arguments: Mapping[str, Any] | None = None,
                     key: str | None = None) -> None:
        self.counters.bypass()
        if cache is not None:
            cache.counters.bypass()
            if cache.ledger is not None:
                cache.ledger.bypass(self.function, _model_of(arguments))
        if logger.isEnabledFor(_DEBUG):
            logger.debug("bypass %s key=%s (%s)", self.function, key[:12] if key else "-", why)

    def store(self, cache: Cache, plan: Plan, value: Any, latency: float, lifetime: tuple[Any, float | None]) -> None:
        """Count the miss and store its result unless the policy says keep nothing."""
        policy, seconds = lifetime
        key = plan.key
        assert key is not None
        if seconds == 0:
            self.count_bypass(cache, f"policy {getattr(policy, 'value', policy)} stores nothing", plan.arguments, key)
            return
        self.counters.miss()
        cache.counters.miss()
        if cache.ledger is not None:
            cache.ledger.miss(self.function, _model_of(plan.arguments))
        tokens, cost = savings_of(value)
        stored = cache.set(key, value, lifetime=seconds, tags=self.entry_tags(plan.arguments),
                           metadata=self.metadata(plan.arguments, policy), latency=latency, tokens=tokens,
                           cost=cost, stats=self.counters)
        if logger.isEnabledFor(_DEBUG):
            logger.debug("miss %s key=%s latency=%.3fs ttl=%s stored=%s", self.function, key[:12], latency, seconds,
                         "+".join(tier.name for tier in cache.tiers) if stored else "nothing")

    def stats(self) -> Stats:
        return self.counters.snapshot()

    # ---- drivers -----------------------------------------------------------------------

    def begin(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Cache, Plan, str] | None:
        """(cache, plan, key) of a call, or None when it runs uncached (caching off, or bypassed)."""
        cache = self.current_cache()
        if cache is None:
            return None
        plan = self.plan(instance, args, kwargs)
        if plan.key is None:
            self.count_bypass(cache, "non-deterministic", plan.arguments)
            return None
        return cache, plan, plan.key

    def call(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Driver for plain functions and methods."""
        started = self.begin(instance, args, kwargs)
        if started is None:
            return wrapped(*args, **kwargs)
        cache, plan, key = started
        hit = cache.get(key, self.counters)
        if hit is not None:
            if self.early_refresh and self.refresh_due(cache, hit) and self._claim_refresh(key):
                return self._refresh(cache, plan, hit, lambda: wrapped(*args, **kwargs))
            self.count_hit(cache, hit, plan)
            return hit.value
        if self.semantic is not None:  # a paraphrase's answer, or the function wrapped to learn from
            hit, wrapped = self.semantic.consult(cache, plan, wrapped, instance)
            if hit is not None:
                self.count_hit(cache, hit, plan)
                return hit.value

        def compute() -> Any:
            again = cache.get_memory(key)  # a thread that led before us may have stored it
            if again is not None:
                return again
            lifetime = self.lifetime(plan.arguments)
            token, failed = None, False
            try:  # from the lease on, an interruption anywhere still gives the lease back
                if self.lease and lifetime[1] != 0:  # another process may be computing it: wait for its answer
                    token = cache.lease(key, self.lease)
                    if token is None:
                        again, token = self._wait_for(cache, key)
                    if token is not None:  # a holder may have stored it and let go since our miss
                        again = again or cache.get_lower(key)
                    if again is not None:
                        return again
                start = time.perf_counter()
                try:
                    value = wrapped(*args, **kwargs)
                except Exception:
                    failed = True
                    raise
                self.store(cache, plan, value, time.perf_counter() - start, lifetime)
                return value
            finally:
                if token is not None:
                    cache.release(key, token, failed)

        value, led = self.flights.run(key, compute)
        if isinstance(value, Hit):
            self.count_hit(cache, value, plan)
            return value.value
        if not led:
            self.count_hit(cache, self.shared_hit(value), plan)
        return value

    # ---- early refresh (XFetch: Vattani, Chierichetti and Lowenstein, VLDB 2015) ------------

    def refresh_due(self, cache: Cache, hit: Hit) -> bool:
        """Whether this hit should recompute: certain at expiry, likelier the nearer expiry is and the
        longer the call took (``now - latency * beta * ln(U) >= expires_at``, U uniform in (0, 1])."""
        if hit.expires_at is None or hit.latency <= 0:
            return False
        import random  # only functions with early refresh on pay for it

        return cache.clock() - hit.latency * self.early_refresh * math.log(1.0 - random.random()) >= hit.expires_at

    def _claim_refresh(self, key: str) -> bool:
        """Take the early refresh of `key` for this caller, unless another thread of this process has it."""
        with self._refreshing_lock:
            if key in self._refreshing:
                return False
            self._refreshing.add(key)
            return True

    def _refresh(self, cache: Cache, plan: Plan, hit: Hit, run: Callable[[], Any]) -> Any:
        """Recompute and store a hit's value unless another process holds its lease; the stored answer
        when it does, or when the call fails (the entry is still live: a refresh never costs a caller)."""
        key = plan.key or ""
        token = None
        try:
            token = cache.lease(key, self.lease) if self.lease else None
            renewed = _renewed(cache.get_lower(key), hit) if token is not None else None  # by another process?
            if renewed is not None or (self.lease and token is None):
                served = renewed or hit
                self.count_hit(cache, served, plan)
                return served.value
            try:
                start = time.perf_counter()
                value = run()
                self.store(cache, plan, value, time.perf_counter() - start, self.lifetime(plan.arguments))
                return value
            except Exception as exc:
                self._refresh_failed(exc)
                self.count_hit(cache, hit, plan)
                return hit.value
        finally:
            if token is not None:
                cache.release(key, token)
            with self._refreshing_lock:
                self._refreshing.discard(key)

    async def _arefresh(self, cache: Cache, plan: Plan, hit: Hit, run: Callable[[], Any]) -> Any:
        """The async twin of _refresh: the event loop keeps running while it leases and stores."""
        key = plan.key or ""
        token = None
        try:
            token = await _take_lease(cache, key, self.lease) if self.lease else None
            renewed = _renewed(await asyncio.to_thread(cache.get_lower, key), hit) if token is not None else None
            if renewed is not None or (self.lease and token is None):
                served = renewed or hit
                self.count_hit(cache, served, plan)
                return served.value
            try:
                start = time.perf_counter()
                value = await run()
                latency = time.perf_counter() - start
                await asyncio.to_thread(self.store, cache, plan, value, latency, self.lifetime(plan.arguments))
                return value
            except Exception as exc:
                self._refresh_failed(exc)
                self.count_hit(cache, hit, plan)
                return hit.value
        finally:
            try:
                if token is not None:
                    await asyncio.to_thread(cache.release, key, token)
            finally:  # even when cancelled while giving the lease back
                with self._refreshing_lock:
                    self._refreshing.discard(key)

    def _refresh_failed(self, exc: Exception) -> None:
        logger.warning("llm_memo: early refresh of %s failed (%s: %s); serving the stored answer, which is "
                       "still live", self.function, type(exc).__name__, exc)

    def _wait_for(self, cache: Cache, key: str) -> tuple[Hit | None, str | None]:
        """Poll for the leaseholder's answer until it appears or the lease is ours to take (its
        holder finished without storing, failed, or died): (hit, token). A live holder renews its
        lease, so a call longer than `lease` is waited for, never run twice."""
        pause = 0.02
        while True:
            time.sleep(pause)
            pause = min(pause * 1.5, 0.25)
            hit = cache.get_lower(key)
            if hit is not None:
                return hit, None
            token = cache.lease(key, self.lease)
            if token is not None:
                return None, token

    async def _await_for(self, cache: Cache, key: str) -> tuple[Hit | None, str | None]:
        """The async twin of _wait_for: the event loop keeps running while it waits."""
        pause = 0.02
        while True:
            await asyncio.sleep(pause)
            pause = min(pause * 1.5, 0.25)
            hit = await asyncio.to_thread(cache.get_lower, key)
            if hit is not None:
                return hit, None
            token = await _take_lease(cache, key, self.lease)
            if token is not None:
                return None, token

    def shared_hit(self, value: Any) -> Hit:
        """A caller that waited for another's identical call: it saved that call's tokens and cost."""
        tokens, cost = savings_of(value)
        return Hit(value, "flight", 0.0, tokens, cost)

    async def acall(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
        """Driver for async functions: disk and Redis reads run in a worker thread."""
        started = self.begin(instance, args, kwargs)
        if started is None:
            return await wrapped(*args, **kwargs)
        cache, plan, key = started
        hit = cache.get_memory(key, self.counters) or await asyncio.to_thread(cache.get_lower, key, self.counters)
        if hit is not None:
            if self.early_refresh and self.refresh_due(cache, hit) and self._claim_refresh(key):
                return await self._arefresh(cache, plan, hit, lambda: wrapped(*args, **kwargs))
            self.count_hit(cache, hit, plan)
            return hit.value
        if self.semantic is not None:
            hit, wrapped = await asyncio.to_thread(self.semantic.consult, cache, plan, wrapped, instance, True)
            if hit is not None:
                self.count_hit(cache, hit, plan)
                return hit.value

        async def compute() -> Any:
            lifetime = self.lifetime(plan.arguments)
            token, failed = None, False
            try:  # from the lease on, a cancellation anywhere still gives the lease back
                if self.lease and lifetime[1] != 0:
                    token = await _take_lease(cache, key, self.lease)
                    again = None
                    if token is None:
                        again, token = await self._await_for(cache, key)
                    if token is not None:  # a holder may have stored it and let go since our miss
                        again = again or await asyncio.to_thread(cache.get_lower, key)
                    if again is not None:
                        return again
                start = time.perf_counter()
                try:
                    value = await wrapped(*args, **kwargs)
                except Exception:
                    failed = True
                    raise
                latency = time.perf_counter() - start
                await asyncio.to_thread(self.store, cache, plan, value, latency, lifetime)
                return value
            finally:
                if token is not None:
                    await asyncio.to_thread(cache.release, key, token, failed)

        value, led = await self.aflights.run(key, compute)
        if isinstance(value, Hit):
            self.count_hit(cache, value, plan)
            return value.value
        if not led:
            self.count_hit(cache, self.shared_hit(value), plan)
        return value

    def call_generator(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> Any:
        """Driver for generator functions: live chunks on a miss, replay on a hit."""
        started = self.begin(instance, args, kwargs)
        if started is None:
            return wrapped(*args, **kwargs)
        cache, plan, key = started
        hit = cache.get(key, self.counters)
        if hit is not None:
            self.count_hit(cache, hit, plan)
            return replay(hit.value)
        lifetime = self.lifetime(plan.arguments)
        start = time.perf_counter()
        return record(wrapped(*args, **kwargs),
                      lambda chunks: self.store(cache, plan, chunks, time.perf_counter() - start, lifetime))

    def call_async_generator(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                             kwargs: dict[str, Any]) -> Any:
        """Driver for async generator functions (the lookup happens on first iteration)."""
        started = self.begin(instance, args, kwargs)
        if started is None:
            return wrapped(*args, **kwargs)
        cache, plan, key = started
        return self._async_stream(cache, plan, key, wrapped, args, kwargs)

    async def _async_stream(self, cache: Cache, plan: Plan, key: str, wrapped: Callable[..., Any],
                            args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        hit = cache.get_memory(key, self.counters) or await asyncio.to_thread(cache.get_lower, key, self.counters)
        if hit is not None:
            self.count_hit(cache, hit, plan)
            async for chunk in areplay(hit.value):
                yield chunk
            return
        lifetime = self.lifetime(plan.arguments)
        start = time.perf_counter()

        async def done(chunks: list[Any]) -> None:
            await asyncio.to_thread(self.store, cache, plan, chunks, time.perf_counter() - start, lifetime)

        async for chunk in arecord(wrapped(*args, **kwargs), done):
            yield chunk
