"""Semantic mode: serve a paraphrase's cached answer only while the error budget allows it.

Opt-in (``@llm_cache(semantic=SemanticMatch(embedder))``), consulted only after an exact miss.

**Scope.** A candidate must share the call's *scope key*: its exact key computed with the prompt
text (what `extract_prompt` finds: the prompt argument or the user turns) blanked out. Function
identity and source fingerprint, model, temperature and every other argument, system prompt,
tools, response format, version and namespace all stay in it, so none of them is ever crossed.
Calls whose policy stores nothing (NEVER: time-sensitive prompts) take no part.

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

**Index.** Brute-force cosine over one numpy matrix per scope, loaded from SQLite on first use
and topped up with rows other processes added. About 100k entries per scope (150 MB of float32
at 384 dimensions; ~10 ms a lookup) is the intended limit; ``max_entries_per_scope`` keeps the
newest that many.

**Security.** Scopes include the namespace, so tenants never share entries. Residual risk:
within one scope, a caller who can choose prompts can craft one that embeds close to another
user's prompt and, once the scope has learned to serve at that similarity, receive its answer.
Do not enable semantic mode where callers of one scope must not see each other's answers, or
turn it off around a call with ``with SemanticMatch.off(): ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import random
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._logic.policy import PROMPT_ARGUMENTS
from .._storage.cache import Cache, Hit

__all__ = ["STORE_FILENAME", "SemanticMatch", "SemanticSummary", "blank_prompt", "differs", "semantic_hits",
           "semantic_matches", "semantic_summary", "wilson_upper"]

logger = logging.getLogger("llm_memo")
_off: contextvars.ContextVar[bool] = contextvars.ContextVar("llm_memo_semantic_off", default=False)
_Z = 1.645  # one-sided 95 %
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_NEGATION = frozenset({"not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "cannot",
                       "without"})
_WORD = re.compile(r"[A-Za-z][\w']*|\d+(?:[.,]\d+)*")
_SENTENCE_END = re.compile(r"[.?!:]\s*$")


def wilson_upper(errors: int, n: int, z: float = _Z) -> float:
    """One-sided Wilson score upper bound of an error rate (1.0 with no observations)."""
    if n <= 0:
        return 1.0
    p = errors / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z2 / n))


def _features(text: str) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(numbers, negations, capitalised words not opening a sentence) of a prompt."""
    text = text.replace("\u2019", "'")  # typographic apostrophes: "don\u2019t" is "don't"
    numbers = frozenset(_NUMBER.findall(text))
    negations, names = set(), set()
    for found in _WORD.finditer(text):
        word = found.group().lower()
        if word in _NEGATION or word.endswith("n't"):
            negations.add("not")  # "isn't" and "is not" say the same
        elif (found.group()[0].isupper() and word != "i" and found.start()
              and not _SENTENCE_END.search(text[:found.start()])):
            names.add(word.removesuffix("'s"))
    return numbers, frozenset(negations), frozenset(names)


def differs(a: str, b: str, *, names: bool = True) -> bool:
    """The cheap guard: True when numbers, negations (or capitalised names) differ between prompts."""
    fa, fb = _features(a), _features(b)
    return fa[0] != fb[0] or fa[1] != fb[1] or (names and fa[2] != fb[2])


# ---- scope: the exact key with the prompt text blanked ---------------------------------------

def _blank_turns(messages: Any) -> Any:
    """A copy of a message list with the user turns' text blanked (other turns kept)."""
    if not isinstance(messages, (list, tuple)):
        return messages
    out = []
    for message in messages:
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, (list, tuple)):
                content = [{**part, "text": ""} if isinstance(part, Mapping) and "text" in part else part
                           for part in content]
            else:
                content = ""
            message = {**message, "content": content}
        out.append(message)
    return out


def _blank_in(values: Mapping[str, Any], intent_arg: str | None) -> tuple[str, Any] | None:
    """(name, blanked value) of the argument extract_prompt reads in `values`, or None."""
    if intent_arg is not None:
        if intent_arg not in values:
            return None
        value = values[intent_arg]
        return intent_arg, "" if isinstance(value, str) else _blank_turns(value)
    for name in PROMPT_ARGUMENTS:
        if isinstance(values.get(name), str):
            return name, ""
    for name in ("messages", "input"):
        value = values.get(name)
        if isinstance(value, (list, tuple)) and any(
                isinstance(m, Mapping) and m.get("role") == "user" for m in value):
            return name, _blank_turns(value)
    return None


