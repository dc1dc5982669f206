"""Record a stream while it is consumed; replay a recorded one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

__all__ = ["arecord", "areplay", "record", "replay"]


def record(source: Iterable[Any], on_complete: Callable[[list[Any]], None]) -> Iterator[Any]:
    """Yield `source` live; hand the chunks to `on_complete` only if it finished normally.

    A consumer that stops early (break, close) or an exception in the source leaves
    nothing recorded: a partial stream is not an answer.
    """
    chunks: list[Any] = []
    for chunk in source:
        chunks.append(chunk)
        yield chunk
    on_complete(chunks)


async def arecord(source: Any, on_complete: Callable[[list[Any]], Any]) -> AsyncIterator[Any]:
    """The async twin of record: `on_complete` may be a coroutine function."""
    chunks: list[Any] = []
    async for chunk in source:
        chunks.append(chunk)
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
