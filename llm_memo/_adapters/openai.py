"""wrap(client): an openai client whose deterministic calls are served from the cache.

The cache sits at the client's HTTP transport. Every call the SDK makes passes through
it - `create`, `.parse()`, `.stream()`, `with_raw_response`, `with_options()` copies -
and on a hit the SDK parses stored bytes exactly as it parses the provider's, so callers
get the SDK's own objects and streams. Only POSTs to /chat/completions, /responses and
/embeddings are cached; everything else goes to the provider untouched.
"""

from __future__ import annotations

import asyncio
import copy
import sys
import time
from collections.abc import Callable, Mapping
from functools import cache as once
from typing import Any, NamedTuple

import orjson

from .._engine.engine import Engine, Plan
from .._errors import NonDeterministicCallError
from .._logic.policy import CachePolicy
from .._logic.redact import public_url
from .._logic.wire import SSEParser, assemble_chat, cacheable, chat_chunks, response_events, to_sse
from .._storage.cache import Cache

__all__ = ["KEY_EXCLUDED", "wrap"]

_ENDPOINTS = (("/chat/completions", "chat"), ("/responses", "responses"), ("/embeddings", "embeddings"))
# Request fields that cannot change the answer: transport shape, accounting, bookkeeping.
KEY_EXCLUDED = frozenset({"stream", "stream_options", "usage", "user", "metadata", "store"})
# Responses fields whose answer depends on state kept by the provider.
_STATEFUL = ("previous_response_id", "conversation", "background", "prompt")
_DROP_HEADERS = ("content-length", "content-encoding", "transfer-encoding", "connection")
HIT_HEADER = "x-llm-memo-cache"


def wrap(client: Any, *, cache: Cache | None = None, policy: Any = None, ttl: Any = None,
         on_nondeterministic: str = "bypass", namespace: str | None = None, version: Any = None,
         cache_stateful: bool = False, semantic: Any = None) -> Any:
    """A copy of `client` (openai.OpenAI or AsyncOpenAI) that caches deterministic calls.

    Chat and Responses calls with temperature > 0, or with no temperature (the provider
    default is 1.0), follow `on_nondeterministic`. Embeddings are always cacheable. Calls
    that use provider-side state (`previous_response_id`, `conversation`) pass through
    unless `cache_stateful=True`. Different API keys share entries; pass `namespace=` to
    keep them apart. The client you pass in is left as it was. `semantic=` (an
    llm_memo.SemanticMatch) serves paraphrases of non-streamed chat and Responses calls.
    Without `policy=`, chat and Responses calls follow the process default (see
    llm_memo.configure) and embeddings are kept forever.
    """
    _check_client(client)
    http = client._client
    front = _Front(cache=cache, policy=policy, ttl=ttl, on_nondeterministic=on_nondeterministic,
                   namespace=namespace, version=version, cache_stateful=cache_stateful, semantic=semantic)
    is_async = hasattr(http._transport, "handle_async_request")
    classes = _classes(_http_module(http))
    wrapped = client.with_options(http_client=_caching_copy(http, classes.AsyncTransport if is_async
                                                            else classes.Transport, front))
    wrapped.__class__ = _guarded(type(wrapped), is_async)
    return wrapped


def _check_client(client: Any) -> None:
    """Refuse, with a TypeError, anything but an openai client: wrap() would cache nothing."""
    openai = sys.modules.get("openai")  # not imported: a client of it cannot exist without it
    supported = () if openai is None else (openai.OpenAI, openai.AsyncOpenAI)
    if not isinstance(client, supported):
        got = type(client).__module__ + "." + type(client).__qualname__
        raise TypeError(f"wrap() takes an openai.OpenAI or openai.AsyncOpenAI client (or a subclass such as "
                        f"openai.AzureOpenAI); got a {got}: {client!r:.80}. Other providers' clients are not "
                        "supported yet: cache their calls with @llm_cache on the function that makes them")


def _caching_copy(http: Any, caching: type, front: _Front) -> Any:
    """A shallow copy of the user's HTTP client whose transports go through the cache.

    Copying keeps (and shares) everything the user set on it - headers, cookies, auth, params,
    base URL, event hooks, timeouts, redirects - and wrapping its transports keeps what lives there:
    proxies and custom routes (the mounts), TLS verification, limits. The user's client is
    left as it was.
    """
    ours = copy.copy(http)
    ours._transport = caching(http._transport, front, http)
    ours._mounts = {pattern: None if inner is None else caching(inner, front, http)
                    for pattern, inner in http._mounts.items()}
    return ours


def _http_module(http: Any) -> Any:
    """httpx2 for openai 3.x clients, httpx for 1.x/2.x: whichever the client is built on."""
    import importlib

    for name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if isinstance(http, module.Client | module.AsyncClient):
            return module
    raise TypeError(f"wrap() does not know the HTTP client {type(http).__name__}")


