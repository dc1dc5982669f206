"""llm_memo: memoize LLM calls with canonical keys, a determinism guard and tiered storage."""

import typing as _typing

from ._cache import Cache, configure, default_cache
from ._canonical import register_encoder
from ._decorator import CachedFunction, llm_cache
from ._errors import (
    LLMMemoError,
    NonDeterministicCallError,
    NonDeterministicCallWarning,
    UnkeyableArgumentError,
)
from ._openai import wrap
from ._policy import DEFAULT_RULES, CachePolicy, IntentRule, classify_intent
from ._pricing import register_price
from ._prompt_cache import mark_cache_control, provider_cache_usage
from ._records import Entry, Stats
from ._trust import allow_type
from ._warm import WarmReport

if _typing.TYPE_CHECKING:
    from ._embedders import minilm_embedder, openai_embedder
    from ._semantic import SemanticMatch
    from ._server import LocalServer

# Loaded on first use: the server (http.server, email...) and semantic mode are not on the hot path.
_LAZY = {"LocalServer": "_server", "SemanticMatch": "_semantic", "minilm_embedder": "_embedders",
         "openai_embedder": "_embedders"}

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_RULES",
    "Cache",
    "CachePolicy",
    "CachedFunction",
    "Entry",
    "IntentRule",
    "LLMMemoError",
    "LocalServer",
    "NonDeterministicCallError",
    "NonDeterministicCallWarning",
    "SemanticMatch",
    "Stats",
    "UnkeyableArgumentError",
    "WarmReport",
    "__version__",
    "allow_type",
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


def load_ipython_extension(ipython: _typing.Any) -> None:
    """`%load_ext llm_memo`: register the %llm_memo magic (IPython loads only here)."""
    from ._jupyter import load_ipython_extension as load

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
