"""The call path written once, as generators of steps, and the two shells that drive them.

A flow never does I/O itself: it yields a `Step` (read a tier, take a lease, sleep, run the
user's body) and receives its result, as httpx's auth flows do. `drive` runs the steps in the
calling thread; `adrive` awaits the body, runs storage steps in worker threads and sleeps
without blocking the event loop. An exception in a step is thrown back into the flow, so its
`finally` blocks (giving a lease back) run whichever shell drives it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any, NamedTuple, TypeVar

from .._storage.cache import Cache

__all__ = ["BODY", "Flow", "Step", "Stopped", "adrive", "drive", "io", "lease", "sleep"]

T = TypeVar("T")


class Step(NamedTuple):
    """One thing a flow needs done: `kind` says how each shell does it."""

    kind: str  # "io": blocking storage call; "lease": take a lease; "sleep"; "body": the user's call
    fn: Callable[..., Any] | None = None
    args: tuple[Any, ...] = ()


Flow = Generator[Step, Any, T]
BODY = Step("body")


def io(fn: Callable[..., Any], *args: Any) -> Step:
    """A storage call: in the calling thread for sync callers, a worker thread for async ones."""
    return Step("io", fn, args)


def lease(cache: Cache, key: str, seconds: float, renew: bool = True) -> Step:
    """Claim `key`'s computation: (token or None, released recently) as `Cache.claim` says. An async
    caller's claim is given back if it is cancelled meanwhile."""
    return Step("lease", None, (cache, key, seconds, renew))


def sleep(seconds: float) -> Step:
    return Step("sleep", None, (seconds,))


class Stopped(Exception):
    """The body raised StopIteration or StopAsyncIteration (a source that ended, or a function that
    raised it): carried through the flow as an ordinary exception, since a generator turns a
    StopIteration into RuntimeError (PEP 479), and raised as it was once out."""

    def __init__(self, original: BaseException) -> None:
        super().__init__()
        self.original = original


def _carried(exc: BaseException) -> BaseException:
    return Stopped(exc) if isinstance(exc, (StopIteration, StopAsyncIteration)) else exc


def _resumed(flow: Flow[T], send: Any, error: BaseException | None) -> tuple[Step | None, Any]:
    """(the flow's next step, None), or (None, its result) once it returns."""
    try:
        return flow.throw(error) if error is not None else flow.send(send), None
    except StopIteration as done:
        return None, done.value
    except Stopped as stopped:
        raise stopped.original from None


def drive(flow: Flow[T], body: Callable[[], Any] | None = None) -> T:
    """Run `flow` in this thread; `body()` is the user's call."""
    send: Any = None
    error: BaseException | None = None
    while True:
        step, result = _resumed(flow, send, error)
        if step is None:
            return result  # type: ignore[no-any-return]
        send, error = None, None
        try:
            if step.kind == "body":
                send = body() if body is not None else None
            elif step.kind == "sleep":
                time.sleep(step.args[0])
            elif step.kind == "lease":
                send = step.args[0].claim(*step.args[1:])
            else:
                send = step.fn(*step.args)  # type: ignore[misc]
        except BaseException as exc:  # thrown back in: the flow's finally blocks run
            error = _carried(exc)


async def adrive(flow: Flow[T], body: Callable[[], Awaitable[Any]] | None = None) -> T:
    """Run `flow` for an async caller: the event loop never waits on storage or sleeps."""
    send: Any = None
    error: BaseException | None = None
    while True:
        step, result = _resumed(flow, send, error)
        if step is None:
            return result  # type: ignore[no-any-return]
        send, error = None, None
        try:
            if step.kind == "body":
                send = await body() if body is not None else None
            elif step.kind == "sleep":
                await asyncio.sleep(step.args[0])
            elif step.kind == "lease":
                send = await _take_lease(*step.args)
            else:
                send = await asyncio.to_thread(step.fn, *step.args)  # type: ignore[arg-type]
        except GeneratorExit:  # this coroutine is being closed: no more awaiting, clean up here
            _unwind(flow)
            raise
        except BaseException as exc:
            error = _carried(exc)


def _unwind(flow: Flow[Any]) -> None:
    """Run a flow's cleanup (giving a lease back) in this thread; any other step is skipped."""
    try:
        step = flow.throw(GeneratorExit())
        while True:
            step = flow.send(step.fn(*step.args) if step.kind == "io" and step.fn is not None else None)
    except BaseException:
        return


async def _take_lease(cache: Cache, key: str, seconds: float, renew: bool) -> tuple[str | None, bool]:
    """`cache.claim` in a worker thread. The thread runs on if the task is cancelled meanwhile (or
    its loop closes); whichever side finds the other gone gives the lease back, in a thread, so a
    cancelled caller never holds a key for `seconds`."""
    guard = threading.Lock()
    state: dict[str, Any] = {"abandoned": False, "token": None}

    def take() -> tuple[str | None, bool]:
        token, recent = cache.claim(key, seconds, renew)
        with guard:
            if state["abandoned"]:
                if token is not None:
                    cache.release(key, token)
                return None, False
            state["token"] = token
        return token, recent

    try:
        return await asyncio.to_thread(take)
    except asyncio.CancelledError:
        with guard:
            state["abandoned"] = True
            token = state["token"]
        if token is not None:  # taken just before the cancellation landed
            threading.Thread(target=cache.release, args=(key, token), daemon=True).start()
        raise
