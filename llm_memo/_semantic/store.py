"""The vectors, observations and counters of every scope, persisted in semantic.sqlite3.

The index is brute-force cosine over one numpy matrix per scope, loaded from SQLite on first use
and topped up with rows other processes added. About 100k entries per scope (150 MB of float32
at 384 dimensions; ~10 ms a lookup) is the intended limit; ``max_entries_per_scope`` keeps the
newest that many.
"""

from __future__ import annotations

import bisect
import math
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["STORE_FILENAME", "Candidate", "ScopeState", "Store"]

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
class ScopeState:
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

    def note(self, entry: int, similarity: float, correct: bool) -> None:
        """Pool one observation, and raise the entry's own boundary when it was wrong."""
        bisect.insort(self.obs, (similarity, correct))
        if not correct:
            self.wrong_at[entry] = max(similarity, self.wrong_at.get(entry, -1.0))


@dataclass(frozen=True)
class Candidate:
    """A call's prompt in its scope and, once matched, the stored entry nearest it (`matched` its prompt)."""

    scope: str
    prompt: str
    vector: Any
    entry: int | None = None
    key: str | None = None
    similarity: float = 0.0
    matched: str = ""  # the stored prompt, for the guard and the log


class Store:
    """semantic.sqlite3 beside a cache's disk tier; every failure is the caller's to fall through."""

    def __init__(self, path: str) -> None:
        if path != ":memory:":
            from .._storage.disk import create_private  # diskcache loads only with a disk tier

            create_private(path)  # it holds prompts, like the entries themselves
        self.db = sqlite3.connect(path, timeout=5.0, check_same_thread=False, isolation_level=None)
        self.db.executescript(_SCHEMA)
        self.lock = threading.RLock()
        self.scopes: dict[str, ScopeState] = {}

    def scope(self, name: str, dim: int) -> ScopeState:
        """The scope's mirror, topped up with rows any process added since the last look."""
        import numpy as np

        state = self.scopes.get(name)
        if state is None:
            state = self.scopes[name] = ScopeState(matrix=np.zeros((0, dim), dtype=np.float32))
            row = self.db.execute("SELECT requests, spent FROM scopes WHERE scope=?", (name,)).fetchone()
            if row:
                state.requests, state.spent = row
            for entry, sim, correct in self.db.execute(
                    "SELECT entry, similarity, correct FROM observations WHERE scope=?", (name,)):
                state.note(entry, sim, bool(correct))
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

    def nearest(self, query: Candidate, now: float, top_k: int,
                verifier: Callable[[str, str], float] | None) -> Candidate | None:
        """The best live candidate among the top_k by cosine (re-scored by the verifier when there is one)."""
        import numpy as np

        while True:
            state = self.scope(query.scope, query.vector.shape[0])
            if not state.ids:
                return None
            sims = state.matrix @ query.vector
            best: Candidate | None = None
            expired = []
            k = min(max(1, top_k), len(sims))
            top = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))
            for i in top[np.argsort(-sims[top])]:
                if state.expiry[i] <= now:
                    expired.append(state.ids[i])
                    continue
                score = float(sims[i]) if verifier is None else float(verifier(query.prompt, state.prompts[i]))
                if best is None or score > best.similarity:
                    best = Candidate(query.scope, query.prompt, query.vector, state.ids[i], state.keys[i], score,
                                     state.prompts[i])
                if verifier is None:
                    break
            self.drop(query.scope, expired)
            if best is not None or not expired:
                return best

    def add(self, name: str, key: str, prompt: str, vector: Any, expires_at: float | None, now: float,
            limit: int) -> None:
        """Index a new entry, dropping the scope's oldest beyond `limit`."""
        self.db.execute("INSERT INTO entries (scope, key, prompt, vector, expires_at, created_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (name, key, prompt, vector.tobytes(), expires_at, now))
        state = self.scope(name, vector.shape[0])
        if len(state.ids) > limit:
            self.drop(name, state.ids[: len(state.ids) - limit])

    def drop(self, name: str, ids: list[int]) -> None:
        """Forget entries of a scope, on disk and in its mirror."""
        if not ids:
            return
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
        """Record a verification: was the fresh answer the candidate's, at this similarity."""
        self.db.execute("INSERT INTO observations VALUES (?, ?, ?, ?, ?)",
                        (entry, name, similarity, int(correct), now))
        state = self.scopes[name]
        state.note(entry, similarity, correct)
        wrong = state.wrong_at.get(entry)
        if wrong is not None:
            self.db.execute("UPDATE entries SET threshold=? WHERE id=?", (wrong, entry))
        self.db.execute("INSERT INTO scopes (scope, verified, wrong) VALUES (?, 1, ?) ON CONFLICT(scope) "
                        "DO UPDATE SET verified=verified+1, wrong=wrong+excluded.wrong", (name, int(not correct)))

    def served(self, name: str, key: str, prompt: str, similarity: float, bound: float, now: float) -> None:
        """Record a semantic hit: which entry answered which prompt, how close, at what risk."""
        self.db.execute("INSERT INTO hits VALUES (?, ?, ?, ?, ?)", (key, prompt, similarity, bound, now))
        self.count(name, spent=bound, served=1)

    def count(self, name: str, requests: int = 0, spent: float = 0.0, served: int = 0) -> None:
        """Add to the scope's counters (requests seen, error spent, answers served)."""
        state = self.scopes[name]
        state.requests += requests
        state.spent += spent
        self.db.execute("INSERT INTO scopes (scope, requests, spent, served) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT(scope) DO UPDATE SET requests=requests+excluded.requests, "
                        "spent=spent+excluded.spent, served=served+excluded.served",
                        (name, requests, spent, served))