class _Route(NamedTuple):
    kind: str
    engine: Engine
    endpoint: str
    keyed: dict[str, Any]
    streaming: bool
    stateful: bool


class _Front:
    """The settings of one wrap() and one engine per endpoint kind."""

    def __init__(self, *, cache: Cache | None, policy: Any, ttl: Any, on_nondeterministic: str,
                 namespace: str | None, version: Any, cache_stateful: bool, semantic: Any = None) -> None:
        self.cache_stateful = cache_stateful
        self.engines: dict[str, Engine] = {}
        for _, kind in _ENDPOINTS:
            deterministic = kind == "embeddings"
            embeddings_policy = CachePolicy.FOREVER if policy in (None, "auto") else policy
            engine = Engine(
                _endpoint_function(kind), policy=embeddings_policy if deterministic else policy, ttl=ttl,
                cache=cache, on_nondeterministic=on_nondeterministic, namespace=namespace, version=version,
                track_source=False, default_temperature=None if deterministic else 1.0,
                semantic=None if deterministic else semantic,
            )
            engine.shown = _shown
            self.engines[kind] = engine

    def route(self, request: Any) -> _Route | None:
        """What a request means for the cache, or None for one that passes through."""
        if request.method != "POST":
            return None
        path = request.url.path
        kind = next((k for suffix, k in _ENDPOINTS if path.endswith(suffix)), None)
        if kind is None:
            return None
        try:
            body = orjson.loads(request.read())
        except (orjson.JSONDecodeError, TypeError):
            return None
        if not isinstance(body, dict):
            return None
        suffix = next(s for s, k in _ENDPOINTS if k == kind)
        endpoint = str(request.url.copy_with(path=path[: -len(suffix)]))
        keyed = {k: _normal(v) for k, v in body.items() if k not in KEY_EXCLUDED and v is not None}
        stateful = kind == "responses" and any(body.get(k) for k in _STATEFUL) and not self.cache_stateful
        return _Route(kind, self.engines[kind], endpoint, keyed, bool(body.get("stream")), stateful)

    def precheck(self, path: str, body: Mapping[str, Any]) -> None:
        """Raise before the request is sent when the guard is in "raise" mode."""
        kind = next((k for suffix, k in _ENDPOINTS if path.endswith(suffix)), None)
        if kind is None:
            return
        engine = self.engines[kind]
        keyed = {k: _normal(v) for k, v in body.items() if k not in KEY_EXCLUDED and v is not None}
        try:
            engine.plan(None, ("",), keyed)
        except NonDeterministicCallError as exc:
            raise _sdk_error(exc) from None


def _endpoint_function(kind: str) -> Callable[..., Any]:
    def request(llm_memo_endpoint: str, model: str | None = None, **body: Any) -> Any:
        raise NotImplementedError  # identity and signature only: the transport does the work

    request.__module__ = "openai"
    request.__qualname__ = request.__name__ = {"chat": "chat.completions"}.get(kind, kind)
    return request


def _shown(arguments: dict[str, Any]) -> dict[str, Any]:
    """The request as an entry records it: the endpoint without user name, password or query."""
    endpoint = arguments.get("llm_memo_endpoint")
    return {**arguments, "llm_memo_endpoint": public_url(endpoint)} if isinstance(endpoint, str) else arguments


def _normal(value: Any) -> Any:
    """Wire JSON as the key sees it: 1.0 and 1 are the same number on the wire."""
    if type(value) is float and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    return value


@once
def _sdk_error_class() -> type[Exception]:
    import openai

    class SDKNonDeterministicCallError(NonDeterministicCallError, openai.OpenAIError):
        """NonDeterministicCallError that the SDK re-raises as it is, without retrying."""

    SDKNonDeterministicCallError.__module__ = "llm_memo"
    SDKNonDeterministicCallError.__qualname__ = "NonDeterministicCallError"
    return SDKNonDeterministicCallError


def _sdk_error(exc: NonDeterministicCallError) -> Exception:
    return _sdk_error_class()(exc.function, exc.temperature)