def blank_prompt(arguments: Mapping[str, Any], intent_arg: str | None) -> dict[str, Any] | None:
    """The arguments with the prompt extract_prompt finds blanked, or None when there is none."""
    found = _blank_in(arguments, intent_arg)
    if found is not None:
        return {**arguments, found[0]: found[1]}
    owners: dict[str, str] = {}  # entry name -> the dict argument it is read from (first wins)
    for arg, value in arguments.items():
        if isinstance(value, dict):
            for key in value:
                if isinstance(key, str):
                    owners.setdefault(key, arg)
    merged = {key: arguments[arg][key] for key, arg in owners.items()}
    found = _blank_in(merged, intent_arg)
    if found is None:
        return None
    owner = owners[found[0]]
    return {**arguments, owner: {**arguments[owner], found[0]: found[1]}}


# ---- the persisted store ---------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (id INTEGER PRIMARY KEY, scope TEXT NOT NULL, key TEXT NOT NULL,
    prompt TEXT NOT NULL, vector BLOB NOT NULL, expires_at REAL, created_at REAL NOT NULL,
    threshold REAL);
CREATE INDEX IF NOT EXISTS entries_scope ON entries (scope, id);
CREATE TABLE IF NOT EXISTS observations (entry INTEGER NOT NULL, scope TEXT NOT NULL,
    similarity REAL NOT NULL, correct INTEGER NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS observations_scope ON observations (scope);
CREATE TABLE IF NOT EXISTS scopes (scope TEXT PRIMARY KEY, requests INTEGER NOT NULL DEFAULT 0,
    spent REAL NOT NULL DEFAULT 0, served INTEGER NOT NULL DEFAULT 0,
    verified INTEGER NOT NULL DEFAULT 0, wrong INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS hits (key TEXT NOT NULL, prompt TEXT NOT NULL, similarity REAL NOT NULL,
    error_bound REAL NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS hits_key ON hits (key);
"""
STORE_FILENAME = "semantic.sqlite3"


@dataclass
class _Scope:
    """One scope's index and observations, mirrored from SQLite."""

    ids: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    expiry: list[float] = field(default_factory=list)  # inf: never expires
    matrix: Any = None  # (n, dim) float32, unit rows
    last_id: int = 0
    obs: list[tuple[float, bool]] = field(default_factory=list)  # pooled, sorted by similarity
    wrong_at: dict[int, float] = field(default_factory=dict)  # entry id -> highest wrong similarity
    requests: int = 0
    spent: float = 0.0


class _Store:
    """semantic.sqlite3 beside a cache's disk tier; every failure is the caller's to fall through."""

    def __init__(self, path: str) -> None:
        if path != ":memory:":
            from .._storage.disk import create_private  # diskcache loads only with a disk tier

            create_private(path)  # it holds prompts, like the entries themselves
        self.db = sqlite3.connect(path, timeout=5.0, check_same_thread=False, isolation_level=None)
        self.db.executescript(_SCHEMA)
        self.lock = threading.RLock()
        self.scopes: dict[str, _Scope] = {}

    def scope(self, name: str, dim: int) -> _Scope:
        """The scope's mirror, topped up with rows any process added since the last look."""
        import numpy as np

        state = self.scopes.get(name)
        if state is None:
            state = self.scopes[name] = _Scope(matrix=np.zeros((0, dim), dtype=np.float32))
            row = self.db.execute("SELECT requests, spent FROM scopes WHERE scope=?", (name,)).fetchone()
            if row:
                state.requests, state.spent = row
            for entry, sim, correct in self.db.execute(
                    "SELECT entry, similarity, correct FROM observations WHERE scope=?", (name,)):
                self._note(state, entry, sim, bool(correct))
        rows = self.db.execute("SELECT id, key, prompt, vector, expires_at FROM entries "
                               "WHERE scope=? AND id>? ORDER BY id", (name, state.last_id)).fetchall()
        if rows:
            vectors = [np.frombuffer(r[3], dtype=np.float32) for r in rows]
            fresh = [(r, v) for r, v in zip(rows, vectors, strict=True) if v.shape[0] == dim]
            if fresh:
                state.matrix = np.vstack([state.matrix, np.stack([v for _, v in fresh])])
                for r, _ in fresh:
                    state.ids.append(r[0])
                    state.keys.append(r[1])
                    state.prompts.append(r[2])
                    state.expiry.append(math.inf if r[4] is None else r[4])
            state.last_id = rows[-1][0]
        return state

    @staticmethod
    def _note(state: _Scope, entry: int, similarity: float, correct: bool) -> None:
        import bisect

        bisect.insort(state.obs, (similarity, correct))
        if not correct:
            state.wrong_at[entry] = max(similarity, state.wrong_at.get(entry, -1.0))

    def add(self, name: str, key: str, prompt: str, vector: Any, expires_at: float | None, now: float,
            limit: int) -> None:
        self.db.execute("INSERT INTO entries (scope, key, prompt, vector, expires_at, created_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (name, key, prompt, vector.tobytes(), expires_at, now))
        state = self.scope(name, vector.shape[0])
        if len(state.ids) > limit:
            self.drop(name, state.ids[: len(state.ids) - limit])

    def drop(self, name: str, ids: list[int]) -> None:
        import numpy as np

        gone = set(ids)
        self.db.executemany("DELETE FROM entries WHERE id=?", [(i,) for i in ids])
        state = self.scopes[name]
        keep = [i for i, entry in enumerate(state.ids) if entry not in gone]
        state.matrix = state.matrix[np.array(keep, dtype=np.int64)] if keep else state.matrix[:0]
        for attr in ("ids", "keys", "prompts", "expiry"):
            values = getattr(state, attr)
            setattr(state, attr, [values[i] for i in keep])

    def observe(self, name: str, entry: int, similarity: float, correct: bool, now: float) -> None:
        self.db.execute("INSERT INTO observations VALUES (?, ?, ?, ?, ?)",
                        (entry, name, similarity, int(correct), now))
        self._note(self.scopes[name], entry, similarity, correct)
        wrong = self.scopes[name].wrong_at.get(entry)
        if wrong is not None:
            self.db.execute("UPDATE entries SET threshold=? WHERE id=?", (wrong, entry))
        self.db.execute("INSERT INTO scopes (scope, verified, wrong) VALUES (?, 1, ?) ON CONFLICT(scope) "
                        "DO UPDATE SET verified=verified+1, wrong=wrong+excluded.wrong", (name, int(not correct)))

    def served(self, name: str, key: str, prompt: str, similarity: float, bound: float, now: float) -> None:
        """Record a semantic hit: which entry answered which prompt, how close, at what risk."""
        self.db.execute("INSERT INTO hits VALUES (?, ?, ?, ?, ?)", (key, prompt, similarity, bound, now))
        self.count(name, spent=bound, served=1)

    def count(self, name: str, requests: int = 0, spent: float = 0.0, served: int = 0) -> None:
        state = self.scopes[name]
        state.requests += requests
        state.spent += spent
        self.db.execute("INSERT INTO scopes (scope, requests, spent, served) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT(scope) DO UPDATE SET requests=requests+excluded.requests, "
                        "spent=spent+excluded.spent, served=served+excluded.served",
                        (name, requests, spent, served))


# ---- the public object ------------------------------------------------------------------------

@dataclass(frozen=True)
class _Candidate:
    scope: str
    prompt: str
    vector: Any
    entry: int | None = None
    key: str | None = None
    similarity: float = 0.0
    matched: str = ""  # the stored prompt, for the guard and the log


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
        self._stores: weakref.WeakKeyDictionary[Cache, _Store] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    @staticmethod
    @contextlib.contextmanager
    def off() -> Iterator[None]:
        """Turn semantic mode off for the calls made inside the block (this thread or task)."""
        token = _off.set(True)
        try:
            yield
        finally:
            _off.reset(token)

    def attach(self, engine: Any) -> _Attached:
        """The per-function hook the engine calls on an exact miss."""
        if engine.key_function is not None:
            raise TypeError("semantic= cannot be combined with key=: the scope is derived from the arguments")
        return _Attached(self, engine)

    def store_for(self, cache: Cache) -> _Store:
        with self._lock:
            store = self._stores.get(cache)
            if store is None:
                disk = any(t.name == "disk" for t in cache.tiers)
                if disk:
                    cache.directory.mkdir(parents=True, exist_ok=True)
                store = _Store(str(cache.directory / STORE_FILENAME) if disk else ":memory:")
                self._stores[cache] = store
            return store

    def embed(self, text: str) -> Any:
        import numpy as np

        vector = np.asarray(self.embedder([text]), dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector

    def error_bound(self, state: _Scope, similarity: float) -> float:
        """Wilson upper bound of the error among the scope's observations in [s - window, s]."""
        import bisect

        lo = bisect.bisect_left(state.obs, (similarity - self.window, False))
        hi = bisect.bisect_right(state.obs, (similarity, True))
        window = state.obs[lo:hi]
        return wilson_upper(sum(1 for _, ok in window if not ok), len(window))

    def nearest(self, store: _Store, query: _Candidate) -> _Candidate | None:
        """The best live candidate in the scope (re-scored by the verifier when there is one)."""
        import numpy as np

        state = store.scope(query.scope, query.vector.shape[0])
        if not state.ids:
            return None
        sims = state.matrix @ query.vector
        now = self.clock()
        best: _Candidate | None = None
        expired = []
        k = min(max(1, self.top_k), len(sims))
        top = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))
        for i in top[np.argsort(-sims[top])]:
            if state.expiry[i] <= now:
                expired.append(state.ids[i])
                continue
            score = float(sims[i]) if self.verifier is None else float(self.verifier(query.prompt, state.prompts[i]))
            if best is None or score > best.similarity:
                best = _Candidate(query.scope, query.prompt, query.vector, state.ids[i], state.keys[i], score,
                                  state.prompts[i])
            if self.verifier is None:
                break
        if expired:
            store.drop(query.scope, expired)
            if best is None:
                return self.nearest(store, query)
        return best


class _Attached:
    """SemanticMatch bound to one engine: scope keys, the decision, and the observation."""

    def __init__(self, match: SemanticMatch, engine: Any) -> None:
        self.match, self.engine = match, engine

    def scope_of(self, arguments: dict[str, Any], instance: Any) -> tuple[str, str] | None:
        """(scope key, prompt text) of a call, or None when it has no prompt."""
        from .._logic.policy import extract_prompt

        prompt = extract_prompt(arguments, self.engine.intent_arg)
        blanked = blank_prompt(arguments, self.engine.intent_arg) if prompt else None
        if blanked is None or prompt is None:
            return None
        keys = self.engine.keys
        scope = keys.key(keys.keyed_arguments(blanked, instance))
        return f"{self.match.embedder_name}/{scope}", prompt

    def consult(self, cache: Cache, plan: Any, wrapped: Callable[..., Any], instance: Any = None,
                is_async: bool = False) -> tuple[Hit | None, Callable[..., Any]]:
        """(a served hit, or None and the function to call in its place, which records what it learns)."""
        if _off.get():
            return None, wrapped
        try:
            return self._consult(cache, plan, wrapped, instance, is_async)
        except Exception as exc:  # an embedder or store fault never fails the call
            logger.warning("llm_memo: semantic lookup failed (%s: %s); calling the function",
                           type(exc).__name__, exc)
            return None, wrapped

    def _consult(self, cache: Cache, plan: Any, wrapped: Callable[..., Any], instance: Any,
                 is_async: bool) -> tuple[Hit | None, Callable[..., Any]]:
        match, engine = self.match, self.engine
        _, seconds = engine.lifetime(plan.arguments)
        if seconds == 0:
            return None, wrapped  # time-sensitive: never matched, never indexed
        found = self.scope_of(plan.arguments, instance)
        if found is None:
            return None, wrapped
        scope, prompt = found
        key = plan.key or ""
        store = match.store_for(cache)
        with store.lock:
            query = _Candidate(scope, prompt, match.embed(prompt))
            best = match.nearest(store, query)
            store.count(scope, requests=1)
            state = store.scopes[scope]
            if best is None or best.similarity < match.min_similarity:
                return None, self._observer(cache, store, query, None, seconds, key, wrapped, is_async)
            bound = match.error_bound(state, best.similarity)
            veto = state.wrong_at.get(best.entry or -1, -1.0) >= best.similarity
            guarded = match.guard and differs(prompt, best.matched)
            budget = match.max_error * state.requests - state.spent
            servable = not veto and not guarded and bound <= match.max_hit_error and bound <= budget
            if servable and match.rng.random() >= match.explore:
                hit = cache.get(best.key or "", engine.counters)
                if hit is not None:
                    store.served(scope, best.key or "", prompt, best.similarity, bound, match.clock())
                    if logger.isEnabledFor(logging.DEBUG):
                        logger.debug("semantic hit %s key=%s matched=%s similarity=%.4f error<=%.4f "
                                     "prompt=%r", engine.function, key[:12], (best.key or "-")[:12],
                                     best.similarity, bound, best.matched[:80])
                    return Hit(hit.value, "semantic", hit.latency, hit.tokens, hit.cost), wrapped
                store.drop(scope, [best.entry] if best.entry is not None else [])
                return None, self._observer(cache, store, query, None, seconds, key, wrapped, is_async)
        # A guarded candidate is never served, so its outcome says nothing about serving: not recorded.
        return None, self._observer(cache, store, query, best, seconds, key, wrapped, is_async, record=not guarded)

    def _observer(self, cache: Cache, store: _Store, query: _Candidate, best: _Candidate | None,
                  seconds: float | None, key: str, wrapped: Callable[..., Any],
                  is_async: bool, record: bool = True) -> Callable[..., Any]:
        """The function to call instead: calls the real one, then verifies and indexes its answer."""
        match = self.match

        def learn(fresh: Any) -> None:
            try:
                cached = cache.get(best.key, self.engine.counters) if best is not None and best.key else None
                now = match.clock()
                with store.lock:
                    same = False
                    if best is not None and best.entry is not None and cached is not None:
                        same = bool(match.judge(fresh, cached.value))
                        if record:
                            store.observe(query.scope, best.entry, best.similarity, same, now)
                    if not same:  # a new answer: index it as an entry of its own
                        expires = None if seconds is None else now + seconds
                        store.add(query.scope, key, query.prompt, query.vector, expires, now,
                                  match.max_entries_per_scope)
            except Exception as exc:
                logger.warning("llm_memo: semantic bookkeeping failed (%s: %s)", type(exc).__name__, exc)

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


# ---- reports (the CLI and the notebook read these; nothing here needs numpy) -----------------

@dataclass(frozen=True)
class SemanticSummary:
    """Semantic mode's lifetime figures for one cache directory, over all scopes."""

    requests: int  # exact misses that semantic mode looked at
    served: int  # answered from a paraphrase's entry
    verified: int  # near a candidate, called the function and compared
    wrong: int  # verifications whose fresh answer differed from the candidate's
    spent: float  # the served hits' error bounds, summed: the expected wrong answers are at most this
    mean_similarity: float  # of the served hits (0.0 without any)

    @property
    def hit_rate(self) -> float:
        """Served over requests."""
        return self.served / self.requests if self.requests else 0.0

    @property
    def observed_error(self) -> float:
        """Wrong over verified: how often a candidate near the boundary would have been wrong."""
        return self.wrong / self.verified if self.verified else 0.0

    @property
    def error_bound(self) -> float:
        """Spent over requests: the bound on the fraction answered wrongly, held under max_error."""
        return self.spent / self.requests if self.requests else 0.0


def _rows(directory: Any, sql: str, params: tuple[Any, ...] = ()) -> list[Any] | None:
    """Rows of a read-only query on the semantic store in `directory`; None when there is none."""
    path = Path(directory) / STORE_FILENAME
    if not path.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5.0)) as db:
            return db.execute(sql, params).fetchall()
    except sqlite3.Error:
        return None


def semantic_summary(directory: Any) -> SemanticSummary | None:
    """The figures of the semantic store in `directory`, or None when semantic mode never ran there."""
    totals = _rows(directory, "SELECT TOTAL(requests), TOTAL(served), TOTAL(verified), TOTAL(wrong), TOTAL(spent), "
                              "(SELECT AVG(similarity) FROM hits) FROM scopes")
    if not totals:
        return None
    requests, served, verified, wrong, spent, mean = totals[0]
    return SemanticSummary(int(requests), int(served), int(verified), int(wrong), float(spent), float(mean or 0.0))


def semantic_hits(directory: Any, key: str, limit: int = 20) -> list[tuple[str, float, float]]:
    """The newest prompts the entry under `key` answered semantically: (prompt, similarity, at)."""
    return _rows(directory, "SELECT prompt, similarity, at FROM hits WHERE key=? ORDER BY at DESC LIMIT ?",
                 (key, limit)) or []


def semantic_matches(directory: Any) -> dict[str, tuple[int, str]]:
    """{entry key: (semantic hits, the newest prompt it answered)} for every entry that had one."""
    rows = _rows(directory, "SELECT key, COUNT(*), prompt, MAX(at) FROM hits GROUP BY key") or []
    return {key: (count, prompt) for key, count, prompt, _ in rows}
