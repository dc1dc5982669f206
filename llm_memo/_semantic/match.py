"""Semantic mode: serve a paraphrase's cached answer only while the error budget allows it.

Opt-in (``@llm_cache(semantic=SemanticMatch(embedder))``), consulted only after an exact miss.

**Scope** (llm_memo._semantic.scope): a candidate must share the call's exact key computed with
the prompt text blanked out, so no other argument, model, system prompt or namespace is ever
crossed. Calls whose policy stores nothing (NEVER: time-sensitive prompts) take no part.

**Decision rule** (in the spirit of vCache, "verified semantic prompt caching", 2025: learn
from verified reuse when it is safe; this is our own, simpler estimator). For the nearest stored
prompt at cosine similarity ``s``:

1. ``s < min_similarity``: a plain miss; the answer is stored and indexed.
2. Every *verification* (an exact miss near a candidate that was not served) calls the real
   function, compares the fresh answer with the candidate's (``judge``, default ``==``) and records
   the observation ``(s, correct)`` on that entry. A differing fresh answer becomes a new entry.
3. ``e(s)``, the pessimistic error of serving at ``s``: the Wilson upper bound (one-sided 95 %) of
   the error rate among the scope's observations with similarity in ``[s - window, s]``. Correctness
   is taken to be monotone in similarity, so observations at or below ``s`` can only overstate the
   error at ``s``; pooling the scope is the prior an entry with few observations needs (a
   per-entry logistic fit has nothing to fit on one or two points). Per entry, one wrong
   observation at a similarity ``>= s`` vetoes serving that entry at ``s`` (its own boundary).
4. Serve when ``e(s) <= max_hit_error`` (0.5: no single answer more likely wrong than right;
   at 0.3 the budget never bound on our evaluation, so max_error changed nothing) and the
   scope's error budget holds:
   ``spent + e(s) <= max_error * requests``, where ``requests`` counts the scope's exact misses
   seen by semantic mode and ``spent`` sums ``e`` over the answers served. With probability
   ``explore`` a servable request is verified instead, which keeps observations coming from the
   region being served.

Why this bounds the fraction of wrong answers: verified and plain misses return the real answer,
so only served answers can be wrong, each with probability at most its ``e`` (while the bounds
hold); the expected number of wrong answers is at most ``spent <= max_error * requests``. The
bound counts requests that reach semantic mode (exact hits, never wrong, are left out, so the
fraction over all requests is lower still). Counters, observations and vectors persist in
``semantic.sqlite3`` in the cache directory (in memory for a cache without a disk tier).

**Security.** Scopes include the namespace, so tenants never share entries. Residual risk:
within one scope, a caller who can choose prompts can craft one that embeds close to another
user's prompt and, once the scope has learned to serve at that similarity, receive its answer.
Do not enable semantic mode where callers of one scope must not see each other's answers, or
turn it off around a call with ``with SemanticMatch.off(): ...``.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from .._storage.cache import Cache
from .hook import SemanticHook, disabled
from .rule import error_bound
from .store import STORE_FILENAME, Candidate, ScopeState, Store

__all__ = ["SemanticMatch"]


class SemanticMatch:
    """Serve a cached answer to a paraphrase while the measured error stays under `max_error`.

    embedder: any callable taking a list of texts and returning an (n, dim) array.
    max_error: the bound on the fraction of semantic-mode requests answered wrongly.
    verifier: optional callable (query, candidate prompt) -> score in [0, 1] that replaces the
        cosine of the top candidates. judge: callable (fresh, cached) -> bool (default ==).
    guard: refuse (verify instead) when numbers, negations or capitalised names differ.
    See the module docstring of llm_memo._semantic.match for the rule and its bound.
    """

    def __init__(self, embedder: Callable[[list[str]], Any], *, max_error: float = 0.02,
                 verifier: Callable[[str, str], float] | None = None,
                 judge: Callable[[Any, Any], bool] | None = None, min_similarity: float = 0.7,
                 max_entries_per_scope: int = 100_000, guard: bool = True, explore: float = 0.05,
                 window: float = 0.05, max_hit_error: float = 0.5, top_k: int = 4,
                 rng: random.Random | None = None, clock: Callable[[], float] | None = None) -> None:
        import numpy  # noqa: F401 (fail here, with the hint, rather than on the first call)

        if not callable(embedder):
            raise TypeError(f"SemanticMatch takes an embedder: a callable list[str] -> array; got {embedder!r}")
        if not 0.0 <= max_error < 1.0:
            raise ValueError(f"max_error must be a fraction in [0, 1); got max_error={max_error!r}")
        if not -1.0 <= min_similarity <= 1.0:
            raise ValueError(f"min_similarity must be a cosine in [-1, 1]; got {min_similarity!r}")
        if max_entries_per_scope < 1:
            raise ValueError(f"max_entries_per_scope must be >= 1; got {max_entries_per_scope!r}")
        self.embedder = embedder
        self.embedder_name = str(getattr(embedder, "name", None)
                                 or getattr(embedder, "__qualname__", type(embedder).__qualname__))
        self.max_error, self.min_similarity = max_error, min_similarity
        self.verifier, self.judge = verifier, judge or (lambda fresh, cached: fresh == cached)
        self.max_entries_per_scope, self.guard = max_entries_per_scope, guard
        self.explore, self.window, self.max_hit_error, self.top_k = explore, window, max_hit_error, top_k
        self.rng = rng or random.Random()
        self.clock = clock or time.time
        self._stores: weakref.WeakKeyDictionary[Cache, Store] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    @staticmethod
    @contextlib.contextmanager
    def off() -> Iterator[None]:
        """Turn semantic mode off for the calls made inside the block (this thread or task)."""
        token = disabled.set(True)
        try:
            yield
        finally:
            disabled.reset(token)

    def attach(self, engine: Any) -> SemanticHook:
        """The per-function hook the engine calls on an exact miss."""
        if engine.planner.key_function is not None:
            raise TypeError("semantic= cannot be combined with key=: the scope is derived from the arguments")
        return SemanticHook(self, engine)

    def store_for(self, cache: Cache) -> Store:
        """The cache's semantic store: beside its disk tier, else in memory."""
        with self._lock:
            store = self._stores.get(cache)
            if store is None:
                disk = any(t.name == "disk" for t in cache.tiers)
                if disk:
                    cache.directory.mkdir(parents=True, exist_ok=True)
                store = Store(str(cache.directory / STORE_FILENAME) if disk else ":memory:")
                self._stores[cache] = store
            return store

    def embed(self, text: str) -> Any:
        """The prompt's unit vector."""
        import numpy as np

        vector = np.asarray(self.embedder([text]), dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector

    def error_bound(self, state: ScopeState, similarity: float) -> float:
        """Wilson upper bound of the error among the scope's observations in [s - window, s]."""
        return error_bound(state.obs, similarity, self.window)

    def nearest(self, store: Store, query: Candidate) -> Candidate | None:
        """The best live candidate in the query's scope (re-scored by the verifier when there is one)."""
        return store.nearest(query, self.clock(), self.top_k, self.verifier)
