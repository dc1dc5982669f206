"""Values and entry envelopes <-> bytes. Data only: decoding never runs stored code.

Envelope layout (format 2), the same in every tier::

    b"LM" | format (1 byte) | crc32 of the rest (4)
          | key binding: the first 16 bytes of SHA-256 over the key
          | expires_at, created_at, latency (float64; expires_at NaN = never) | tokens (uint32)
          | cost (float64) | flags (1) | metadata length (4) | metadata JSON | value JSON
          | HMAC-SHA256 (32), with FLAG_SIGNED: over the format, binding, header, metadata and value

An envelope opens for its own key only, so a row found under another key (a damaged
index, a copied value) is refused. Format 1 (llm_memo 0.1.0) is format 2 without the
binding and the signature: still read, trusting where it was found, never written.

Values are tagged JSON: JSON-native data as it is, everything else as
``{"\\u0000": tag, "v": payload}`` (tuples, bytes, sets, dates, Decimal, UUID, paths,
Enum members, dataclasses and pydantic models, extra fields included), each type spelled as
keys spell it (the table in `tags`). A class is rebuilt
only if `_trust` allows it; a refusal is an `UntrustedClass`, raised before anything is
imported. Pickle is used only when the cache was built with ``allow_pickle=True``.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import functools
import hashlib
import hmac
import math
import struct
import sys
import zlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson

from .canonical import is_plain
from .tags import BY_CLASS, DECODERS, TAG, float_tree, int_tree, str_tree, tagged
from .trust import UntrustedClass, produced, sdk_base, trusted

__all__ = [
    "FLAG_PICKLE", "FLAG_PLAIN", "FLAG_SIGNED", "FORMAT", "CorruptEntry", "ForeignEntry", "Header",
    "MisboundEntry", "NewerFormat", "Secret", "UnencodableValue", "UntrustedClass", "decode_value", "encode_value",
    "pack", "peek", "unpack",
]

FORMAT = 2
FLAG_PICKLE = 1  # the value is a pickle: never written to shared tiers, read only with allow_pickle
FLAG_PLAIN = 2  # the value JSON has no tags: orjson.loads alone decodes it
FLAG_SIGNED = 4  # an HMAC-SHA256 with the cache's secret ends the envelope
_MAGIC = b"LM"
_PREFIX = struct.Struct(">2sBI")  # magic, format, crc32 of everything after it
_BINDING = 16  # bytes of SHA-256 over the key
_MAC = 32  # bytes of HMAC-SHA256
_BODY = struct.Struct(">dddIdBI")  # expires_at (NaN = never), created_at, latency, tokens, cost, flags, metadata length
_WHOLE = struct.Struct(">2sBI16sdddIdBI")  # _PREFIX, binding, _BODY: read in one call on the hot path



class CorruptEntry(Exception):
    """Stored bytes that are not a valid entry: a miss, never an error for the caller."""


class NewerFormat(CorruptEntry):
    """An entry written by a newer llm_memo: a miss, left in place for that version."""


class MisboundEntry(CorruptEntry):
    """An envelope found under a key it was not stored for (a damaged index, a copied value)."""


class ForeignEntry(CorruptEntry):
    """An entry not signed with this cache's secret: planted, altered, or written without it."""


class Secret(bytes):
    """An HMAC key that never shows itself in a repr, a log line or a traceback."""

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> tuple[Any, ...]:
        return Secret, (bytes(self),)  # pickled for spawn workers, which must read signed entries


class UnencodableValue(Exception):
    """A return value with no safe encoding: returned to the caller, not stored."""


# ---- values -------------------------------------------------------------------------

def encode_value(value: Any, *, allow_pickle: bool = False) -> tuple[bytes, int]:
    """(JSON bytes, envelope flags) for a return value; raises UnencodableValue."""
    try:
        if is_plain(value, tuples=False):
            return orjson.dumps(value), FLAG_PLAIN
    except (RecursionError, orjson.JSONEncodeError):
        pass
    try:
        return orjson.dumps(_to_json(value)), 0
    except (UnencodableValue, RecursionError, orjson.JSONEncodeError) as exc:
        if not allow_pickle:
            raise UnencodableValue(f"{type(value).__qualname__} has no safe encoding: {exc}") from None
        import pickle  # only with allow_pickle=True

        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        return orjson.dumps(tagged("pickle", base64.b64encode(data).decode("ascii"))), FLAG_PICKLE


def decode_value(data: bytes, flags: int = 0, *, allow_pickle: bool = False) -> Any:
    """The value stored by encode_value; raises UntrustedClass for a class this process does not
    rebuild, CorruptEntry on anything else unexpected."""
    try:
        if flags & FLAG_PLAIN:
            return orjson.loads(data)
        return _from_json(orjson.loads(data), allow_pickle)
    except (CorruptEntry, UntrustedClass):
        raise
    except Exception as exc:  # malformed payloads of any shape are a miss
        raise CorruptEntry(f"undecodable value: {exc}") from None


