"""The export format: a cache entry as one portable JSON line, and back (validated)."""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from ._cache import Stored
from ._codec import FLAG_PLAIN, CorruptEntry, Header, UntrustedClass, decode_value

__all__ = ["EXPORT_VERSION", "export_record", "parse_record"]

EXPORT_VERSION = 1
_KEY = re.compile(r"[0-9a-f]{64}")


def export_record(stored: Stored) -> dict[str, Any]:
    """One entry as a portable JSON object: the envelope's fields, the value as tagged JSON."""
    meta = dict(stored.metadata)
    tags = meta.pop("tags", [])
    h = stored.header
    return {"llm_memo_export": EXPORT_VERSION, "key": stored.key, "created_at": h.created_at,
            "expires_at": h.expires_at, "latency": h.latency, "tokens": h.tokens, "cost": h.cost,
            "tags": tags, "metadata": meta, "value": orjson.loads(stored.value_json)}


def parse_record(line: bytes, now: float) -> tuple[str, Header, dict[str, Any], bytes]:
    """(key, header, metadata with tags, value JSON) of an export line; ValueError says what is wrong."""
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(rec, dict):
        raise ValueError("not a JSON object")
    if rec.get("llm_memo_export") != EXPORT_VERSION:
        raise ValueError(f"not an llm_memo export line (llm_memo_export must be {EXPORT_VERSION})")
    missing = {"key", "created_at", "expires_at", "value"} - rec.keys()
    if missing:
        raise ValueError(f"missing {', '.join(sorted(missing))}")
    key = rec["key"]
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError("key is not 64 hex digits")
    numbers = {name: rec.get(name, 0) for name in ("created_at", "latency", "cost", "tokens")}
    for name, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} is not a number >= 0")
    if not isinstance(numbers["tokens"], int) or numbers["tokens"] >= 2**32:
        raise ValueError("tokens is not a whole number below 2**32")
    expires = rec["expires_at"]
    if expires is not None and (isinstance(expires, bool) or not isinstance(expires, (int, float))):
        raise ValueError("expires_at is neither null nor a number")
    if expires is not None and expires <= now:
        raise ValueError("expired")
    tags, meta = rec.get("tags", []), rec.get("metadata", {})
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValueError("tags is not a list of strings")
    if not isinstance(meta, dict):
        raise ValueError("metadata is not an object")
    value_json = orjson.dumps(rec["value"])
    flags = 0 if b"\\u0000" in value_json else FLAG_PLAIN
    try:
        decode_value(value_json, flags)
    except UntrustedClass:
        pass  # a class is rebuilt only where it is allowed (the process that calls the function)
    except CorruptEntry as exc:
        raise ValueError(f"value: {exc}") from None
    header = Header(None if expires is None else float(expires), float(numbers["created_at"]),
                    float(numbers["latency"]), numbers["tokens"], float(numbers["cost"]), flags)
    return key, header, {**meta, "tags": tags}, value_json
