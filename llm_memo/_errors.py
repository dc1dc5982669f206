"""Exceptions and warnings raised by llm_memo.

    LLMMemoError                      base of everything llm_memo raises
    ├── NonDeterministicCallError     temperature > 0 with on_nondeterministic="raise"
    └── UnkeyableArgumentError        an argument has no canonical encoding (also a TypeError)

    NonDeterministicCallWarning       a non-deterministic call was passed through uncached

Infrastructure faults (disk full, Redis down, a corrupted entry) are never raised into
the caller: the call falls through to the real function and the fault is counted.
"""

from __future__ import annotations

import re


class LLMMemoError(Exception):
    """Base class of every exception llm_memo raises."""


class NonDeterministicCallError(LLMMemoError):
    """A call sampled with temperature > 0 while on_nondeterministic="raise"."""

    def __init__(self, function: str, temperature: object) -> None:
        self.function = function
        self.temperature = temperature
        super().__init__(
            f"{function}() was called with temperature={temperature!r}, which samples a "
            "different answer each time, and on_nondeterministic='raise' refuses it. "
            "Pass temperature=0, or choose on_nondeterministic='bypass' (call through "
            "uncached) or 'cache' (record one sample)."
        )


class UnkeyableArgumentError(LLMMemoError, TypeError):
    """An argument cannot be turned into a stable cache key."""

    def __init__(self, parameter: str, type_name: str, reason: str = "") -> None:
        self.parameter = parameter
        self.type_name = type_name
        why = f" ({reason})" if reason else ""
        name = re.match(r"[^.\[{<]*", parameter).group(0)  # type: ignore[union-attr]
        super().__init__(
            f"cannot build a cache key from parameter {parameter!r} of type "
            f"{type_name}{why}. Leave it out with ignore=[{name!r}], "
            "derive the key yourself with key=..., or teach llm_memo the type with "
            "llm_memo.register_encoder(<type>, <function returning a keyable value>)."
        )


class NonDeterministicCallWarning(UserWarning):
    """A non-deterministic call was passed through without caching (warned once per function)."""
