"""The export format: a cache entry as one portable JSON line, and back (validated).

An imported line is untrusted: its value must decode completely, with no pickle at any
depth. Classes are not rebuilt here (only the process that calls the function may allow
them), so their fields are checked in their place.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from .._logic.canonical import TAG
from .._logic.codec import FLAG_PLAIN, CorruptEntry, Header, decode_value
from .._logic.redact import preview
from .._storage.cache import Stored

__all__ = ["EXPORT_VERSION", "export_record", "parse_record"]

EXPORT_VERSION = 1
_KEY = re.compile(r"[0-9a-f]{64}")
_CLASS_TAGS = ("enum", "dataclass", "pydantic")


def export_record(stored: Stored) -> dict[str, Any]:
    """One entry as a portable JSON object: the envelope's fields, the value as tagged JSON, the call redacted."""
    meta = dict(stored.metadata)
    tags = meta.pop("tags", [])
    if isinstance(meta.get("args"), dict):  # redacted again: older versions stored more in clear
        meta["args"] = {k: preview(v, name=k) for k, v in meta["args"].items()}
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
    try:
        orjson.dumps(meta)
    except orjson.JSONEncodeError:  # deeper than orjson writes (255 levels): it could not be stored
        raise ValueError("metadata: nested too deeply") from None
    try:
        value_json = orjson.dumps(rec["value"])
    except orjson.JSONEncodeError:  # deeper than orjson writes (255 levels)
        raise ValueError("value: nested too deeply") from None
    flags = 0 if b"\\u0000" in value_json else FLAG_PLAIN
    try:
        decode_value(orjson.dumps(_without_classes(rec["value"])), flags)
    except CorruptEntry as exc:
        raise ValueError(f"value: {exc}") from None
    header = Header(None if expires is None else float(expires), float(numbers["created_at"]),
                    float(numbers["latency"]), numbers["tokens"], float(numbers["cost"]), flags)
    return key, header, {**meta, "tags": tags}, value_json


def _without_classes(node: Any) -> Any:
    """`node` with every class tag replaced by its checked contents; CorruptEntry for a pickle."""
    if type(node) is list:
        return [_without_classes(v) for v in node]
    if type(node) is not dict:
        return node
    if TAG in node and node.keys() != {TAG, "v"}:
        raise CorruptEntry(f"a tag object has exactly the keys {TAG!r} and 'v'")
    tag = node.get(TAG)
    if tag == "pickle":
        raise CorruptEntry("a pickle (code that runs when loaded)")
    if tag not in _CLASS_TAGS:
        return {k: _without_classes(v) for k, v in node.items()}
    payload = node["v"]
    fields_type = object if tag == "enum" else dict
    if not (isinstance(payload, list) and len(payload) == 2 and isinstance(payload[0], str)
            and isinstance(payload[1], fields_type)):
        raise CorruptEntry(f"a {tag} tag must hold [class path, fields]")
    if tag != "enum" and TAG in payload[1]:
        raise CorruptEntry(f"a {tag} tag's fields are a plain object")
    return _without_classes(payload[1])
