"""Record a stream while it is consumed; replay a recorded one.

Each chunk is recorded as it was when yielded: a copy is taken before the consumer sees
it, so a consumer that appends to a yielded list (or a generator that reuses one buffer)
cannot change what is stored and replayed.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import orjson

from .._logic.canonical import is_plain

__all__ = ["arecord", "areplay", "record", "replay", "snapshot"]

_IMMUTABLE = frozenset({str, int, float, bool, bytes, type(None)})


def snapshot(chunk: Any) -> Any:
    """A copy of `chunk` as it is now (itself when immutable, or when it cannot be copied).

    JSON-native chunks take an orjson round trip, exact for them and about 2.5x cheaper
    than deepcopy (10 us against 25 us for an SDK chunk dict); other chunks are deep-copied
    (about 70 us for a pydantic ChatCompletionChunk, a little under encoding it).
    """
    if type(chunk) in _IMMUTABLE:
        return chunk
    try:
        if is_plain(chunk, tuples=False):
            return orjson.loads(orjson.dumps(chunk))
        return copy.deepcopy(chunk)
    except Exception:  # not copyable (a lock, a cycle too deep): recorded as it is, as before
        return chunk


def record(source: Iterable[Any], on_complete: Callable[[list[Any]], None]) -> Iterator[Any]:
    """Yield `source` live; hand the chunks to `on_complete` only if it finished normally.

    A consumer that stops early (break, close) or an exception in the source leaves
    nothing recorded: a partial stream is not an answer.
    """
    chunks: list[Any] = []
    for chunk in source:
        chunks.append(snapshot(chunk))
        yield chunk
    on_complete(chunks)


async def arecord(source: Any, on_complete: Callable[[list[Any]], Any]) -> AsyncIterator[Any]:
    """The async twin of record: `on_complete` may be a coroutine function."""
    chunks: list[Any] = []
    async for chunk in source:
        chunks.append(snapshot(chunk))
        yield chunk
    done = on_complete(chunks)
    if done is not None:
        await done


def replay(chunks: Iterable[Any]) -> Iterator[Any]:
    """Yield recorded chunks."""
    yield from chunks


async def areplay(chunks: Iterable[Any]) -> AsyncIterator[Any]:
    """Yield recorded chunks to an async consumer."""
    for chunk in chunks:
        yield chunk