@once
def _guarded(cls: type, is_async: bool) -> type:
    """A subclass of the client class that runs the guard's "raise" check before sending."""

    def front_of(client: Any) -> _Front | None:
        return getattr(getattr(client._client, "_transport", None), "front", None)

    def check(client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        options = kwargs.get("options", args[1] if len(args) > 1 else None)
        front = front_of(client)
        body = getattr(options, "json_data", None)
        if front is not None and isinstance(body, Mapping):
            front.precheck(str(getattr(options, "url", "")), {**body, **(getattr(options, "extra_json", None) or {})})

    if is_async:
        async def arequest(self: Any, *args: Any, **kwargs: Any) -> Any:
            check(self, args, kwargs)
            return await cls.request(self, *args, **kwargs)
        namespace: dict[str, Any] = {"request": arequest}
    else:
        def request(self: Any, *args: Any, **kwargs: Any) -> Any:
            check(self, args, kwargs)
            return cls.request(self, *args, **kwargs)
        namespace = {"request": request}
    namespace["__doc__"] = cls.__doc__
    namespace["__module__"] = cls.__module__
    return type(cls.__name__, (cls,), namespace)


class _Captured(Exception):
    """An upstream answer that must reach the caller as it is and never be stored."""

    def __init__(self, status: int, headers: list[tuple[str, str]], content: bytes) -> None:
        self.status, self.headers, self.content = status, headers, content


class _Classes(NamedTuple):
    Transport: type
    AsyncTransport: type


@once
def _classes(module: Any) -> _Classes:
    """Transport and stream classes for one HTTP module (httpx or httpx2)."""

    def respond(request: Any, status: int, headers: Any, content: bytes) -> Any:
        kept = [(k, v) for k, v in headers if k.lower() not in _DROP_HEADERS]
        return module.Response(status, headers=kept, content=content, request=request)

    def from_cache(request: Any, route: _Route, value: Any, tier: str) -> Any:
        headers = [(HIT_HEADER, f"hit; tier={tier}")]
        if route.streaming:
            events = chat_chunks(value) if route.kind == "chat" else response_events(value)
            return respond(request, 200, [("content-type", "text/event-stream"), *headers],
                           to_sse(events, done=route.kind == "chat"))
        return respond(request, 200, [("content-type", "application/json"), *headers], orjson.dumps(value))

    def capture(response: Any, kind: str, content: bytes) -> Any:
        """The stored form of a non-streamed answer; raises _Captured for anything else."""
        body: Any = None
        if response.status_code == 200:
            try:
                body = orjson.loads(content)
            except orjson.JSONDecodeError:
                body = None
        if body is None or not cacheable(kind, body):
            raise _Captured(response.status_code, list(response.headers.multi_items()), content)
        return body

    def final_of(kind: str, parser: SSEParser) -> Any:
        if parser.failed or not parser.done:
            return None
        if kind == "chat":
            return assemble_chat(parser.events)
        terminal = [e for e in parser.events if e.get("type") in ("response.completed", "response.incomplete")]
        return terminal[-1].get("response") if terminal else None

    class Recorder:
        """Feeds the bytes a caller reads to an SSE parser; stores the answer at a clean end."""

        def __init__(self, kind: str, on_final: Callable[[Any], Any]) -> None:
            self.kind, self.on_final, self.parser = kind, on_final, SSEParser()
            self.finished = False

        def feed(self, data: bytes) -> Any:
            """Parse `data`; at the stream's last event (the SDK stops reading there), store."""
            self.parser.feed(data)
            return self.finish() if self.parser.done and not self.finished else None

        def finish(self) -> Any:
            if self.finished:
                return None
            self.finished = True
            self.parser.close()
            final = final_of(self.kind, self.parser)
            if final is not None and cacheable(self.kind, final):
                return self.on_final(final)
            return None

    class RecordingStream(module.SyncByteStream):  # type: ignore[misc,name-defined]
        def __init__(self, inner: Any, recorder: Recorder) -> None:
            self.inner, self.recorder = inner, recorder

        def __iter__(self) -> Any:
            for data in self.inner:
                self.recorder.feed(data)
                yield data
            self.recorder.finish()

        def close(self) -> None:
            self.inner.close()

    class AsyncRecordingStream(module.AsyncByteStream):  # type: ignore[misc,name-defined]
        def __init__(self, inner: Any, recorder: Recorder) -> None:
            self.inner, self.recorder = inner, recorder

        async def __aiter__(self) -> Any:
            async for data in self.inner:
                stored = self.recorder.feed(data)
                if stored is not None:
                    await stored
                yield data
            stored = self.recorder.finish()
            if stored is not None:
                await stored

        async def aclose(self) -> None:
            await self.inner.aclose()

    def recordable(response: Any) -> bool:
        headers = response.headers
        return (response.status_code == 200 and "text/event-stream" in headers.get("content-type", "")
                and not headers.get("content-encoding"))

    class Transport(module.BaseTransport):  # type: ignore[misc,name-defined]
        def __init__(self, inner: Any, front: _Front, owner: Any) -> None:
            self.inner, self.front = inner, front
            self._owner = owner  # keeps the wrapped client's HTTP client (and its transport) open

        def handle_request(self, request: Any) -> Any:
            route = self.front.route(request)
            engine = route.engine if route is not None else None
            cache = engine.current_cache() if engine is not None else None
            if route is None or engine is None or cache is None:
                return self.inner.handle_request(request)
            plan = _plan_or_bypass(route, cache)
            if plan is None:
                return self.inner.handle_request(request)
            key = plan.key or ""  # never empty here: _plan_or_bypass keyed it
            hit = cache.get(key, engine.counters)
            if hit is not None:
                engine.count_hit(cache, hit, plan)
                return from_cache(request, route, hit.value, hit.tier)
            if route.streaming:
                return self.stream(request, route, cache, plan)
            live: list[Any] = []

            def upstream(*_: Any, **__: Any) -> Any:
                response = self.inner.handle_request(request)
                try:
                    content = response.read()
                finally:
                    response.close()
                live.append((response.status_code, list(response.headers.multi_items()), content))
                return capture(response, route.kind, content)

            try:
                value = engine.call(upstream, None, (route.endpoint,), route.keyed)
            except _Captured as raw:
                return respond(request, raw.status, raw.headers, raw.content)
            if live:
                return respond(request, *live[0])
            return from_cache(request, route, value, "flight")

        def stream(self, request: Any, route: _Route, cache: Cache, plan: Plan) -> Any:
            engine = route.engine
            lifetime = engine.lifetime(plan.arguments)
            start = time.perf_counter()
            response = self.inner.handle_request(request)
            if not recordable(response):
                return response
            recorder = Recorder(route.kind, lambda final: engine.store(
                cache, plan, final, time.perf_counter() - start, lifetime))
            return module.Response(response.status_code, headers=response.headers,
                                   stream=RecordingStream(response.stream, recorder),
                                   extensions=response.extensions, request=request)

        def close(self) -> None:
            """The inner transport belongs to the client that was wrapped: leave it open."""

    class AsyncTransport(module.AsyncBaseTransport):  # type: ignore[misc,name-defined]
        def __init__(self, inner: Any, front: _Front, owner: Any) -> None:
            self.inner, self.front = inner, front
            self._owner = owner

        async def handle_async_request(self, request: Any) -> Any:
            route = self.front.route(request)
            engine = route.engine if route is not None else None
            cache = engine.current_cache() if engine is not None else None
            if route is None or engine is None or cache is None:
                return await self.inner.handle_async_request(request)
            plan = _plan_or_bypass(route, cache)
            if plan is None:
                return await self.inner.handle_async_request(request)
            key = plan.key or ""  # never empty here: _plan_or_bypass keyed it
            hit = cache.get_memory(key, engine.counters) or await asyncio.to_thread(
                cache.get_lower, key, engine.counters)
            if hit is not None:
                engine.count_hit(cache, hit, plan)
                return from_cache(request, route, hit.value, hit.tier)
            if route.streaming:
                return await self.stream(request, route, cache, plan)
            live: list[Any] = []

            async def upstream(*_: Any, **__: Any) -> Any:
                response = await self.inner.handle_async_request(request)
                try:
                    content = await response.aread()
                finally:
                    await response.aclose()
                live.append((response.status_code, list(response.headers.multi_items()), content))
                return capture(response, route.kind, content)

            try:
                value = await engine.acall(upstream, None, (route.endpoint,), route.keyed)
            except _Captured as raw:
                return respond(request, raw.status, raw.headers, raw.content)
            if live:
                return respond(request, *live[0])
            return from_cache(request, route, value, "flight")

        async def stream(self, request: Any, route: _Route, cache: Cache, plan: Plan) -> Any:
            engine = route.engine
            lifetime = engine.lifetime(plan.arguments)
            start = time.perf_counter()
            response = await self.inner.handle_async_request(request)
            if not recordable(response):
                return response
            recorder = Recorder(route.kind, lambda final: asyncio.to_thread(
                engine.store, cache, plan, final, time.perf_counter() - start, lifetime))
            return module.Response(response.status_code, headers=response.headers,
                                   stream=AsyncRecordingStream(response.stream, recorder),
                                   extensions=response.extensions, request=request)

        async def aclose(self) -> None:
            """The inner transport belongs to the client that was wrapped: leave it open."""

    return _Classes(Transport, AsyncTransport)


def _plan_or_bypass(route: _Route, cache: Cache) -> Plan | None:
    """The call's plan, or None (counted as a bypass) when it must reach the provider uncached."""
    engine = route.engine
    if route.stateful:
        engine.count_bypass(cache, "depends on provider-side state", route.keyed)
        return None
    try:
        plan = engine.plan(None, (route.endpoint,), route.keyed)
    except NonDeterministicCallError as exc:
        raise _sdk_error(exc) from None
    if plan.key is None:
        engine.count_bypass(cache, "non-deterministic", plan.arguments)
        return None
    return plan
