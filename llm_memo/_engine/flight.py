"""Single-flight: concurrent identical calls in one process run the body once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["AsyncFlights", "Flights"]


class _Call:
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class Flights:
    """Threads asking for the same key while it is computed wait for the first one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, _Call] = {}

    def run(self, key: str, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """(result, led): led is False when another thread computed the result."""
        while True:
            with self._lock:
                call = self._calls.get(key)
                leader = call is None
                if call is None:
                    call = self._calls[key] = _Call()
            if leader:
                break
            call.done.wait()
            if call.error is None:
                return call.result, False
            if isinstance(call.error, Exception):
                raise call.error  # the leader's failure is not cached: the next call retries
            # the leader was interrupted (Ctrl-C in its thread), not this caller: lead instead
        try:
            call.result = compute()
            return call.result, True
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            with self._lock:
                del self._calls[key]
            call.done.set()


class AsyncFlights:
    """Tasks of one event loop asking for the same key share one computation."""

    def __init__(self) -> None:
        self._calls: dict[tuple[int, str], asyncio.Future[Any]] = {}

    async def run(self, key: str, compute: Callable[[], Awaitable[Any]]) -> tuple[Any, bool]:
        """(result, led): led is False when another task computed the result."""
        slot = (id(asyncio.get_running_loop()), key)
        while True:
            pending = self._calls.get(slot)
            if pending is None:
                break
            try:
                return await asyncio.shield(pending), False
            except asyncio.CancelledError:
                if pending.cancelled():  # the leader was cancelled, not us: try to lead
                    continue
                raise
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[slot] = future
        try:
            result = await compute()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # waiters re-raise it; mark it retrieved for nobody-waiting cases
            raise
        else:
            future.set_result(result)
            return result, True
        finally:
            del self._calls[slot]
