"""The one owner of a function's counters: every hit, miss and bypass is counted here, in the
function's counters, its cache's, the savings ledger, the observers and the DEBUG log."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from .._logic.pricing import savings_of
from .._logic.prompt_cache import provider_cache_usage
from .._logic.records import Stats
from .._storage.cache import Cache, Hit
from .._storage.counters import Counters
from .config import hooks
from .plan import Plan

__all__ = ["Accounts"]

logger = logging.getLogger("llm_memo")
_DEBUG = logging.DEBUG


def _model_of(arguments: Mapping[str, Any] | None) -> str | None:
    """The call's `model` argument when it is a str (what the savings ledger groups by)."""
    model = arguments.get("model") if arguments is not None else None
    return model if isinstance(model, str) else None


def _provider_cache(value: Any) -> tuple[int, int]:
    """(read, written) prompt tokens of the provider's cache that `value` (wire JSON or an SDK object
    with `usage`) reports; (0, 0) for any other value."""
    if not isinstance(value, Mapping) and "usage" not in (getattr(type(value), "model_fields", None) or {}):
        return 0, 0  # nothing to read, and no to_dict() of an arbitrary value (a DataFrame has one)
    try:
        usage = provider_cache_usage(value)
    except Exception:  # a figure for the stats: an odd value must never fail the call
        return 0, 0
    return usage["cached_tokens"], usage["cache_write_tokens"]


class Accounts:
    """Counts the outcomes of one function's calls."""

    def __init__(self, function: str) -> None:
        self.function = function
        self.counters = Counters()

    def hit(self, cache: Cache, hit: Hit, plan: Plan) -> None:
        self.counters.hit(hit.tier, hit.latency, hit.tokens, hit.cost)
        cache.counters.hit(hit.tier, hit.latency, hit.tokens, hit.cost)
        if cache.ledger is not None:
            cache.ledger.hit(self.function, _model_of(plan.arguments), hit.tier, hit.latency, hit.tokens, hit.cost)
        if hooks.on_hit is not None:
            hooks.on_hit(self.function, hit)
        if logger.isEnabledFor(_DEBUG):
            logger.debug("hit %s key=%s tier=%s lookup=%.0fus saved=%.3fs", self.function, (plan.key or "")[:12],
                         hit.tier, (time.perf_counter() - plan.started) * 1e6, hit.latency)

    def shared(self, cache: Cache, value: Any, plan: Plan) -> None:
        """A caller that waited for another's identical call: it saved that call's tokens and cost."""
        tokens, cost = savings_of(value)
        self.hit(cache, Hit(value, "flight", 0.0, tokens, cost), plan)

    def bypass(self, cache: Cache | None, why: str, arguments: Mapping[str, Any] | None = None,
               key: str | None = None) -> None:
        self.counters.bypass()
        if cache is not None:
            cache.counters.bypass()
            if cache.ledger is not None:
                cache.ledger.bypass(self.function, _model_of(arguments))
        if logger.isEnabledFor(_DEBUG):
            logger.debug("bypass %s key=%s (%s)", self.function, key[:12] if key else "-", why)

    def miss(self, cache: Cache, plan: Plan, value: Any = None) -> None:
        """A call the provider answered: `value`'s usage says what the provider's prompt cache did."""
        read, written = _provider_cache(value)
        self.counters.miss(read, written)
        cache.counters.miss(read, written)
        if cache.ledger is not None:
            cache.ledger.miss(self.function, _model_of(plan.arguments), read, written)

    def unstored(self, cache: Cache, exc: Exception) -> None:
        """An answer that could not be stored (an error, counted and logged): the call still returns it."""
        self.counters.error()
        cache.counters.error()
        logger.warning("llm_memo: the answer of %s could not be stored (%s: %s); returning it uncached",
                       self.function, type(exc).__name__, exc)

    def stored(self, cache: Cache, key: str, latency: float, seconds: float | None, stored: bool) -> None:
        if logger.isEnabledFor(_DEBUG):
            logger.debug("miss %s key=%s latency=%.3fs ttl=%s stored=%s", self.function, key[:12], latency, seconds,
                         "+".join(tier.name for tier in cache.tiers) if stored else "nothing")

    def snapshot(self) -> Stats:
        return self.counters.snapshot()
