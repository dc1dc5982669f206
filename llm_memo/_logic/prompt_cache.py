"""The provider's own prompt cache, beside ours: mark static blocks, read what it did.

llm_memo answers a repeated *request* without calling the provider. A provider's prompt
cache (Anthropic through OpenRouter, OpenAI, Gemini, DeepSeek) makes a *new* request
cheaper when it starts with a prefix seen recently. Anthropic needs that prefix marked
with `cache_control` on text parts, at most four breakpoints; `mark_cache_control` does
it, and `provider_cache_usage` reads back the reads and writes a response reports.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["MAX_BREAKPOINTS", "mark_cache_control", "provider_cache_usage"]

MAX_BREAKPOINTS = 4  # Anthropic's limit per request
_MIN_CHARS = 4096  # ~1024 tokens: the smallest prefix most Claude models cache


def mark_cache_control(messages: Sequence[Mapping[str, Any]], *, min_chars: int = _MIN_CHARS,
                       breakpoints: int = MAX_BREAKPOINTS, ttl: str | None = None) -> list[dict[str, Any]]:
    """A copy of `messages` whose large static text carries `cache_control: {"type": "ephemeral"}`.

    Static means everything before the last user turn: system prompts, documents and earlier
    turns, which repeat from call to call. Text parts of at least `min_chars` characters are
    marked in order, up to `breakpoints` (at most 4); string content is turned into the
    content-part form OpenRouter expects. `ttl="1h"` asks for Anthropic's one-hour cache.
    """
    if not 1 <= breakpoints <= MAX_BREAKPOINTS:
        raise ValueError(f"breakpoints must be 1..{MAX_BREAKPOINTS} (Anthropic's limit); got breakpoints={breakpoints!r}")
    if ttl not in (None, "5m", "1h"):
        raise ValueError(f"ttl must be None, '5m' or '1h'; got ttl={ttl!r}")
    marker: dict[str, Any] = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
    out = [copy.deepcopy(dict(m)) for m in messages]
    last_user = max((i for i, m in enumerate(out) if m.get("role") == "user"), default=len(out))
    present = sum(1 for m in out if isinstance(m.get("content"), list)
                  for part in m["content"] if isinstance(part, dict) and "cache_control" in part)
    left = max(0, min(breakpoints, MAX_BREAKPOINTS - present))  # markers already there count too
    for message in out[:last_user]:
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(parts, list):
            continue
        for part in parts:
            if left and isinstance(part, dict) and part.get("type") == "text" \
                    and len(part.get("text") or "") >= min_chars and "cache_control" not in part:
                part["cache_control"] = dict(marker)
                left -= 1
                message["content"] = parts
    return out


def provider_cache_usage(response: Any) -> dict[str, int]:
    """{"cached_tokens", "cache_write_tokens"} an answer reports (0 when absent): the prompt tokens
    the provider's cache served, and those it wrote.

    Reads OpenAI's and OpenRouter's chat and Responses usage (`cached_tokens`, `cache_write_tokens`
    in the details), Anthropic's Message usage (`cache_read_input_tokens`,
    `cache_creation_input_tokens`) and OpenRouter's `cache_read_tokens`/`cache_write_tokens`.
    Takes the SDK object or its dict. On a replay from llm_memo these are the figures of the
    original call: history, not a new provider-side read.
    """
    data = response.to_dict() if hasattr(response, "to_dict") else response
    usage = data.get("usage") if isinstance(data, Mapping) else None
    if not isinstance(usage, Mapping):
        return {"cached_tokens": 0, "cache_write_tokens": 0}
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    places = (details, usage) if isinstance(details, Mapping) else (usage,)
    return {"cached_tokens": _first(places, _READS), "cache_write_tokens": _first(places, _WRITES)}


_READS = ("cached_tokens", "cache_read_input_tokens", "cache_read_tokens")
_WRITES = ("cache_write_tokens", "cache_creation_input_tokens")


def _first(places: tuple[Mapping[str, Any], ...], names: tuple[str, ...]) -> int:
    """The first count under one of `names`, in the details before the usage block itself."""
    for place in places:
        for name in names:
            value = place.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return 0
