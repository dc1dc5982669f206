"""Warming: run a batch of calls through a cached function, skipping those already stored.

Works on any callable with ``cache_key`` (what @llm_cache returns). Sync functions run in
a thread pool; async ones on one event loop, ``concurrency`` at a time. An interrupt
(Ctrl-C, or KeyboardInterrupt raised by a call) stops new calls, waits for the running
ones, keeps everything stored so far and re-raises with the partial report attached as
``exc.report``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import inspect
import logging
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from .._storage.cache import Cache
from .config import caching_enabled, default_cache

__all__ = ["Call", "WarmReport", "awarm", "warm"]

logger = logging.getLogger("llm_memo")


class Call(NamedTuple):
    """Positional and keyword arguments of one call (for calls that need both)."""

    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}  # noqa: RUF012 (never mutated)


@dataclasses.dataclass(frozen=True)
class WarmReport:
    """What warming did: calls run and stored, calls found stored, calls that failed and why."""

    warmed: int = 0
    already_cached: int = 0
    failed: list[tuple[Any, str]] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        text = f"warmed {self.warmed}, already cached {self.already_cached}, failed {len(self.failed)}"
        return text + "".join(f"\n  {_show(call)}: {reason}" for call, reason in self.failed[:20])


def _as_call(item: Any) -> Call:
    """A tuple is positional arguments, a dict keyword arguments, anything else the one argument."""
    if isinstance(item, Call):
        return item
    if isinstance(item, tuple):
        return Call(item, {})
    if isinstance(item, dict) and all(isinstance(k, str) for k in item):
        return Call((), item)
    return Call((item,), {})


def _show(call: Any) -> str:
    text = repr(call)
    return text if len(text) <= 80 else text[:79] + "…"


def _first(failure: tuple[int, Any, str]) -> int:
    return failure[0]


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _Batch:
    """The bookkeeping shared by the sync and async drivers."""

    def __init__(self, fn: Any, calls: Iterable[Any], cache: Cache | None, progress: bool) -> None:
        self.fn = fn
        self.cache = cache
        self.warmed = self.already = 0
        self.interrupt: KeyboardInterrupt | None = None  # raised by a call on the event loop
        self.failed: list[tuple[int, Any, str]] = []  # (position in calls, call, reason)
        self.todo: list[tuple[tuple[int, Any], Call, str]] = []  # ((position, original item), call, key)
        seen: set[str] = set()
        for i, item in enumerate(calls):
            if cache is None:
                self.failed.append((i, item, "caching is turned off (LLM_MEMO_DISABLE or configure(enabled=False))"))
                continue
            call = _as_call(item)
            try:
                key = fn.cache_key(*call.args, **call.kwargs)
            except Exception as exc:  # unbindable or unkeyable arguments: the call would fail too
                self.failed.append((i, item, _reason(exc)))
                continue
            if key in seen or key in cache:
                self.already += 1
            else:
                seen.add(key)
                self.todo.append(((i, item), call, key))
        self.bar = _progress_bar(len(self.todo), _name(fn)) if progress and self.todo else None

    def done(self, where: tuple[int, Any], key: str, error: BaseException | None) -> None:
        if error is not None:
            self.failed.append((*where, _reason(error)))
        elif self.cache is not None and key in self.cache:
            self.warmed += 1
        else:
            self.failed.append((*where, "ran, but nothing was stored (its policy keeps nothing, "
                                        "it was not deterministic, or its value cannot be encoded)"))
        if self.bar is not None:
            self.bar.update(1)

    def report(self) -> WarmReport:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        return WarmReport(self.warmed, self.already, [(item, why) for _, item, why in sorted(self.failed, key=_first)])


def warm(fn: Any, calls: Iterable[Any], *, concurrency: int = 4, progress: bool = True,
         cache: Cache | None = None) -> WarmReport:
    """Run `calls` through the cached `fn`, `concurrency` at a time, skipping stored ones."""
    _check_concurrency(concurrency)
    is_async = _is_async(fn)
    if is_async and _loop_running():
        name = _name(fn).rsplit(".", 1)[-1]
        raise RuntimeError(
            f"{name}.warm() cannot run an async function inside a running event loop (a notebook cell "
            f"or async code); use `await {name}.awarm(calls)` instead"
        )
    batch = _Batch(fn, calls, _cache_for(cache), progress)
    try:
        if is_async:
            asyncio.run(_adrive(fn, batch, concurrency))
            if batch.interrupt is not None:
                raise batch.interrupt  # out here, not through the event loop
        else:
            _drive(fn, batch, concurrency)
    except BaseException as exc:
        exc.report = batch.report()  # type: ignore[attr-defined]
        raise
    return batch.report()


async def awarm(fn: Any, calls: Iterable[Any], *, concurrency: int = 4, progress: bool = True,
                cache: Cache | None = None) -> WarmReport:
    """The async twin of warm: async functions run on this loop, sync ones in threads."""
    _check_concurrency(concurrency)
    batch = _Batch(fn, calls, _cache_for(cache), progress)
    try:
        await _adrive(fn, batch, concurrency)
        if batch.interrupt is not None:
            raise batch.interrupt
    except BaseException as exc:
        exc.report = batch.report()  # type: ignore[attr-defined]
        raise
    return batch.report()


class _NotStarted(Exception):
    """A queued call that an interrupt stopped before it began."""


class _Interrupted(Exception):
    """A KeyboardInterrupt raised by a call, carried through the event loop as a plain exception.

    asyncio lets KeyboardInterrupt escape from the middle of the loop, which stops it without
    cleanup (and on CPython 3.11 can leave the interpreter's recursion accounting broken).
    """

    def __init__(self, interrupt: KeyboardInterrupt) -> None:
        super().__init__()
        self.interrupt = interrupt


def _drive(fn: Callable[..., Any], batch: _Batch, concurrency: int) -> None:
    stop = threading.Event()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="llm-memo-warm")
    futures = {pool.submit(_run, fn, call, stop): (item, key) for item, call, key in batch.todo}
    pending = set(futures)
    try:
        for future in concurrent.futures.as_completed(futures):
            pending.discard(future)
            error = future.exception()
            if not isinstance(error, _NotStarted):
                batch.done(*futures[future], error)
            if isinstance(error, KeyboardInterrupt):
                raise error
    finally:
        stop.set()  # on an interrupt: no new calls; the running ones finish and are stored
        pool.shutdown(wait=True, cancel_futures=True)
        for future in pending:
            if future.done() and not future.cancelled() and not isinstance(future.exception(), _NotStarted):
                batch.done(*futures[future], future.exception())


def _run(fn: Callable[..., Any], call: Call, stop: threading.Event) -> None:
    if stop.is_set():
        raise _NotStarted
    try:
        result = fn(*call.args, **call.kwargs)
        if isinstance(result, Iterator):
            for _ in result:  # a cached generator's stream is stored when it is exhausted
                pass
    except KeyboardInterrupt:
        stop.set()
        raise


async def _adrive(fn: Callable[..., Any], batch: _Batch, concurrency: int) -> None:
    limit = asyncio.Semaphore(concurrency)
    stop = threading.Event()

    async def one(where: tuple[int, Any], call: Call, key: str) -> None:
        async with limit:
            if stop.is_set():
                return
            try:
                await _arun(fn, call, stop)
            except _NotStarted:
                return
            except _Interrupted as exc:
                batch.done(where, key, exc.interrupt)
                batch.interrupt = exc.interrupt
            except Exception as exc:
                batch.done(where, key, exc)
            else:
                batch.done(where, key, None)

    tasks = [asyncio.ensure_future(one(*todo)) for todo in batch.todo]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        raise


async def _arun(fn: Callable[..., Any], call: Call, stop: threading.Event) -> None:
    try:
        if not _is_async(fn):
            await asyncio.to_thread(_run, fn, call, stop)
            return
        result = fn(*call.args, **call.kwargs)
        if inspect.isasyncgen(result):
            async for _ in result:
                pass
        else:
            await result
    except KeyboardInterrupt as exc:
        stop.set()
        raise _Interrupted(exc) from None


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _cache_for(cache: Cache | None) -> Cache | None:
    if cache is not None:
        return cache
    return default_cache() if caching_enabled() else None


def _is_async(fn: Any) -> bool:
    target = getattr(fn, "__wrapped__", fn)
    return inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)


def _name(fn: Any) -> str:
    return str(getattr(fn, "cache_function_name", None) or getattr(fn, "__qualname__", repr(fn)))


def _check_concurrency(concurrency: object) -> None:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be a whole number >= 1; got concurrency={concurrency!r}")


def _progress_bar(total: int, name: str) -> Any:
    """A tqdm bar (text in terminals and in notebooks without ipywidgets), or None without tqdm."""
    try:
        from tqdm.std import TqdmWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TqdmWarning)  # "IProgress not found": a text bar is fine
            from tqdm.auto import tqdm
    except ImportError:
        logger.debug("tqdm is not installed: warming without a progress bar (pip install tqdm)")
        return None
    return tqdm(total=total, desc=f"warming {name.rsplit('.', 1)[-1]}", unit="call", leave=True)
