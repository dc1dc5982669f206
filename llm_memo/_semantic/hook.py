"""SemanticMatch bound to one engine: on an exact miss, serve a paraphrase's answer or learn from the call."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._storage.cache import Cache, Hit
from .rule import differs
from .scope import scope_of
from .store import Candidate, Store

if TYPE_CHECKING:
    from .match import SemanticMatch

__all__ = ["SemanticHook", "disabled"]

logger = logging.getLogger("llm_memo")
disabled: contextvars.ContextVar[bool] = contextvars.ContextVar("llm_memo_semantic_off", default=False)


@dataclass(frozen=True)
class _Lesson:
    """What a call that was not served teaches: its candidate's verdict, and its answer to index."""

    cache: Cache
    store: Store
    query: Candidate
    best: Candidate | None  # the candidate to verify, None for a plain miss
    seconds: float | None  # the answer's lifetime (None: never expires)
    key: str  # the call's exact key
    record: bool = True  # False for a guarded candidate: never served, so its verdict says nothing


class SemanticHook:
    """The per-function hook: `consult` on an exact miss (the engine's only call into semantic mode).

    It reads these of the engine: key_function, intent_arg, keys (key, keyed_arguments),
    lifetime(arguments), counters and function.
    """

    def __init__(self, match: SemanticMatch, engine: Any) -> None:
        self.match, self.engine = match, engine

    def consult(self, cache: Cache, plan: Any, wrapped: Callable[..., Any], instance: Any = None,
                is_async: bool = False) -> tuple[Hit | None, Callable[..., Any]]:
        """(a served hit, or None and the function to call in its place, which records what it learns)."""
        if disabled.get():
            return None, wrapped
        try:
            return self._consult(cache, plan, wrapped, instance, is_async)
        except Exception as exc:  # an embedder or store fault never fails the call
            logger.warning("llm_memo: semantic lookup failed (%s: %s); calling the function",
                           type(exc).__name__, exc)
            return None, wrapped

    def _consult(self, cache: Cache, plan: Any, wrapped: Callable[..., Any], instance: Any,
                 is_async: bool) -> tuple[Hit | None, Callable[..., Any]]:
        match = self.match
        _, seconds = self.engine.planner.lifetime(plan.arguments)
        if seconds == 0:
            return None, wrapped  # time-sensitive: never matched, never indexed
        found = scope_of(self.engine, match.embedder_name, plan.arguments, instance)
        if found is None:
            return None, wrapped
        scope, prompt = found
        key = plan.key or ""
        store = match.store_for(cache)
        with store.lock:
            query = Candidate(scope, prompt, match.embed(prompt))
            best = match.nearest(store, query)
            store.count(scope, requests=1)
            if best is None or best.similarity < match.min_similarity:
                return None, self._learning(_Lesson(cache, store, query, None, seconds, key), wrapped, is_async)
            guarded = match.guard and differs(prompt, best.matched)
            bound = self._servable_bound(store, best, guarded)
            if bound is not None and match.rng.random() >= match.explore:
                hit = self._serve(cache, store, best, bound, key)
                if hit is not None:
                    return hit, wrapped
                store.drop(scope, [best.entry] if best.entry is not None else [])
                return None, self._learning(_Lesson(cache, store, query, None, seconds, key), wrapped, is_async)
        lesson = _Lesson(cache, store, query, best, seconds, key, record=not guarded)
        return None, self._learning(lesson, wrapped, is_async)

    def _servable_bound(self, store: Store, best: Candidate, guarded: bool) -> float | None:
        """The error bound of serving `best`, or None when the rule or the budget forbids it."""
        match = self.match
        state = store.scopes[best.scope]
        bound = match.error_bound(state, best.similarity)
        veto = state.wrong_at.get(best.entry or -1, -1.0) >= best.similarity
        budget = match.max_error * state.requests - state.spent
        servable = not veto and not guarded and bound <= match.max_hit_error and bound <= budget
        return bound if servable else None

    def _serve(self, cache: Cache, store: Store, best: Candidate, bound: float, key: str) -> Hit | None:
        """The candidate's cached answer as a semantic hit, recorded; None when it is gone from the cache."""
        hit = cache.get(best.key or "", self.engine.accounts.counters)
        if hit is None:
            return None
        store.served(best.scope, best.key or "", best.prompt, best.similarity, bound, self.match.clock())
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("semantic hit %s key=%s matched=%s similarity=%.4f error<=%.4f prompt=%r",
                         self.engine.function, key[:12], (best.key or "-")[:12], best.similarity, bound,
                         best.matched[:80])
        return Hit(hit.value, "semantic", hit.latency, hit.tokens, hit.cost)

    def _learning(self, lesson: _Lesson, wrapped: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
        """The function to call instead: calls the real one, then learns from its answer."""
        learn = functools.partial(self._learn, lesson)
        if is_async:
            async def arun(*args: Any, **kwargs: Any) -> Any:
                value = await wrapped(*args, **kwargs)
                await asyncio.to_thread(learn, value)
                return value
            return arun

        def run(*args: Any, **kwargs: Any) -> Any:
            value = wrapped(*args, **kwargs)
            learn(value)
            return value
        return run

    def _learn(self, lesson: _Lesson, fresh: Any) -> None:
        """Verify the candidate against the fresh answer; index the answer when it is a new one."""
        match, best, query = self.match, lesson.best, lesson.query
        try:
            cached = lesson.cache.get(best.key, self.engine.accounts.counters) if best is not None and best.key else None
            now = match.clock()
            with lesson.store.lock:
                same = False
                if best is not None and best.entry is not None and cached is not None:
                    same = bool(match.judge(fresh, cached.value))
                    if lesson.record:
                        lesson.store.observe(query.scope, best.entry, best.similarity, same, now)
                if not same:  # a new answer: index it as an entry of its own
                    expires = None if lesson.seconds is None else now + lesson.seconds
                    lesson.store.add(query.scope, key=lesson.key, prompt=query.prompt, vector=query.vector,
                                     expires_at=expires, now=now, limit=match.max_entries_per_scope)
        except Exception as exc:
            logger.warning("llm_memo: semantic bookkeeping failed (%s: %s)", type(exc).__name__, exc)
