"""Entries as the cache stores them: the envelope built for a value, and what is read back from one."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import orjson

from .._logic.codec import Header, Secret, encode_value, pack, unpack

__all__ = ["Hit", "Stored", "build", "envelope_tags", "function_tag", "keys_json", "meta_json", "signing_key",
           "tags_of"]


class Hit(NamedTuple):
    """A value found in a tier, with what serving it saved."""

    value: Any
    tier: str
    latency: float
    tokens: int
    cost: float
    expires_at: float | None = None  # epoch seconds; None: never (or not known)


class Stored(NamedTuple):
    """An entry as stored: header, metadata (with "tags") and the undecoded value JSON."""

    key: str
    tier: str
    header: Header
    metadata: dict[str, Any]
    value_json: bytes
    size: int  # bytes of the envelope


def build(key: str, value: Any, now: float, lifetime: float | None, tags: Sequence[str],
          metadata: Mapping[str, Any] | None, savings: tuple[float, int, float], *, allow_pickle: bool,
          secret: Secret | None) -> tuple[bytes, float | None, tuple[str, ...], int]:
    """(envelope, expires_at, tags deduplicated, flags) of `value` stored at `now` for `lifetime`
    seconds; `savings` is (latency, tokens, cost). Raises UnencodableValue."""
    value_json, flags = encode_value(value, allow_pickle=allow_pickle)
    expires_at = None if lifetime is None else now + lifetime
    unique = tuple(dict.fromkeys(tags))
    meta = {**(metadata or {}), "tags": list(unique)}
    data = pack(key, value_json, meta, Header(expires_at, now, *savings, flags), secret=secret)
    return data, expires_at, unique, flags


def function_tag(function: Any) -> str:
    """The tag every entry of a cached function carries: "fn:[namespace/]module.qualname"."""
    if isinstance(function, str):
        return f"fn:{function}"
    tag = getattr(function, "__llm_memo_tag__", None)
    if isinstance(tag, str):
        return tag
    target = getattr(function, "__wrapped__", function)
    name = f"{target.__module__}.{target.__qualname__}"
    return f"fn:{name}"


def meta_json(meta: bytes) -> dict[str, Any]:
    """An envelope's metadata; {} when it is not a JSON object."""
    try:
        loaded = orjson.loads(meta)
    except orjson.JSONDecodeError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def keys_json(keys: list[str]) -> str:
    return orjson.dumps(keys).decode()


def envelope_tags(data: bytes) -> tuple[str, ...]:
    """The tags inside an envelope (the memory tier reads them only when an invalidation asks)."""
    return tags_of(unpack(data, None, verify=False)[1])


def tags_of(meta: bytes) -> tuple[str, ...]:
    tags = meta_json(meta).get("tags", ())
    return tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else ()


def signing_key(secret: object) -> Secret | None:
    """The HMAC key: `secret` (str or bytes), else $LLM_MEMO_SECRET, else None (entries unsigned)."""
    if secret is None:
        secret = os.environ.get("LLM_MEMO_SECRET") or None
        if secret is None:
            return None
    if not isinstance(secret, (str, bytes)):
        raise TypeError(f"secret must be a str or bytes (the key entries are signed with); "
                        f"got secret of type {type(secret).__name__}")
    if not secret:
        raise ValueError("secret must not be empty: pass a long random string, or secret=None for unsigned entries")
    return Secret(secret.encode("utf-8", "surrogatepass") if isinstance(secret, str) else secret)
