"""The type tags: how a value JSON cannot say exactly is spelled, in cache keys and in stored values.

Such a value becomes a tagged node ``{"\\u0000": tag, "v": payload}``. The scalars and the
standard library's value types below are spelled the same by both sides: `canonical` (keys,
never read back) and `codec` (stored values, rebuilt on a hit). Each side adds the tags of its
own structures: ``enum``, ``dataclass``, ``pydantic``, ``set`` and ``dict`` on both; ``subclass``,
``ext``, ``numpy``, ``ndarray`` and ``ndarray-object`` in keys; ``tuple``, ``frozenset`` and
``pickle`` in values.

The sides differ on purpose in what they accept. A key takes any instance of a type here (a
``pandas.Timestamp`` keys as the datetime it spells, any path as its flavour and text); a stored
value must be exactly one of the classes, since it has to come back as the class it was (a
concrete path is stored as ``local``, to come back as a ``pathlib.Path``).

Every spelling here is pinned by golden key vectors and by cache directories of earlier builds.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import pathlib
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = [
    "BY_CLASS", "DECODERS", "TAG", "TYPES", "TypeTag", "bytes_tree", "float_tree", "int_tree", "str_tree", "tagged",
]

TAG = "\x00"
_I64_MIN, _U64_MAX = -(2**63), 2**64 - 1  # the ints orjson writes as numbers


def tagged(tag: str, payload: Any) -> dict[str, Any]:
    return {TAG: tag, "v": payload}


# ---- scalars: plain JSON when it says them exactly, tagged otherwise -----------------------

def str_tree(value: str) -> Any:
    """A str as it is, or, with lone surrogates, every code point kept (UTF-8 surrogatepass)."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return tagged("str", _base64(value.encode("utf-8", "surrogatepass")))


def int_tree(value: int) -> Any:
    """An int as it is within 64 bits, its digits beyond."""
    return value if _I64_MIN <= value <= _U64_MAX else tagged("int", str(value))


def float_tree(value: float) -> Any:
    """A finite float as it is; NaN and the infinities, which JSON would write as null, by name."""
    if value - value == 0.0:
        return value
    if value != value:
        return tagged("float", "nan")
    return tagged("float", "inf" if value > 0 else "-inf")


def bytes_tree(value: bytes) -> Any:
    return tagged("bytes", _base64(value))


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ---- the standard library's value types ---------------------------------------------------

class TypeTag(NamedTuple):
    """One type: its tag, the class a key takes instances of, and its payload both ways."""

    tag: str
    cls: type
    payload: Callable[[Any], Any]  # value -> JSON payload
    rebuild: Callable[[Any], Any]  # JSON payload -> value (stored values only)
    key: Callable[[Any], Any] | None = None  # the payload in a key, where it must differ

    def key_tree(self, value: Any) -> dict[str, Any]:
        return tagged(self.tag, (self.key or self.payload)(value))


def _iso(value: Any) -> str:
    return value.isoformat()


def _span(value: dt.timedelta) -> list[int]:
    return [value.days, value.seconds, value.microseconds]


_PATHS = {"posix": pathlib.PurePosixPath, "windows": pathlib.PureWindowsPath, "local": pathlib.Path}
_STORED_PATHS = {pathlib.PurePosixPath: "posix", pathlib.PureWindowsPath: "windows", pathlib.PosixPath: "local"}


def _key_path(value: pathlib.PurePath) -> list[str]:
    """A path in a key: its flavour and text, concrete or not."""
    return ["windows" if isinstance(value, pathlib.PureWindowsPath) else "posix", str(value)]


def _stored_path(value: pathlib.PurePath) -> list[str]:
    return [_STORED_PATHS[type(value)], str(value)]


_PATH = TypeTag("path", pathlib.PurePath, _stored_path, lambda p: _PATHS[p[0]](p[1]), key=_key_path)
TYPES = (  # in the order a key tests them: a datetime is a date too
    TypeTag("bytes", bytes, _base64, base64.b64decode),
    TypeTag("datetime", dt.datetime, _iso, dt.datetime.fromisoformat),
    TypeTag("date", dt.date, _iso, dt.date.fromisoformat),
    TypeTag("time", dt.time, _iso, dt.time.fromisoformat),
    TypeTag("timedelta", dt.timedelta, _span, lambda p: dt.timedelta(days=p[0], seconds=p[1], microseconds=p[2])),
    TypeTag("decimal", decimal.Decimal, str, decimal.Decimal),
    TypeTag("uuid", uuid.UUID, str, uuid.UUID),
    _PATH,
)

# The exact classes a stored value may be, and the tag each is stored under.
BY_CLASS: dict[type, TypeTag] = {
    **{row.cls: row for row in TYPES if row is not _PATH},
    **dict.fromkeys(_STORED_PATHS, _PATH),
}

# What each tag of the table (the scalars' included) decodes to.
DECODERS: dict[str, Callable[[Any], Any]] = {
    "str": lambda p: base64.b64decode(p).decode("utf-8", "surrogatepass"),
    "int": int,
    "float": float,
    **{row.tag: row.rebuild for row in TYPES},
}
