"""Canonical, type-tagged encoding of argument values to bytes, for cache keys.

The encoding is JSON (orjson, keys sorted) over a tree in which every value that JSON
cannot say unambiguously is replaced by a tagged node ``{"\\u0000": tag, "v": payload}``,
spelled as stored values spell it where the two meet (the table in `tags`).
A user dict that itself contains the key ``"\\u0000"`` is tagged too, so a tag can never be
forged by data. Plain JSON-native trees (the common case: strings, message lists) skip
the conversion and go to orjson as they are, which keeps the hit path fast; an encoding
that needed any tag starts with ``#``, which no plain encoding does, so the two kinds
never collide.

Rules, pinned by golden vectors in the tests:
- ``1``, ``1.0``, ``True`` and ``"1"`` differ; ``-0.0`` differs from ``0.0``; NaN, inf and
  -inf have their own tags.
- ``list`` and ``tuple`` encode alike (a JSON round trip, e.g. warming from a file, turns
  tuples into lists); ``set`` and ``frozenset`` encode alike, elements in canonical order.
- dict key order never matters; non-string keys are allowed and typed.
- Subclasses of str/int/float/bytes/bytearray carry their class name beside their value,
  read through the base type so that an overridden ``__str__``/``__int__``/``__float__``/
  ``__bytes__``/``__eq__`` never decides a key (tag ``subclass``, as dict keys too). Enum
  members (``str``/``int`` mixins included) keep their own tag, and numpy's scalars
  (``numpy.float64``, ``numpy.str_``, ``numpy.bytes_``) encode as the plain value they spell.
  Subclasses of list/tuple/dict encode as their base type.
- Enum members, dataclasses and pydantic models carry their class name. A pydantic model
  keys every field by name (whichever alias filled it) and, when its class takes extra
  fields (``extra="allow"``), those too, even none. Private attributes (clients, caches)
  and computed fields (derived from the fields) are not keyed.
- Anything else raises ``UnkeyableArgumentError``; so do cycles and nesting deeper than
  ``MAX_DEPTH``. Nothing is ever encoded through ``repr()``.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import pickle
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from .._errors import UnkeyableArgumentError
from .tags import TAG, TYPES, bytes_tree, float_tree, int_tree, str_tree, tagged

__all__ = ["MAX_DEPTH", "encode", "encode_arguments", "is_plain", "register_encoder", "to_tree"]

MAX_DEPTH = 254  # orjson refuses deeper lists and dicts, so both paths agree
_OPTS = orjson.OPT_SORT_KEYS
_FAST_OPTS = (orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS
              | orjson.OPT_PASSTHROUGH_DATETIME)
_SAFE_RECURSION = 2000  # orjson overflows its stack on tuples nested ~3000 deep
CAREFUL = b"#"  # leads every encoding that holds a tag: never the first byte of plain JSON
_TAGGED_NODE = b'{"\\u0000":"'  # how orjson writes the start of a tagged node

_encoders: dict[type, Callable[[Any], Any]] = {}


def register_encoder(cls: type, encoder: Callable[[Any], Any]) -> None:
    """Teach llm_memo to key instances of `cls` by the keyable value `encoder(obj)` returns."""
    if not isinstance(cls, type):
        raise TypeError(f"register_encoder(cls=...) takes a class; got {cls!r}")
    if not callable(encoder):
        raise TypeError(f"register_encoder(encoder=...) takes a callable; got {encoder!r}")
    _encoders[cls] = encoder


def is_plain(value: Any, tuples: bool = True) -> bool:
    """True when orjson alone encodes `value` unambiguously (no tags needed).

    This sits on the hit path, so leaves are tested inline rather than by a call per
    node. Deep or cyclic input raises RecursionError; callers take the careful path.
    """
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return True
    if t is dict:
        if TAG in value:
            return False
        for k, v in value.items():
            if type(k) is not str:
                return False
            tv = type(v)
            if tv is not str and tv is not int and tv is not bool and not is_plain(v, tuples):
                return False
        return True
    if t is list or (tuples and t is tuple):
        for v in value:
            tv = type(v)
            if tv is not str and tv is not int and tv is not bool and not is_plain(v, tuples):
                return False
        return True
    return t is float and value - value == 0.0  # false for NaN and +-inf


def _reject(value: Any) -> Any:
    raise TypeError  # orjson calls this for every type it does not encode natively


class _Sink:
    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)


class _CoreTypes(pickle.Pickler):
    """A C-speed check that a tree holds exact core types only, never too deep, never cyclic.

    The C pickler handles None, bool, int, float, str, bytes, list, tuple, dict, set and
    frozenset itself and hands every other object - subclasses, Enum and UUID members
    included - to `reducer_override`, which refuses it. Fast mode keeps no memo, so a cycle
    is an error too, and the pickler's recursion guard bounds the depth. Nothing is
    unpickled, ever: the bytes only serve to look for float bit patterns.
    """

    def __init__(self) -> None:
        self.sink = _Sink()
        super().__init__(self.sink, protocol=3)
        self.fast = True

    def reducer_override(self, obj: Any) -> Any:
        raise TypeError(type(obj).__qualname__)

    def check(self, value: Any) -> bytes:
        self.sink.parts.clear()
        self.dump(value)
        return b"".join(self.sink.parts)


_local = threading.local()


def _fast(value: Any, parts: Any) -> bytes | None:
    """orjson bytes of `value` (whose contents are `parts`) when they encode it unambiguously.

    The proof takes no Python walk over the tree. `_CoreTypes` passes exact core types
    only, which leaves orjson one ambiguity: NaN and infinities, written as null. Their
    IEEE bit patterns put a 0x7f or 0xff byte in the pickled bytes; only when such a byte
    shows up (string lengths can put one there too) does `is_plain` look closer. The
    pickler also bounds the depth before orjson, which has no limit for tuples.
    """
    if sys.getrecursionlimit() > _SAFE_RECURSION:
        return None  # the pickler's depth bound would exceed what orjson survives
    checker = getattr(_local, "checker", None)
    if checker is None:
        checker = _local.checker = _CoreTypes()
    try:
        data = checker.check(parts)
        if (b"\x7f" in data or b"\xff" in data) and not _plain_or_none(value):
            return None
        return orjson.dumps(value, default=_reject, option=_FAST_OPTS)
    except (TypeError, ValueError, RecursionError, pickle.PicklingError, orjson.JSONEncodeError):
        return None


def _plain_or_none(value: Any) -> bool:
    try:
        return is_plain(value)
    except RecursionError:
        return False


def encode(value: Any, name: str = "argument") -> bytes:
    """Canonical bytes of `value`; `name` is the parameter named in errors."""
    out = _fast(value, value)
    if out is not None:
        return out
    return _mark(_dump(to_tree(value, name), name, value))


def encode_arguments(arguments: Mapping[str, Any]) -> bytes:
    """Canonical bytes of a call's bound arguments; errors name the parameter."""
    out = _fast(arguments, list(arguments.values()))
    if out is not None:
        return out
    tree = {name: to_tree(value, name) for name, value in arguments.items()}
    try:
        return _mark(orjson.dumps(tree, option=_OPTS))
    except orjson.JSONEncodeError:
        for name, value in arguments.items():
            _dump(tree[name], name, value)
        raise


