"""What `Engine.lookup` found for one call, handed back to the engine's other adapter methods."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._storage.cache import Cache, Hit
from .options import CallOptions
from .plan import Plan

__all__ = ["Lookup"]


def _nothing() -> None:
    return None


class Lookup:
    """What `lookup` found for one call: the plan, the hit (if any) and the call's controls."""

    # Defaults on the class: a hit (the hot path) sets only what it found.
    hit: Hit | None = None
    refresh = False  # the hit is due for an early refresh, and this caller does it
    tier: str | None = None  # where the answer came from; None: computed by this call
    compute: Callable[..., Any] | None = None  # what runs instead of the body (semantic mode learns)
    body: Callable[[], Any] = staticmethod(_nothing)  # the body `run` was given

    def __init__(self, cache: Cache | None, plan: Plan | None, options: CallOptions, mark: int = 0) -> None:
        self.cache, self.plan, self.options, self.mark = cache, plan, options, mark

    @property
    def key(self) -> str:
        return self.plan.key or "" if self.plan is not None else ""
