"""Which classes a cached value may be rebuilt as. Data only: nothing here runs stored code.

A class is allowed when it is reachable from a cached function's return annotation or from
a class passed to ``allow_type`` (through fields, generic arguments, unions and containers,
at any depth), when a cached function produced it in this process, or when it is one of the
openai SDK's response types (see `_sdk_type` for the rule). A class an entry names is looked
up among those and never imported (the SDK's own types package aside), so cache contents
cannot choose what code runs; a refusal is an `UntrustedClass`.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import re
import sys
import threading
import typing
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["UntrustedClass", "allow_returned", "allow_type", "produced", "sdk_base", "trusted"]

_allowed: dict[str, type] = {}
_unresolved: list[Callable[..., Any]] = []  # cached functions whose return annotation names a class not defined yet
_unresolved_lock = threading.Lock()


class UntrustedClass(Exception):
    """A stored value names a class this process does not rebuild: a miss, not a corrupt entry
    (a process that allows the class can still read it). Carries the class, why, and the fix."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path if _PRINTABLE_PATH.fullmatch(path) else repr(path[:200])
        self.reason = reason
        self.fix = f"llm_memo.allow_type({self.path.replace(':', '.')})"
        super().__init__(f"class {self.path} {reason}; to allow it, call {self.fix}")


_PRINTABLE_PATH = re.compile(r"[\w.]+:[\w.\[\], ]+")
_NOT_ALLOWED = ("is not allowed here: it is not reachable from the function's return annotation, was not "
                "passed to llm_memo.allow_type and was not produced in this process, and llm_memo rebuilds "
                "only classes it was told about, so that cache contents never choose what code runs")
_NOT_SDK = "is named as an openai SDK type, but the openai imported here has no such response model"
_NO_SDK = ("is named as an openai SDK type, and openai is not imported in this process (SDK types are "
           "trusted once the program has imported openai itself: an entry never makes llm_memo import it)")


def allow_type(cls: type) -> type:
    """Allow instances of `cls` (dataclass, pydantic model or Enum), and of every such class its
    fields reach (generic arguments, unions, containers, at any depth), to be rebuilt from a cache."""
    if not isinstance(cls, type):
        raise TypeError(f"allow_type(cls=...) takes a class; got {cls!r}")
    _allowed[_class_path(cls)] = cls
    for found in _reachable(cls)[0]:
        _allowed.setdefault(_class_path(found), found)
    return cls


def allow_returned(func: Callable[..., Any]) -> None:
    """Allow the classes `func`'s return annotation reaches. Names not defined yet (a class below
    the function, under ``from __future__ import annotations``) are read again at the first refusal."""
    if not _allow_return_of(func):
        with _unresolved_lock:
            _unresolved.append(func)


def _allow_return_of(func: Callable[..., Any]) -> bool:
    """Allow what `func`'s return annotation reaches; True when every name on the way resolved."""
    try:
        hint = typing.get_type_hints(func).get("return")
    except Exception:  # a name not defined yet, or not a function annotations can be read from
        return False
    found, complete = _reachable(hint)
    for cls in found:
        _allowed.setdefault(_class_path(cls), cls)
    return complete


def _reachable(root: Any) -> tuple[list[type], bool]:
    """(dataclasses, pydantic models and Enums that `root`, a class or type hint, names at any depth;
    whether every annotation on the way resolved)."""
    found: list[type] = []
    seen: set[type] = set()
    pending, complete = [root], True
    while pending:
        hint = pending.pop()
        if isinstance(hint, (str, typing.ForwardRef)):
            complete = False
            continue
        origin = typing.get_origin(hint)
        if origin is typing.Literal:
            continue
        if origin is not None:  # list[X], X | None, Box[X], Annotated[X, ...]: the class and its arguments
            pending.append(origin)
            pending.extend(typing.get_args(hint))
            continue
        if not isinstance(hint, type) or hint in seen or not _rebuildable(hint):
            continue
        seen.add(hint)
        found.append(hint)
        if not issubclass(hint, enum.Enum):
            hints, resolved = _field_hints(hint)
            pending.extend(hints)
            complete = complete and resolved
    return found, complete


