"""The decision rule's pure parts: the pessimistic error at a similarity and the cheap guard."""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Sequence

__all__ = ["differs", "error_bound", "wilson_upper"]

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


def error_bound(observations: Sequence[tuple[float, bool]], similarity: float, window: float) -> float:
    """Wilson upper bound of the error among observations (sorted) with similarity in [s - window, s]."""
    lo = bisect.bisect_left(observations, (similarity - window, False))
    hi = bisect.bisect_right(observations, (similarity, True))
    near = observations[lo:hi]
    return wilson_upper(sum(1 for _, ok in near if not ok), len(near))


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
