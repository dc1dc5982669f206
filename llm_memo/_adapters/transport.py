"""The HTTP transports wrap() puts under an SDK client (openai or anthropic).

Each request is routed (its front, openai.py or anthropic.py, says what it means for the cache
and what its answers look like on the wire), then answered through the
engine's adapter API: `lookup`, then `serve`, `run` or `stream`. `_Exchange` holds the HTTP
shapes both transports share (responses from stored answers, upstream answers captured or passed
on, the SSE hooks of a stream); the sync and async transports differ only in how they call the
inner transport.
"""

from __future__ import annotations

from functools import cache as once
from typing import TYPE_CHECKING, Any

import orjson

from .._engine.engine import Lookup
from .._errors import NonDeterministicCallError
from .._logic.wire import SSEParser

if TYPE_CHECKING:
    from .sdk_client import Route

__all__ = ["HIT_HEADER", "transports"]

HIT_HEADER = "x-llm-memo-cache"
_DROP_HEADERS = ("content-length", "content-encoding", "transfer-encoding", "connection")


class _Captured(Exception):
    """An upstream answer that must reach the caller as it is and never be stored."""

    def __init__(self, status: int, headers: list[tuple[str, str]], content: bytes) -> None:
        self.status, self.headers, self.content = status, headers, content


def _final_of(route: Route, parser: SSEParser) -> Any:
    if parser.failed or not parser.done:
        return None
    return route.wire.final(parser.events)


def _look(route: Route, **where: Any) -> dict[str, Any]:
    """The lookup arguments of a routed request."""
    return dict(options=route.options, stream=route.streaming, bypass=route.bypass, **where)


