"""The public surface: one sorted, pinned __all__, every name shown as llm_memo.X (httpx's way)."""

from __future__ import annotations

import types

import llm_memo

EXPORTED = [  # ruff's RUF022 order: constants, classes, then the rest
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


def test_all_is_pinned() -> None:
    assert llm_memo.__all__ == EXPORTED


def test_every_public_name_is_exported() -> None:
    public = {name for name, value in vars(llm_memo).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    assert public - set(llm_memo.__all__) == set(), "public names missing from __all__"
    for name in llm_memo.__all__:  # lazily loaded names resolve too
        assert getattr(llm_memo, name) is not None


def test_exported_members_belong_to_llm_memo() -> None:
    for name in llm_memo.__all__:
        member = getattr(llm_memo, name)
        if name.startswith("__") or not callable(member):  # data: __version__, DEFAULT_RULES
            continue
        assert member.__module__ == "llm_memo", f"llm_memo.{name}.__module__ == {member.__module__!r}"


def test_version_is_a_plain_string() -> None:
    assert isinstance(llm_memo.__version__, str)
    assert all(part.isdigit() for part in llm_memo.__version__.split(".")[:2])


def test_errors_form_one_tree() -> None:
    assert issubclass(llm_memo.NonDeterministicCallError, llm_memo.LLMMemoError)
    assert issubclass(llm_memo.UnkeyableArgumentError, llm_memo.LLMMemoError)
    assert issubclass(llm_memo.UnkeyableArgumentError, TypeError)
    assert issubclass(llm_memo.NonDeterministicCallWarning, UserWarning)
