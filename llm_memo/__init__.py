"""llm_memo: memoize LLM calls with canonical keys, a determinism guard and tiered storage."""

from ._cache import Cache, configure, default_cache
from ._canonical import register_encoder
from ._codec import allow_type
from ._decorator import CachedFunction, llm_cache
from ._errors import (
    LLMMemoError,
    NonDeterministicCallError,
    NonDeterministicCallWarning,
    UnkeyableArgumentError,
)
from ._policy import CachePolicy, IntentRule, classify_intent
from ._records import Entry, Stats

__version__ = "0.1.0"

__all__ = [
    "Cache",
    "CachePolicy",
    "CachedFunction",
    "Entry",
    "IntentRule",
    "LLMMemoError",
    "NonDeterministicCallError",
    "NonDeterministicCallWarning",
    "Stats",
    "UnkeyableArgumentError",
    "__version__",
    "allow_type",
    "classify_intent",
    "configure",
    "default_cache",
    "llm_cache",
    "register_encoder",
]

# Show the public names as llm_memo.X in reprs and docs, wherever they are defined (httpx's way).
for _name in __all__[:-1]:
    if _name != "__version__":
        globals()[_name].__module__ = "llm_memo"
del _name