def _to_json(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, enum.Enum):
        return tagged("enum", [produced(type(value)), _to_json(value.value)])
    cls = type(value)
    if cls is str:
        return str_tree(value)
    if cls is int:
        return int_tree(value)
    if cls is float:
        return float_tree(value)
    if cls is list:
        return [_to_json(v) for v in value]
    if cls is tuple:
        return tagged("tuple", [_to_json(v) for v in value])
    if cls is dict:
        if TAG not in value and all(type(k) is str for k in value):
            return {k: _to_json(v) for k, v in value.items()}
        return tagged("dict", [[_to_json(k), _to_json(v)] for k, v in value.items()])
    return _object_to_json(value)


def _object_to_json(value: Any) -> Any:
    cls = type(value)
    row = BY_CLASS.get(cls)
    if row is not None:
        return tagged(row.tag, row.payload(value))
    if cls is set or cls is frozenset:
        return tagged(cls.__name__, [_to_json(x) for x in value])
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return tagged("dataclass", [produced(cls), fields])
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(value, pydantic.BaseModel):
        return tagged("pydantic", [produced(cls), _model_fields(value)])
    raise UnencodableValue(f"{cls.__module__}.{cls.__qualname__}")


def _model_fields(value: Any) -> dict[str, Any]:
    """A pydantic model's fields and its extra fields (``extra="allow"``: a provider's ``usage.cost``).

    An openai SDK object keeps only the fields the provider sent, as the SDK builds it from the
    wire, so ``to_dict()`` and ``model_fields_set`` are the same on a hit as on a miss.
    """
    names: Any = type(value).model_fields
    base = sdk_base()
    if base is not None and isinstance(value, base):
        names = [name for name in names if name in value.model_fields_set]
    fields = {name: _to_json(getattr(value, name)) for name in names}
    for name, extra in (getattr(value, "__pydantic_extra__", None) or {}).items():
        fields.setdefault(name, _to_json(extra))
    return fields


def _from_json(node: Any, allow_pickle: bool) -> Any:
    if type(node) is list:
        return [_from_json(v, allow_pickle) for v in node]
    if type(node) is not dict:
        return node
    if TAG not in node:
        return {k: _from_json(v, allow_pickle) for k, v in node.items()}
    tag, payload = node[TAG], node["v"]
    if tag == "pickle":
        if not allow_pickle:
            raise CorruptEntry("a pickled entry, and this cache was not built with allow_pickle=True")
        import pickle

        return pickle.loads(base64.b64decode(payload))
    if tag in ("enum", "dataclass", "pydantic"):
        return _rebuild(tag, payload, allow_pickle)
    scalar = DECODERS.get(tag)
    if scalar is not None:
        return scalar(payload)
    items = _CONTAINERS.get(tag)
    if items is None:
        raise CorruptEntry(f"unknown value tag {tag!r}")
    return items(payload, allow_pickle)


def _rebuild(tag: str, payload: Any, allow_pickle: bool) -> Any:
    path, data = payload
    if not isinstance(path, str):
        raise CorruptEntry("a class name that is not a string")
    cls = trusted(path)
    data = _from_json(data, allow_pickle)
    if tag == "enum":
        return cls(data)
    if tag == "dataclass":
        return cls(**{k: v for k, v in data.items() if k in {f.name for f in dataclasses.fields(cls) if f.init}})
    try:
        return cls.model_validate(data)
    except Exception:  # SDK payloads that validate live may not re-validate: rebuild as-is
        return cls.model_construct(**data)


def _items(payload: Any, allow_pickle: bool) -> list[Any]:
    return [_from_json(v, allow_pickle) for v in payload]


_CONTAINERS: dict[str, Any] = {
    "tuple": lambda p, a: tuple(_items(p, a)),
    "dict": lambda p, a: {_hashable(_from_json(k, a)): _from_json(v, a) for k, v in p},
    "set": lambda p, a: set(map(_hashable, _items(p, a))),
    "frozenset": lambda p, a: frozenset(map(_hashable, _items(p, a))),
}


def _hashable(value: Any) -> Any:
    if isinstance(value, list):  # only a tuple can have been a set element or dict key
        raise CorruptEntry("a list where a hashable value was stored")
    return value


# ---- envelopes ----------------------------------------------------------------------

class Header(NamedTuple):
    """The fixed-size part of an envelope: what the hit path needs without parsing JSON."""

    expires_at: float | None
    created_at: float
    latency: float
    tokens: int
    cost: float
    flags: int


