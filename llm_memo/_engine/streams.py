"""Streams: one source shared chunk by chunk by identical calls made at once, and replays.

The first caller of a key opens the source; callers of the same key that arrive while it runs
read the same chunks, each as soon as anyone has read it (their time to first chunk is the
leader's). Whoever needs the next chunk pulls it, so a leader that stops reading early does
not starve the others. Each chunk is recorded as it was when read (a copy is taken before any
consumer sees it), and the whole answer is stored only when the source completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import orjson

from .._logic.canonical import is_plain
from .flow import BODY, Flow, Stopped, adrive, drive, io

__all__ = ["AsyncSharedStream", "SharedStream", "StreamFlights", "StreamInterrupted", "areplay", "replay", "snapshot"]

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


class StreamInterrupted(Exception):
    """What readers along a shared stream get when the caller pulling it was interrupted (Ctrl-C,
    a cancelled task) and the source broke off with it."""


class _Shared:
    """What the sync and async shared streams have in common: the recorded chunks and the ending.

    complete(chunks) runs once when the source ends, or as soon as `finished(chunk)` says the
    answer is over (an SSE stream's last event, or an error event: its reader may stop there);
    ended(failed) runs once however the stream ends, abandoned included; abort() closes the
    source's connection when every reader left before the end.
    """

    def __init__(self, complete: Callable[[list[Any]], Any], ended: Callable[[bool], None],
                 finished: Callable[[Any], bool] | None, abort: Callable[[], None] | None) -> None:
        self.chunks: list[Any] = []
        self.error: BaseException | None = None
        self.exhausted = False
        self.whole = False
        self.readers = 0
        self._complete, self._ended, self._finished, self._abort = complete, ended, finished, abort
        self._over = False
        self._count = threading.Lock()

    @property
    def joinable(self) -> bool:
        """Whether a caller arriving now should read along: not once the answer is whole, spoiled
        or over (it then finds the stored answer, or opens its own)."""
        return not self.whole and not self.exhausted and self.error is None

    def join(self) -> None:
        with self._count:
            self.readers += 1

    def leave(self) -> bool:
        """One reader fewer; True when it was the last one and the stream is not over: abandoned."""
        with self._count:
            self.readers -= 1
            return self.readers == 0 and not self.exhausted and self.error is None

    def abandon(self) -> None:
        """Every reader left before the end: nothing is stored, the lease goes back, the source closes."""
        self._end(failed=False)
        if self._abort is not None:
            with contextlib.suppress(Exception):
                self._abort()

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
        except Stopped:
            self.exhausted = True
            try:
                if not self.whole:
                    yield io(self._complete, self.chunks)
            finally:
                yield io(self._end, False)
            return None, False
        except BaseException as exc:
            self.error = exc if isinstance(exc, Exception) else StreamInterrupted(
                f"the stream's source broke off: the caller reading it was interrupted ({type(exc).__name__})")
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

    def __init__(self, source: Iterable[Any], complete: Callable[[list[Any]], Any], ended: Callable[[bool], None],
                 finished: Callable[[Any], bool] | None = None, abort: Callable[[], None] | None = None) -> None:
        super().__init__(complete, ended, finished, abort)
        self._source = iter(source)
        self._pull = threading.Lock()  # one reader pulls at a time; buffered chunks need no lock

    def reader(self, on_close: Callable[[], None] | None = None) -> Reader:
        return Reader(self, on_close)

    def next(self, index: int) -> tuple[Any, bool]:
        buffered = self._buffered(index)
        if buffered is not None:
            return buffered
        with self._pull:
            return drive(self._pulled(index), self._source.__next__)


class AsyncSharedStream(_Shared):
    """An async source shared by the tasks of one event loop that ask for it at once. A pull runs
    as a task of its own, so a reader that is cancelled never breaks the source for the others;
    complete and ended run in a worker thread (they store and give leases back)."""

    def __init__(self, source: Any, complete: Callable[[list[Any]], Any], ended: Callable[[bool], None],
                 finished: Callable[[Any], bool] | None = None, abort: Callable[[], None] | None = None) -> None:
        super().__init__(complete, ended, finished, abort)
        self._source = source.__aiter__()
        self._pending: asyncio.Future[Any] | None = None

    def reader(self, on_close: Callable[[], None] | None = None) -> AsyncReader:
        return AsyncReader(self, on_close)

    async def next(self, index: int) -> tuple[Any, bool]:
        while True:
            buffered = self._buffered(index)
            if buffered is not None:
                return buffered
            if self._pending is None:
                self._pending = asyncio.ensure_future(adrive(self._pulled(len(self.chunks)), self._source.__anext__))
                self._pending.add_done_callback(_retrieved)
            pending = self._pending
            try:
                await asyncio.shield(pending)
            except Exception:
                pass  # recorded as the stream's error: _buffered raises it
            finally:
                if pending.done() and self._pending is pending:
                    self._pending = None


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # readers see it through the stream's error; nobody need await the task


class _Reading:
    """One caller's place in a shared stream. It counts as a reader from the moment it is made
    until it is exhausted, closed (from any thread) or collected."""

    def __init__(self, shared: _Shared, on_close: Callable[[], None] | None) -> None:
        shared.join()
        self._shared, self._on_close, self._index, self._closed = shared, on_close, 0, False

    def _leaving(self) -> bool:
        """Leave the stream once; True when this was its last reader and it must be abandoned."""
        if self._closed:
            return False
        self._closed = True
        last = self._shared.leave()
        if self._on_close is not None:
            self._on_close()
        return last

    def close_now(self) -> None:
        if self._leaving():
            self._shared.abandon()

    def __del__(self) -> None:
        self.close_now()


class Reader(_Reading):
    """A thread's iterator over a shared stream."""

    _shared: SharedStream

    def __iter__(self) -> Reader:
        return self

    def __next__(self) -> Any:
        if self._closed:
            raise StopIteration
        try:
            chunk, more = self._shared.next(self._index)
        except BaseException:
            if self._closed:  # closed from another thread while this one waited for a chunk
                raise StopIteration from None
            self.close_now()
            raise
        if not more:
            self.close_now()
            raise StopIteration
        self._index += 1
        return chunk

    close = _Reading.close_now


class AsyncReader(_Reading):
    """A task's async iterator over a shared stream."""

    _shared: AsyncSharedStream

    def __aiter__(self) -> AsyncReader:
        return self

    async def __anext__(self) -> Any:
        if self._closed:
            raise StopAsyncIteration
        try:
            chunk, more = await self._shared.next(self._index)
        except BaseException:
            self.close_now()  # no awaiting here: this task may be being cancelled
            raise
        if not more:
            await self.aclose()
            raise StopAsyncIteration
        self._index += 1
        return chunk

    async def aclose(self) -> None:
        if self._leaving():
            await asyncio.to_thread(self._shared.abandon)


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
            self._forget(key, current)
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
        if isinstance(opened, SharedStream):
            return opened.reader(lambda: self._forget(key, opened))
        return opened  # type: ignore[no-any-return]

    def _forget(self, key: Any, shared: Any) -> None:
        """Later callers find the stored answer, or start anew."""
        with self._lock:
            if self._open.get(key) is shared:
                del self._open[key]

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
        if isinstance(opened, AsyncSharedStream):
            return opened.reader(lambda: self._forget(slot, opened))
        return opened  # type: ignore[no-any-return]
