"""Streams: one source shared chunk by chunk by identical calls made at once, and replays.

The first caller of a key opens the source; callers of the same key that arrive while it runs
read the same chunks, each as soon as anyone has read it (their time to first chunk is the
leader's). Whoever needs the next chunk pulls it, so a leader that stops reading early does
not starve the others. Each chunk is recorded as it was when read (a copy is taken before any
consumer sees it), and the whole answer is stored only when the source completes.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import orjson

from .._logic.canonical import is_plain
from .flow import BODY, Flow, adrive, drive, io

__all__ = ["AsyncSharedStream", "SharedStream", "StreamFlights", "areplay", "replay", "snapshot"]

_IMMUTABLE = frozenset({str, int, float, bool, bytes, type(None)})


def snapshot(chunk: Any) -> Any:
    """A copy of `chunk` as it is now (itself when immutable, or when it cannot be copied).

    JSON-native chunks take an orjson round trip, exact for them and about 2.5x cheaper
    than deepcopy; other chunks are deep-copied.
    """
    if type(chunk) in _IMMUTABLE:
        return chunk
    try:
        if is_plain(chunk, tuples=False):
            return orjson.loads(orjson.dumps(chunk))
        return copy.deepcopy(chunk)
    except Exception:  # not copyable (a lock, a cycle too deep): recorded as it is
        return chunk


def replay(chunks: Iterable[Any]) -> Iterator[Any]:
    """Yield recorded chunks."""
    yield from chunks


async def areplay(chunks: Iterable[Any]) -> AsyncIterator[Any]:
    """Yield recorded chunks to an async consumer."""
    for chunk in chunks:
        yield chunk


class _Shared:
    """What the sync and async shared streams have in common: the recorded chunks and the ending.

    complete(chunks) runs once when the source ends, or as soon as `finished(chunk)` says the
    answer is over (an SSE stream's last event, or an error event: its reader may stop there);
    ended(failed) runs once however the stream ends, abandoned included.
    """

    def __init__(self, complete: Callable[[list[Any]], Any], ended: Callable[[bool], None],
                 finished: Callable[[Any], bool] | None) -> None:
        self.chunks: list[Any] = []
        self.error: BaseException | None = None
        self.exhausted = False
        self.whole = False
        self.readers = 0
        self._complete, self._ended, self._finished = complete, ended, finished
        self._over = False

    @property
    def joinable(self) -> bool:
        """Whether a caller arriving now should read along: not once the answer is whole, spoiled
        or over (it then finds the stored answer, or opens its own)."""
        return not self.whole and not self.exhausted and self.error is None

    def _buffered(self, index: int) -> tuple[Any, bool] | None:
        """(chunk, True) when chunk `index` was read already, (None, False) when the stream is over,
        None when it must be pulled; raises the source's error for a reader that reaches it."""
        if index < len(self.chunks):
            return snapshot(self.chunks[index]), True
        if self.error is not None:
            raise self.error
        return (None, False) if self.exhausted else None

    def _pulled(self, index: int) -> Flow[tuple[Any, bool]]:
        """Chunk `index` as `_buffered` says, pulled from the source (the flow's body) when nobody
        has yet: recorded, and the answer completed or the stream ended as the chunk says."""
        buffered = self._buffered(index)
        if buffered is not None:
            return buffered
        try:
            live = yield BODY
        except (StopIteration, StopAsyncIteration):
            self.exhausted = True
            try:
                if not self.whole:
                    yield io(self._complete, self.chunks)
            finally:
                yield io(self._end, False)
            return None, False
        except BaseException as exc:
            self.error = exc
            yield io(self._end, True)
            raise
        if self._record(live):
            self.whole = True
            yield io(self._complete, self.chunks)
        return live, True

    def _record(self, chunk: Any) -> bool:
        """Keep a chunk; True when it makes the answer whole."""
        self.chunks.append(snapshot(chunk))
        return not self.whole and self._finished is not None and self._finished(chunk)

    def _end(self, failed: bool) -> None:
        if not self._over:
            self._over = True
            self._ended(failed)


class SharedStream(_Shared):
    """A sync source shared by the threads that ask for it at once."""

    def __init__(self, source: Iterable[Any], complete: Callable[[list[Any]], Any],
                 ended: Callable[[bool], None], finished: Callable[[Any], bool] | None = None) -> None:
        super().__init__(complete, ended, finished)
        self._source = iter(source)
        self._pull = threading.Lock()  # one reader pulls at a time; buffered chunks need no lock
        self._count = threading.Lock()

    def reader(self) -> Iterator[Any]:
        with self._count:
            self.readers += 1
        index = 0
        try:
            while True:
                chunk, more = self._buffered(index) or self._next(index)
                if not more:
                    return
                index += 1
                yield chunk
        finally:
            with self._count:
                self.readers -= 1
                last = self.readers == 0 and not self.exhausted
            if last:
                self._end(failed=False)  # abandoned by every reader: nothing stored

    def _next(self, index: int) -> tuple[Any, bool]:
        with self._pull:
            return drive(self._pulled(index), self._source.__next__)


class AsyncSharedStream(_Shared):
    """An async source shared by the tasks of one event loop that ask for it at once; complete
    and ended run in a worker thread (they store and give leases back)."""

    def __init__(self, source: Any, complete: Callable[[list[Any]], Any], ended: Callable[[bool], None],
                 finished: Callable[[Any], bool] | None = None) -> None:
        super().__init__(complete, ended, finished)
        self._source = source.__aiter__()
        self._pull = asyncio.Lock()

    async def reader(self) -> AsyncIterator[Any]:
        self.readers += 1
        index = 0
        try:
            while True:
                chunk, more = self._buffered(index) or await self._next(index)
                if not more:
                    return
                index += 1
                yield chunk
        finally:
            self.readers -= 1
            if self.readers == 0 and not self.exhausted:
                await asyncio.to_thread(self._end, False)

    async def _next(self, index: int) -> tuple[Any, bool]:
        async with self._pull:
            return await adrive(self._pulled(index), self._source.__anext__)


class StreamFlights:
    """The shared streams of one engine in progress, by key (and event loop, for async ones).

    A caller that finds the key being opened waits for the opening, then reads along (`follow()`
    is called for it); when the opener was answered without a source (another process stored
    the answer), it opens its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[Any, Any] = {}  # key -> a shared stream, or the Event/Future of its opening

    def join(self, key: str, lead: Callable[[], Any], follow: Callable[[], None]) -> Iterator[Any]:
        """A reader of the stream in progress for `key`, or of the one `lead()` opens."""
        while True:
            with self._lock:
                current = self._open.get(key)
                if current is None:
                    opening = self._open[key] = threading.Event()
            if current is None:
                break
            if isinstance(current, threading.Event):
                current.wait()
                continue
            if current.joinable:
                follow()
                return current.reader()  # type: ignore[no-any-return]
            with self._lock:
                if self._open.get(key) is current:
                    del self._open[key]
        opened: Any = None
        try:
            opened = lead()
        finally:
            with self._lock:
                if isinstance(opened, SharedStream):
                    self._open[key] = opened
                else:
                    del self._open[key]
            opening.set()
        return self._reader(key, opened) if isinstance(opened, SharedStream) else opened

    def _reader(self, key: Any, shared: SharedStream) -> Iterator[Any]:
        try:
            yield from shared.reader()
        finally:
            with self._lock:
                if self._open.get(key) is shared:
                    del self._open[key]  # later callers find the stored answer, or start anew

    async def ajoin(self, key: str, lead: Callable[[], Any], follow: Callable[[], None]) -> AsyncIterator[Any]:
        """`join` for async sources; `lead` is a coroutine function."""
        loop = asyncio.get_running_loop()
        slot = (id(loop), key)
        while isinstance(current := self._open.get(slot), asyncio.Future):
            await asyncio.shield(current)
        if current is not None and current.joinable:
            follow()
            return current.reader()  # type: ignore[no-any-return]
        opening = self._open[slot] = loop.create_future()
        opened: Any = None
        try:
            opened = await lead()
        finally:
            if isinstance(opened, AsyncSharedStream):
                self._open[slot] = opened
            else:
                del self._open[slot]
            opening.set_result(None)
        return self._areader(slot, opened) if isinstance(opened, AsyncSharedStream) else opened

    async def _areader(self, slot: Any, shared: AsyncSharedStream) -> AsyncIterator[Any]:
        try:
            async for chunk in shared.reader():
                yield chunk
        finally:
            if self._open.get(slot) is shared:
                del self._open[slot]