@functools.lru_cache(maxsize=4096)  # a memory hit hashes no more than a dict lookup costs
def binding(key: str) -> bytes:
    """What ties an envelope to its key: the first 16 bytes of SHA-256 over the key."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:_BINDING]


def _signature(secret: bytes, signed: bytes | memoryview) -> bytes:
    mac = hmac.new(secret, bytes([FORMAT]), hashlib.sha256)
    mac.update(signed)
    return mac.digest()


def pack(key: str, value_json: bytes, metadata: Mapping[str, Any] | bytes, header: Header, *,
         secret: bytes | None = None) -> bytes:
    """Envelope bytes for an encoded value, its metadata (a mapping, or its JSON) and its header,
    bound to `key` and, with a `secret`, signed."""
    meta = metadata if isinstance(metadata, bytes) else orjson.dumps(metadata)
    expiry = math.nan if header.expires_at is None else float(header.expires_at)
    flags = header.flags & ~FLAG_SIGNED | (FLAG_SIGNED if secret is not None else 0)
    fields = _BODY.pack(expiry, header.created_at, header.latency, header.tokens, header.cost, flags, len(meta))
    body = binding(key) + fields + meta + value_json
    if secret is not None:
        body += _signature(secret, body)
    return _MAGIC + bytes([FORMAT]) + zlib.crc32(body).to_bytes(4, "big") + body


def peek(data: bytes, key: str) -> tuple[float, float, int, float, int, memoryview]:
    """(expires_at or NaN, latency, tokens, cost, flags, value JSON) of an envelope this process
    wrote or verified itself (the memory tier's): the binding checked, no checksum, no signature,
    no metadata, one struct call."""
    try:
        magic, version, _crc, bound, expiry, _created, latency, tokens, cost, flags, meta_len = \
            _WHOLE.unpack_from(data)
    except struct.error as exc:
        raise CorruptEntry("truncated entry") from exc
    if magic != _MAGIC or version != FORMAT:
        raise CorruptEntry("not an llm_memo entry of this format")
    if bound != binding(key):
        raise MisboundEntry("an entry stored for another key")
    end = len(data) - _MAC if flags & FLAG_SIGNED else len(data)
    return expiry, latency, tokens, cost, flags, memoryview(data)[_WHOLE.size + meta_len:end]


def unpack(data: bytes, key: str | None, *, verify: bool = True,
           secret: bytes | None = None) -> tuple[Header, bytes, bytes]:
    """(header, metadata JSON, value JSON) of an envelope stored under `key`.

    Raises CorruptEntry (MisboundEntry when it was stored for another key; with a `secret`,
    ForeignEntry when it is not signed with it) or NewerFormat. `key=None` skips the binding,
    `verify=False` the checksum and the signature (for envelopes this process checked already).
    A format 1 envelope (llm_memo 0.1.0) has neither binding nor signature: with a secret it
    is refused, without one it is trusted where it was found.
    """
    if len(data) < _PREFIX.size or data[:2] != _MAGIC:
        raise CorruptEntry("not an llm_memo entry")
    _magic, version, crc = _PREFIX.unpack_from(data)
    if version > FORMAT:
        raise NewerFormat(f"entry format {version} is newer than this llm_memo (format {FORMAT})")
    if version not in (1, FORMAT):
        raise CorruptEntry(f"unknown entry format {version}")
    if verify and zlib.crc32(memoryview(data)[_PREFIX.size:]) != crc:
        raise CorruptEntry("checksum mismatch")
    start = _PREFIX.size if version == 1 else _PREFIX.size + _BINDING
    if key is not None and version == FORMAT and data[_PREFIX.size:start] != binding(key):
        raise MisboundEntry("an entry stored for another key")
    if len(data) < start + _BODY.size:
        raise CorruptEntry("truncated entry")
    expiry, created, latency, tokens, cost, flags, meta_len = _BODY.unpack_from(data, start)
    signed = version == FORMAT and flags & FLAG_SIGNED
    end = len(data) - _MAC if signed else len(data)
    meta_at = start + _BODY.size
    if meta_at + meta_len > end:
        raise CorruptEntry("truncated entry")
    if secret is not None and verify:
        if not signed:
            raise ForeignEntry("an unsigned entry, and this cache has a secret: planted, or written "
                               "by a cache without the secret (or by llm_memo 0.1.0)")
        if not hmac.compare_digest(_signature(secret, memoryview(data)[_PREFIX.size:end]), data[end:]):
            raise ForeignEntry("an entry not signed with this cache's secret: planted or altered")
    header = Header(None if math.isnan(expiry) else expiry, created, latency, tokens, cost, flags)
    return header, data[meta_at:meta_at + meta_len], data[meta_at + meta_len:end]
