"""Semantic mode's figures as the CLI and the notebook show them, read from semantic.sqlite3 (no numpy)."""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .store import STORE_FILENAME

__all__ = ["SemanticSummary", "semantic_hits", "semantic_matches", "semantic_summary"]

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