def _field_hints(cls: type) -> tuple[list[Any], bool]:
    """The annotations of a dataclass's or pydantic model's fields; False if some did not resolve."""
    fields = getattr(cls, "model_fields", None)  # pydantic's view: Page[Item]'s fields name Item, not T
    view = [getattr(field, "annotation", None) for field in fields.values()] if isinstance(fields, Mapping) else []
    try:
        hints = list(typing.get_type_hints(cls).values())
    except Exception:  # a name not defined yet, or one a base class imports only for type checkers
        return view, bool(view)  # the walk marks what pydantic could not resolve either
    return hints + [hint for hint in view if not isinstance(hint, (str, typing.ForwardRef))], True


def _rebuildable(cls: type) -> bool:
    pydantic = sys.modules.get("pydantic")
    return (dataclasses.is_dataclass(cls) or issubclass(cls, enum.Enum)
            or (pydantic is not None and issubclass(cls, pydantic.BaseModel)))


def _class_path(cls: type) -> str:
    """How an entry names a class: "module:qualname"."""
    return f"{cls.__module__}:{cls.__qualname__}"


def produced(cls: type) -> str:
    """Allow `cls`, which a cached function produced in this process; returns how entries name it."""
    path = _class_path(cls)
    _allowed.setdefault(path, cls)
    return path


def trusted(path: str) -> type:
    """The allowed class `path` ("module:qualname") names; raises UntrustedClass before any import
    of a module that is not the openai SDK's types package."""
    cls = _allowed.get(path)
    if cls is None and _unresolved:
        _retry_unresolved()
        cls = _allowed.get(path)
    if cls is None:
        cls = _sdk_type(path)
        if cls is None:
            raise UntrustedClass(path, _why_refused(path))
        _allowed[path] = cls
    return cls


def _why_refused(path: str) -> str:
    if not path.startswith("openai.types."):
        return _NOT_ALLOWED
    return _NOT_SDK if sdk_base() is not None else _NO_SDK


def _retry_unresolved() -> None:
    """Read again the return annotations that named classes not defined when they were decorated."""
    with _unresolved_lock:
        waiting = list(_unresolved)
    done = [func for func in waiting if _allow_return_of(func)]
    with _unresolved_lock:
        _unresolved[:] = [func for func in _unresolved if func not in done]


_SDK_MODULE = re.compile(r"openai\.types(?:\.[a-z][a-z0-9_]*)+")
_SDK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*")


def _sdk_type(path: str) -> type | None:
    """The openai SDK response type `path` names, trusted without allow_type, else None.

    The rule: openai is already imported in this process (never imported because of an entry);
    the module is one below ``openai.types``, named by plain lower-case dotted words (no part led
    by an underscore); and the name is a plain dotted name of a class defined in that very module
    (its ``__module__`` and ``__qualname__`` are the ones named) that subclasses the SDK's
    ``openai.BaseModel``. Those are the SDK's data-only pydantic models of what the API returns:
    fields and pydantic validation, no code of their own. Such a module of the SDK's types package
    is the only one ever imported by name (if this version loads it lazily); any other name is
    refused before any import.
    """
    module, _, name = path.partition(":")
    base = sdk_base()
    if base is None or not (_SDK_MODULE.fullmatch(module) and _SDK_NAME.fullmatch(name)):
        return None
    try:
        found: Any = importlib.import_module(module)
    except Exception:  # this version of the SDK has no such module
        return None
    for part in name.split("."):
        found = getattr(found, part, None)
    if (isinstance(found, type) and issubclass(found, base)
            and found.__module__ == module and found.__qualname__ == name):
        return found
    return None


def sdk_base() -> type | None:
    """openai.BaseModel when the SDK is imported (never imports it)."""
    base = getattr(sys.modules.get("openai"), "BaseModel", None)
    return base if isinstance(base, type) else None
