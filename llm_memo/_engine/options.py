"""Per-call controls: `cache_options(...)` for the calls made inside it, and the `x-llm-memo`
request header for calls that pass through frameworks which forward headers but not context."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from .._logic.policy import validate_ttl

__all__ = ["HEADER", "CallOptions", "cache_options", "current_options", "from_header"]

HEADER = "x-llm-memo"


class CallOptions(NamedTuple):
    """read: serve stored answers; write: store new ones; ttl: seconds (or timedelta) to keep,
    overriding the policy; tags: added to what is stored."""

    read: bool = True
    write: bool = True
    ttl: Any = None
    tags: tuple[str, ...] = ()

    def merged(self, other: CallOptions) -> CallOptions:
        """Both sets of controls at once: the stricter read/write, the inner ttl, all tags."""
        return CallOptions(self.read and other.read, self.write and other.write,
                           other.ttl if other.ttl is not None else self.ttl,
                           (*self.tags, *(t for t in other.tags if t not in self.tags)))


DEFAULT = CallOptions()
_current: contextvars.ContextVar[CallOptions] = contextvars.ContextVar("llm_memo_options", default=DEFAULT)


def current_options() -> CallOptions:
    """The controls in force for a call made now."""
    return _current.get()


def _tags(tags: Iterable[str]) -> tuple[str, ...]:
    if isinstance(tags, str) or not all(isinstance(t, str) and t for t in tags):
        raise TypeError(f"tags= takes a list of non-empty str; got tags={tags!r}")
    return tuple(tags)


@contextlib.contextmanager
def cache_options(*, read: bool = True, write: bool = True, ttl: Any = None,
                  tags: Iterable[str] = ()) -> Iterator[CallOptions]:
    """Controls for the cached calls made inside the block (tasks started inside it too).

    read=False: stored answers are not served; the fresh answer replaces the stored one.
    write=False: answers are not stored. ttl: seconds (or a timedelta) to keep what is stored,
    overriding the policy. tags: added to what is stored. Blocks nest: the inner one adds to
    the outer (a read or write turned off stays off).
    """
    for name, value in (("read", read), ("write", write)):
        if not isinstance(value, bool):
            raise TypeError(f"{name}= takes True or False; got {name}={value!r}")
    options = _current.get().merged(CallOptions(read, write, validate_ttl(ttl), _tags(tags)))
    token = _current.set(options)
    try:
        yield options
    finally:
        _current.reset(token)


def from_header(value: str) -> CallOptions:
    """The controls an `x-llm-memo` header carries: comma-separated `no-read`, `no-store`,
    `ttl=SECONDS` and `tag=NAME`."""
    read, write, ttl, tags = True, True, None, []
    for part in (p.strip() for p in value.split(",")):
        name, _, argument = part.partition("=")
        if part == "no-read":
            read = False
        elif part == "no-store":
            write = False
        elif name == "ttl" and argument:
            try:
                ttl = validate_ttl(float(argument))
            except ValueError:
                raise ValueError(f"{HEADER}: ttl={argument!r} is not seconds >= 0; send e.g. 'ttl=60'") from None
        elif name == "tag" and argument:
            tags.append(argument)
        elif part:
            raise ValueError(f"{HEADER}: unknown control {part!r}; use no-read, no-store, ttl=SECONDS or tag=NAME, "
                             "comma-separated")
    return CallOptions(read, write, ttl, tuple(tags))