def _mark(out: bytes) -> bytes:
    """Prefix an encoding that holds a tagged node (a string cannot fake one: its quotes
    are escaped); one without tags - subclasses, tuples - is plain JSON like the fast path's."""
    return CAREFUL + out if _TAGGED_NODE in out else out


def _dump(tree: Any, name: str, value: Any) -> bytes:
    try:
        return orjson.dumps(tree, option=_OPTS)
    except orjson.JSONEncodeError as exc:  # tags add nesting orjson may refuse
        raise UnkeyableArgumentError(name, type(value).__qualname__, "nested too deeply") from exc


def to_tree(value: Any, name: str = "argument") -> Any:
    """The JSON-native tree that stands for `value` in a key."""
    try:
        return _Converter(name).convert(value, name, 0)
    except RecursionError as exc:
        raise UnkeyableArgumentError(name, type(value).__qualname__, "nested too deeply") from exc


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _exact_bytes(value: bytes) -> bytes:
    """A bytes subclass's bytes, never through its own ``__bytes__`` (nor, from 3.12, ``__buffer__``)."""
    to_bytes = getattr(bytes, "__bytes__", None)  # Python 3.11+
    return to_bytes(value) if to_bytes is not None else bytes(memoryview(value))


# (base, read the plain value without calling anything a subclass overrides, tree of that value)
_SCALARS: tuple[tuple[type, Callable[[Any], Any], Callable[[Any], Any]], ...] = (
    (str, str.__str__, str_tree),
    (int, int.__int__, int_tree),
    (float, float.__float__, float_tree),
    (bytes, _exact_bytes, bytes_tree),
    (bytearray, lambda v: bytes(bytearray.copy(v)), bytes_tree),
)
_SCALAR_BASES = tuple(base for base, _, _ in _SCALARS)


