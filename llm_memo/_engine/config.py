"""The process-wide settings: the default cache, on/off, the default policy, and the observers."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from .._logic.policy import CachePolicy, PolicyCallable, validate_policy
from .._logic.policy import _choices as policy_choices
from .._storage.cache import Cache, Hit

__all__ = ["Hooks", "caching_enabled", "configure", "default_cache", "default_policy", "hooks"]

_default: Cache | None = None
_default_lock = threading.Lock()
_enabled = os.environ.get("LLM_MEMO_DISABLE", "").strip().lower() in ("", "0", "false", "no")
_policy: CachePolicy | PolicyCallable | None = None  # set by configure(policy=...)


class Hooks:
    """Observers the engine calls; each is None when off, so the hot path pays one check.
    notebook_badge is registered by the layer that owns it (the package root, for the notebook
    tools): this layer never imports upwards, even by name."""

    on_hit: Callable[[str, Hit], None] | None = None  # (function name, hit)
    notebook_badge: Callable[[str, Hit], None] | None = None


hooks = Hooks()


def caching_enabled() -> bool:
    """False when LLM_MEMO_DISABLE=1 or configure(enabled=False) turned caching off."""
    return _enabled


def default_policy() -> CachePolicy | PolicyCallable:
    """The policy of calls whose function names none: configure(policy=...), else the
    LLM_MEMO_POLICY environment variable, else "auto" (the intent rules). Read at each call."""
    if _policy is not None:
        return _policy
    value = os.environ.get("LLM_MEMO_POLICY", "").strip()
    try:
        return validate_policy(value or "auto")
    except ValueError:
        raise ValueError(f"LLM_MEMO_POLICY={value!r} is not a cache policy; set it to one of "
                         f"{policy_choices('auto')}, or unset it") from None


def default_cache() -> Cache:
    """The cache used when a decorator names none (created on first use)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Cache()
    return _default


def configure(directory: str | os.PathLike[str] | None = None, *, enabled: bool | None = None,
              notebook_badges: bool | None = None, policy: CachePolicy | str | PolicyCallable | None = None,
              **options: Any) -> Cache:
    """Set process-wide settings; with a directory or Cache options, replace the default cache.

    enabled=False turns caching off. notebook_badges=True: under IPython, a cached hit shows a
    small "cached" note below the cell. policy: what functions and wrapped clients that pass no
    policy= use, from their next call on ("forever": kept until cleared; default "auto", or
    LLM_MEMO_POLICY). Called with switches alone, the default cache is kept.
    """
    global _default, _enabled, _policy
    if policy is not None:
        _policy = validate_policy(policy)
    if notebook_badges is not None:
        hooks.on_hit = hooks.notebook_badge if notebook_badges else None
    if enabled is not None:
        _enabled = bool(enabled)
    if directory is None and not options:
        return default_cache()
    with _default_lock:
        old, _default = _default, Cache(directory, **options)
    if old is not None:
        old.close()
    return _default