class _Exchange:
    """The HTTP shapes of one HTTP module (httpx or httpx2), shared by both transports."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.Stream = type("Stream", (_Stream, module.SyncByteStream), {"__module__": __name__})
        self.AsyncStream = type("AsyncStream", (_AsyncStream, module.AsyncByteStream), {"__module__": __name__})

    def respond(self, request: Any, status: int, headers: Any, content: bytes) -> Any:
        kept = [(k, v) for k, v in headers if k.lower() not in _DROP_HEADERS]
        return self.module.Response(status, headers=kept, content=content, request=request)

    def from_cache(self, request: Any, route: Route, value: Any, tier: str | None) -> Any:
        headers = [(HIT_HEADER, f"hit; tier={tier or 'flight'}")]
        if route.streaming:
            return self.respond(request, 200, [("content-type", "text/event-stream"), *headers],
                                route.wire.replay(value))
        return self.respond(request, 200, [("content-type", "application/json"), *headers], orjson.dumps(value))

    def capture(self, route: Route, status: int, headers: list[tuple[str, str]], content: bytes,
                live: list[Any]) -> Any:
        """The stored form of a non-streamed upstream answer; raises _Captured for anything else."""
        live.append((status, headers, content))
        body: Any = None
        if status == 200:
            try:
                body = orjson.loads(content)
            except orjson.JSONDecodeError:
                body = None
        if body is None or not route.wire.cacheable(body):
            raise _Captured(status, headers, content)
        return body

    def answer(self, request: Any, route: Route, value: Any, live: list[Any], look: Lookup) -> Any:
        """The upstream answer as it came, when this call fetched it; else the value from the cache."""
        return self.respond(request, *live[0]) if live else self.from_cache(request, route, value, look.tier)

    def recordable(self, response: Any) -> bool:
        headers = response.headers
        return (response.status_code == 200 and "text/event-stream" in headers.get("content-type", "")
                and not headers.get("content-encoding"))

    def hooks(self, route: Route) -> dict[str, Any]:
        """How the engine records a streamed answer: watch for its end, store its final object."""
        parser = SSEParser()

        def finished(data: bytes) -> bool:
            parser.feed(data)
            return parser.done or parser.failed

        def final(_: list[bytes]) -> Any:
            parser.close()
            value = _final_of(route, parser)
            return value if value is not None and route.wire.cacheable(value) else None

        return {"final": final, "finished": finished, "replay_of": lambda value: [route.wire.replay(value)]}

    def streamed(self, request: Any, stream: Any, opened: dict[str, Any], look: Lookup) -> Any:
        """The response of a streamed call: the upstream's status and headers for the caller that
        opened it; for one reading along, or replaying a stored answer, a plain SSE response."""
        upstream = opened.get("response")
        if upstream is not None:
            return self.module.Response(upstream.status_code, headers=upstream.headers, stream=stream,
                                        extensions=upstream.extensions, request=request)
        headers = [("content-type", "text/event-stream"), (HIT_HEADER, f"hit; tier={look.tier or 'flight'}")]
        return self.module.Response(200, headers=headers, stream=stream, request=request)


class _Stream:
    """A byte stream over the engine's chunks (mixed into the HTTP module's SyncByteStream)."""

    def __init__(self, chunks: Any) -> None:
        self.chunks = chunks

    def __iter__(self) -> Any:
        return iter(self.chunks)

    def close(self) -> None:
        """Stop reading, from any thread (a stop button): the reader leaves; the last one to leave
        closes the upstream connection."""
        getattr(self.chunks, "close", lambda: None)()


class _AsyncStream:
    """An async byte stream over the engine's chunks (mixed into the module's AsyncByteStream)."""

    def __init__(self, chunks: Any) -> None:
        self.chunks = chunks

    def __aiter__(self) -> Any:
        return self.chunks.__aiter__()

    async def aclose(self) -> None:
        close = getattr(self.chunks, "aclose", None)
        if close is not None:
            await close()


class _Transport:
    """The sync caching transport (mixed into the HTTP module's BaseTransport)."""

    exchange: _Exchange

    def __init__(self, inner: Any, front: Any, owner: Any) -> None:
        self.inner, self.front = inner, front
        self._owner = owner  # keeps the wrapped client's HTTP client (and its transport) open

    def handle_request(self, request: Any) -> Any:
        route = self.front.route(request)
        if route is None:
            return self.inner.handle_request(request)
        engine, exchange = route.engine, self.exchange
        try:
            look = engine.lookup((route.endpoint,), route.keyed, **_look(route))
        except NonDeterministicCallError as exc:
            raise self.front.error(exc) from None
        if look.plan is None:
            return self.inner.handle_request(request)
        if look.hit is not None and not look.refresh:
            return exchange.from_cache(request, route, engine.serve(look), look.tier)
        live: list[Any] = []
        opened: dict[str, Any] = {}
        try:
            if route.streaming:
                chunks = engine.stream(look, lambda: self._open(request, opened), **exchange.hooks(route),
                                       abort=lambda: opened["response"].close())
                return exchange.streamed(request, exchange.Stream(chunks), opened, look)
            value = engine.run(look, lambda: self._fetch(request, route, live))
        except _Captured as raw:
            return exchange.respond(request, raw.status, raw.headers, raw.content)
        return exchange.answer(request, route, value, live, look)

    def _fetch(self, request: Any, route: Route, live: list[Any]) -> Any:
        response = self.inner.handle_request(request)
        try:
            content = response.read()
        finally:
            response.close()
        return self.exchange.capture(route, response.status_code, list(response.headers.multi_items()),
                                     content, live)

    def _open(self, request: Any, opened: dict[str, Any]) -> Any:
        response = self.inner.handle_request(request)
        if not self.exchange.recordable(response):
            try:
                content = response.read()
            finally:
                response.close()
            raise _Captured(response.status_code, list(response.headers.multi_items()), content)
        opened["response"] = response

        def source() -> Any:
            try:
                yield from response.stream
            finally:
                response.close()
        return source()

    def close(self) -> None:
        """The inner transport belongs to the client that was wrapped: leave it open."""


class _AsyncTransport:
    """The async caching transport (mixed into the HTTP module's AsyncBaseTransport)."""

    exchange: _Exchange

    def __init__(self, inner: Any, front: Any, owner: Any) -> None:
        self.inner, self.front = inner, front
        self._owner = owner

    async def handle_async_request(self, request: Any) -> Any:
        route = self.front.route(request)
        if route is None:
            return await self.inner.handle_async_request(request)
        engine, exchange = route.engine, self.exchange
        try:
            look = await engine.alookup((route.endpoint,), route.keyed, **_look(route))
        except NonDeterministicCallError as exc:
            raise self.front.error(exc) from None
        if look.plan is None:
            return await self.inner.handle_async_request(request)
        if look.hit is not None and not look.refresh:
            return exchange.from_cache(request, route, engine.serve(look), look.tier)
        live: list[Any] = []
        opened: dict[str, Any] = {}
        try:
            if route.streaming:
                chunks = await engine.astream(look, lambda: self._open(request, opened), **exchange.hooks(route))
                return exchange.streamed(request, exchange.AsyncStream(chunks), opened, look)
            value = await engine.arun(look, lambda: self._fetch(request, route, live))
        except _Captured as raw:
            return exchange.respond(request, raw.status, raw.headers, raw.content)
        return exchange.answer(request, route, value, live, look)

    async def _fetch(self, request: Any, route: Route, live: list[Any]) -> Any:
        response = await self.inner.handle_async_request(request)
        try:
            content = await response.aread()
        finally:
            await response.aclose()
        return self.exchange.capture(route, response.status_code, list(response.headers.multi_items()),
                                     content, live)

    async def _open(self, request: Any, opened: dict[str, Any]) -> Any:
        response = await self.inner.handle_async_request(request)
        if not self.exchange.recordable(response):
            try:
                content = await response.aread()
            finally:
                await response.aclose()
            raise _Captured(response.status_code, list(response.headers.multi_items()), content)
        opened["response"] = response

        async def source() -> Any:
            try:
                async for data in response.stream:
                    yield data
            finally:
                await response.aclose()
        return source()

    async def aclose(self) -> None:
        """The inner transport belongs to the client that was wrapped: leave it open."""


@once
def transports(module: Any) -> tuple[type, type]:
    """The sync and async caching transports for one HTTP module (httpx or httpx2)."""
    exchange = _Exchange(module)
    shared = {"exchange": exchange, "__module__": __name__}
    return (type("Transport", (_Transport, module.BaseTransport), dict(shared)),
            type("AsyncTransport", (_AsyncTransport, module.AsyncBaseTransport), dict(shared)))
