"""llm_memo: memoize LLM calls with canonical keys, a determinism guard and tiered storage."""

import typing as _typing

from ._adapters.decorator import CachedFunction, llm_cache
from ._adapters.openai import wrap
from ._engine.config import configure, default_cache
from ._engine.config import hooks as _hooks
from ._engine.options import cache_options
from ._engine.warm import WarmReport
from ._errors import (
    LLMMemoError,
    NonDeterministicCallError,
    NonDeterministicCallWarning,
    UnkeyableArgumentError,
)
from ._logic.canonical import register_encoder
from ._logic.policy import DEFAULT_RULES, CachePolicy, IntentRule, classify_intent
from ._logic.pricing import register_price
from ._logic.prompt_cache import mark_cache_control, provider_cache_usage
from ._logic.records import Entry, Stats
from ._logic.trust import allow_type
from ._storage.cache import Cache

if _typing.TYPE_CHECKING:
    from ._semantic.embedders import minilm_embedder, openai_embedder
    from ._semantic.match import SemanticMatch
    from ._storage.disk import DiskTier
    from ._storage.memory import MemoryTier
    from ._storage.redis import RedisTier
    from ._storage.tier import Tier
    from .testing.server import LocalServer

# Loaded on first use: the server (http.server, email...), semantic mode and the tier classes
# (diskcache, redis) are not on the hot path.
_LAZY = {"LocalServer": "testing.server", "SemanticMatch": "_semantic.match",
         "minilm_embedder": "_semantic.embedders", "openai_embedder": "_semantic.embedders",
         "Tier": "_storage.tier", "MemoryTier": "_storage.memory", "DiskTier": "_storage.disk",
         "RedisTier": "_storage.redis"}

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_RULES",
    "Cache",
    "CachePolicy",
    "CachedFunction",
    "DiskTier",
    "Entry",
    "IntentRule",
    "LLMMemoError",
    "LocalServer",
    "MemoryTier",
    "NonDeterministicCallError",
    "NonDeterministicCallWarning",
    "RedisTier",
    "SemanticMatch",
    "Stats",
    "Tier",
    "UnkeyableArgumentError",
    "WarmReport",
    "__version__",
    "allow_type",
    "cache_options",
    "classify_intent",
    "configure",
    "default_cache",
    "llm_cache",
    "load_ipython_extension",
    "mark_cache_control",
    "minilm_embedder",
    "openai_embedder",
    "provider_cache_usage",
    "register_encoder",
    "register_price",
    "wrap",
]


def _notebook_badge(function: str, hit: _typing.Any) -> None:
    """A hit's badge below the notebook cell; the notebook tools load on the first one shown."""
    import sys

    if "IPython" in sys.modules:  # joblib's check: only where IPython already runs
        from ._tools.jupyter import show_badge

        show_badge(function, hit)


_hooks.notebook_badge = _notebook_badge


def load_ipython_extension(ipython: _typing.Any) -> None:
    """`%load_ext llm_memo`: register the %llm_memo magic (IPython loads only here)."""
    from ._tools.jupyter import load_ipython_extension as load

    load(ipython)


# Show the public names as llm_memo.X in reprs and docs, wherever they are defined (httpx's way).
for _name in __all__:
    if _name not in _LAZY and callable(globals()[_name]):  # not data such as DEFAULT_RULES
        globals()[_name].__module__ = "llm_memo"
del _name


def __getattr__(name: str) -> _typing.Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"llm_memo.{_LAZY[name]}"), name)
        value.__module__ = "llm_memo"
        globals()[name] = value  # the next look-up is a plain attribute
        return value
    raise AttributeError(f"module 'llm_memo' has no attribute {name!r}")
