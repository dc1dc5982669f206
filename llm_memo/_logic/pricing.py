"""What a call cost: the provider's own figure when it sends one, else a price table."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = ["PRICES", "cost_of", "register_price", "savings_of", "tokens_of"]

# USD per million tokens: (input, output, cached input). Public list prices, late 2026;
# extend or correct with register_price(). Unknown models cost 0.0 (reported as such).
PRICES: dict[str, tuple[float, float, float]] = {
    "gpt-4o": (2.50, 10.00, 1.25),
    "gpt-4o-mini": (0.15, 0.60, 0.075),
    "gpt-4.1": (2.00, 8.00, 0.50),
    "gpt-4.1-mini": (0.40, 1.60, 0.10),
    "gpt-4.1-nano": (0.10, 0.40, 0.025),
    "gpt-5": (1.25, 10.00, 0.125),
    "gpt-5-mini": (0.25, 2.00, 0.025),
    "gpt-5-nano": (0.05, 0.40, 0.005),
    "o3": (2.00, 8.00, 0.50),
    "o4-mini": (1.10, 4.40, 0.275),
    "text-embedding-3-small": (0.02, 0.0, 0.02),
    "text-embedding-3-large": (0.13, 0.0, 0.13),
    "claude-sonnet-4": (3.00, 15.00, 0.30),
    "claude-haiku-4.5": (1.00, 5.00, 0.10),
    "claude-opus-4": (15.00, 75.00, 1.50),
    "gemini-2.5-flash": (0.30, 2.50, 0.075),
    "gemini-2.5-pro": (1.25, 10.00, 0.31),
}


def register_price(model: str, input_per_mtok: float, output_per_mtok: float,
                   cached_input_per_mtok: float | None = None) -> None:
    """Add or correct a model's price in USD per million tokens."""
    for name, value in (("input_per_mtok", input_per_mtok), ("output_per_mtok", output_per_mtok)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"register_price({name}=...) takes a price >= 0 in USD per million tokens; got {value!r}")
    cached = input_per_mtok if cached_input_per_mtok is None else cached_input_per_mtok
    PRICES[model] = (float(input_per_mtok), float(output_per_mtok), float(cached))


def _price(model: str) -> tuple[float, float, float] | None:
    """The table's price for `model`, also for "openai/gpt-4o", "gpt-4o-2024-08-06" or "x:nitro"."""
    name = model.split(":", 1)[0].rsplit("/", 1)[-1]
    if name in PRICES:
        return PRICES[name]
    matches = [m for m in PRICES if name.startswith(m + "-")]
    return PRICES[max(matches, key=len)] if matches else None


def tokens_of(usage: Mapping[str, Any] | None) -> tuple[int, int, int]:
    """(input, output, cached input) tokens from a chat, responses, embeddings or Anthropic usage
    block (whose `input_tokens` leaves out the prompt-cache reads and writes)."""
    if not isinstance(usage, Mapping):
        return 0, 0, 0
    prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0)) or 0
    completion = usage.get("completion_tokens", usage.get("output_tokens", 0)) or 0
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    cached = details.get("cached_tokens", 0) if isinstance(details, Mapping) else 0
    read, written = usage.get("cache_read_input_tokens") or 0, usage.get("cache_creation_input_tokens") or 0
    if read or written:
        prompt, cached = prompt + read + written, read
    return int(prompt), int(completion), int(cached or 0)


def cost_of(model: str | None, usage: Mapping[str, Any] | None) -> float:
    """USD cost of one call: OpenRouter's `usage.cost` when present, else the price table."""
    if isinstance(usage, Mapping) and isinstance(usage.get("cost"), (int, float)):
        return float(usage["cost"])
    price = _price(model) if isinstance(model, str) else None
    if price is None:
        return 0.0
    prompt, completion, cached = tokens_of(usage)
    return ((prompt - cached) * price[0] + cached * price[2] + completion * price[1]) / 1e6


def savings_of(value: Any) -> tuple[int, float]:
    """(tokens, USD) serving `value` again saves, from the `usage` it carries: a dict's "usage"
    (wire JSON), or the `.usage` of an SDK object, pydantic model or dataclass; else (0, 0.0)."""
    try:
        if isinstance(value, Mapping):
            usage, model = value.get("usage"), value.get("model")
        else:
            usage, model = getattr(value, "usage", None), getattr(value, "model", None)
        usage = _as_mapping(usage)
        if usage is None:
            return 0, 0.0
        prompt, completion, _ = tokens_of(usage)
        total = usage.get("total_tokens")
        tokens = total if isinstance(total, int) and not isinstance(total, bool) and total > 0 else prompt + completion
        return int(tokens), cost_of(model if isinstance(model, str) else None, usage)
    except Exception:  # a figure for the stats: an odd `usage` must never fail the call
        return 0, 0.0


def _as_mapping(usage: Any) -> Mapping[str, Any] | None:
    """A usage block as a dict: pydantic's model_dump keeps extra fields such as OpenRouter's cost."""
    if usage is None or isinstance(usage, Mapping):
        return usage
    if callable(getattr(usage, "model_dump", None)):
        dumped = usage.model_dump()
        return dumped if isinstance(dumped, Mapping) else None
    if dataclasses.is_dataclass(usage) and not isinstance(usage, type):
        return dataclasses.asdict(usage)
    return None