def _subclass_tree(value: Any) -> Any:
    """A subclass of str/int/float/bytes/bytearray: its class and its plain value."""
    _, read, tree = next(entry for entry in _SCALARS if isinstance(value, entry[0]))
    plain = tree(read(value))
    if _is_numpy_scalar(value):  # numpy.float64(0.5) is numpy's spelling of 0.5
        return plain
    return tagged("subclass", [_class_name(type(value)), plain])


def _is_numpy_scalar(value: Any) -> bool:
    np = sys.modules.get("numpy")  # never import it: only its instances need it
    return np is not None and isinstance(value, np.generic)


class _Converter:
    """One conversion: tracks the containers on the current path to catch cycles."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.active: set[int] = set()

    def fail(self, path: str, value: Any, reason: str = "") -> UnkeyableArgumentError:
        return UnkeyableArgumentError(path, type(value).__qualname__, reason)

    def convert(self, value: Any, path: str, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise self.fail(self.root, value, f"nested deeper than {MAX_DEPTH} levels")
        if value is None or value is True or value is False:
            return value
        if isinstance(value, enum.Enum):  # before int/str: IntEnum and StrEnum are subclasses
            member = self.convert(value.value, f"{path}.value", depth + 1)
            return tagged("enum", [_class_name(type(value)), member])
        cls = type(value)
        if cls is str:
            return str_tree(value)
        if cls is int:
            return int_tree(value)
        if cls is float:
            return float_tree(value)
        if cls is bytes or cls is bytearray or cls is memoryview:
            return bytes_tree(bytes(value))
        if isinstance(value, _SCALAR_BASES):
            return _subclass_tree(value)
        return self.convert_object(value, path, depth)

    def convert_object(self, value: Any, path: str, depth: int) -> Any:
        scalar = _scalar_tree(value)
        if scalar is not None:
            return scalar
        ident = id(value)
        if ident in self.active:
            raise self.fail(self.root, value, f"it contains itself at {path}")
        self.active.add(ident)
        try:
            return self.convert_container(value, path, depth + 1)
        finally:
            self.active.discard(ident)

    def convert_container(self, value: Any, path: str, depth: int) -> Any:
        if isinstance(value, (list, tuple)):
            return [self.convert(v, f"{path}[{i}]", depth) for i, v in enumerate(value)]
        if isinstance(value, Mapping):
            return self.convert_dict(value, path, depth)
        if isinstance(value, (set, frozenset)):
            items = [self.convert(v, f"{path}{{}}", depth) for v in value]
            return tagged("set", sorted(items, key=lambda t: self.sort_key(t, path, value)))
        encoder = _find_encoder(type(value))
        if encoder is not None:
            custom = self.convert(encoder(value), path, depth)
            return tagged("ext", [_class_name(type(value)), custom])
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
            return tagged("dataclass", [_class_name(type(value)), self.convert_dict(fields, path, depth)])
        model = _pydantic_data(value)
        if model is not None:
            fields, extra = model
            payload = [_class_name(type(value)), self.convert_dict(fields, path, depth)]
            if extra is not None:  # only models that take extras: every other model keeps its key
                payload.append(self.convert_dict(extra, path, depth))
            return tagged("pydantic", payload)
        np = sys.modules.get("numpy")  # never import it: only its instances need it
        if np is not None and isinstance(value, np.ndarray) and value.dtype.hasobject:
            return tagged("ndarray-object", [list(value.shape), self.convert(value.tolist(), path, depth)])
        array = _numpy_tree(np, value)
        if array is not None:
            return array
        raise self.fail(path, value)

    def convert_dict(self, value: Mapping[Any, Any], path: str, depth: int) -> Any:
        if TAG not in value and all(_plain_key(k) for k in value):
            return {str.__str__(k): self.convert(v, f"{path}[{k!r}]", depth) for k, v in value.items()}
        pairs = [
            [self.convert(k, f"{path}<key>", depth), self.convert(v, f"{path}[{k!r}]", depth)]
            for k, v in value.items()
        ]
        pairs.sort(key=lambda kv: self.sort_key(kv[0], path, value))
        return tagged("dict", pairs)

    def sort_key(self, tree: Any, path: str, value: Any) -> bytes:
        try:
            return orjson.dumps(tree, option=_OPTS)
        except orjson.JSONEncodeError as exc:
            raise self.fail(path, value, "nested too deeply") from exc


def _plain_key(key: Any) -> bool:
    """A dict key that JSON can carry as it is: a str (or numpy.str_) with no lone surrogates."""
    if type(key) is not str and not (isinstance(key, str) and _is_numpy_scalar(key)):
        return False
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _scalar_tree(value: Any) -> Any:
    """The tagged tree of a standard-library value type, or None."""
    for row in TYPES:
        if isinstance(value, row.cls):
            return row.key_tree(value)
    return None


def _find_encoder(cls: type) -> Callable[[Any], Any] | None:
    if not _encoders:
        return None
    for base in cls.__mro__:
        if base in _encoders:
            return _encoders[base]
    return None


def _pydantic_data(value: Any) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """(fields by name, extra fields or None when its class takes none) of a pydantic model, or None.

    A model that takes extras keys them even when it holds none: its keys before extras were
    keyed may hold an answer computed with any extras, and must not be served again.
    """
    pydantic = sys.modules.get("pydantic")  # never import it: only its instances need it
    if pydantic is None or not isinstance(value, pydantic.BaseModel):
        return None
    declared = getattr(type(value), "model_fields", None)
    if declared is not None:  # pydantic 2: a dict exactly when extra="allow"
        extra = getattr(value, "__pydantic_extra__", None)
    else:  # pydantic 1 keeps extras in __dict__ beside the fields
        declared = value.__fields__
        allows = getattr(value.__config__, "extra", None) == "allow"
        extra = {k: v for k, v in vars(value).items() if k not in declared} if allows else None
    return {name: getattr(value, name) for name in declared}, extra


def _numpy_tree(np: Any, value: Any) -> Any:
    if np is None:
        return None
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value).tobytes()
        return tagged("ndarray", [value.dtype.str, list(value.shape), base64.b64encode(data).decode("ascii")])
    if isinstance(value, np.generic):
        return tagged("numpy", [value.dtype.str, base64.b64encode(value.tobytes()).decode("ascii")])
    return None
