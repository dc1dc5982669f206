"""wrap(client): an openai client whose deterministic calls are served from the cache.

The cache sits at the client's HTTP transport. Every call the SDK makes passes through
it - `create`, `.parse()`, `.stream()`, `with_raw_response`, `with_options()` copies -
and on a hit the SDK parses stored bytes exactly as it parses the provider's, so callers
get the SDK's own objects and streams. Only POSTs to /chat/completions, /responses and
/embeddings are cached; everything else goes to the provider untouched. This module routes
a request (what it means for the cache); openai_transport.py answers it through the engine.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Mapping
from functools import cache as once
from typing import Any, NamedTuple

import orjson

from .._engine.engine import Engine
from .._engine.options import HEADER, CallOptions, from_header
from .._errors import NonDeterministicCallError
from .._logic.policy import CachePolicy
from .._logic.redact import public_url
from .._storage.cache import Cache
from .openai_transport import sdk_error, transports

__all__ = ["KEY_EXCLUDED", "Route", "wrap"]

_ENDPOINTS = (("/chat/completions", "chat"), ("/responses", "responses"), ("/embeddings", "embeddings"))
# Request fields that cannot change the answer: transport shape, accounting, bookkeeping.
KEY_EXCLUDED = frozenset({"stream", "stream_options", "usage", "user", "metadata", "store"})
# Responses fields whose answer depends on state kept by the provider.
_STATEFUL = ("previous_response_id", "conversation", "background", "prompt")


def wrap(client: Any, *, cache: Cache | None = None, policy: Any = None, ttl: Any = None,
         on_nondeterministic: str = "bypass", on_unset_temperature: str = "cache",
         namespace: str | None = None, version: Any = None,
         cache_stateful: bool = False, semantic: Any = None) -> Any:
    """A copy of `client` (openai.OpenAI or AsyncOpenAI) that caches deterministic calls.

    Chat and Responses calls with temperature > 0 follow `on_nondeterministic`; a call that sets
    no temperature is cached (the provider's first sample is kept) unless
    `on_unset_temperature="bypass"`, which treats it as the provider's default of 1.0 (said
    once at INFO on the llm_memo logger). Embeddings are always cacheable. Calls
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
                   on_unset_temperature=on_unset_temperature,
                   namespace=namespace, version=version, cache_stateful=cache_stateful, semantic=semantic)
    is_async = hasattr(http._transport, "handle_async_request")
    sync, asynchronous = transports(_http_module(http))
    wrapped = client.with_options(http_client=_caching_copy(http, asynchronous if is_async else sync, front))
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


class Route(NamedTuple):
    """What a request means for the cache: its endpoint kind, engine, key data and controls."""

    kind: str
    engine: Engine
    endpoint: str
    keyed: dict[str, Any]
    streaming: bool
    stateful: bool
    options: CallOptions | None

    @property
    def bypass(self) -> str | None:
        """Why this request must reach the provider uncached, if it must."""
        return "depends on provider-side state" if self.stateful else None


class _Front:
    """The settings of one wrap() and one engine per endpoint kind."""

    def __init__(self, *, cache: Cache | None, policy: Any, ttl: Any, on_nondeterministic: str,
                 on_unset_temperature: str,
                 namespace: str | None, version: Any, cache_stateful: bool, semantic: Any = None) -> None:
        self.cache_stateful = cache_stateful
        self.engines: dict[str, Engine] = {}
        for _, kind in _ENDPOINTS:
            deterministic = kind == "embeddings"
            embeddings_policy = CachePolicy.FOREVER if policy in (None, "auto") else policy
            self.engines[kind] = Engine(
                _endpoint_function(kind), policy=embeddings_policy if deterministic else policy, ttl=ttl,
                cache=cache, on_nondeterministic=on_nondeterministic, namespace=namespace, version=version,
                track_source=False, on_unset_temperature=on_unset_temperature, deterministic=deterministic,
                semantic=None if deterministic else semantic, shown=_shown,
            )

    def route(self, request: Any) -> Route | None:
        """What a request means for the cache, or None for one that passes through. Takes the
        `x-llm-memo` header off the request: it never reaches the provider."""
        controls = request.headers.get(HEADER)
        if controls is not None:
            del request.headers[HEADER]
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
        options = from_header(controls) if controls is not None else None
        return Route(kind, self.engines[kind], endpoint, keyed, bool(body.get("stream")), stateful, options)

    def precheck(self, path: str, body: Mapping[str, Any]) -> None:
        """Raise before the request is sent when the guard is in "raise" mode."""
        kind = next((k for suffix, k in _ENDPOINTS if path.endswith(suffix)), None)
        if kind is None:
            return
        keyed = {k: _normal(v) for k, v in body.items() if k not in KEY_EXCLUDED and v is not None}
        try:
            self.engines[kind].check(("",), keyed)
        except NonDeterministicCallError as exc:
            raise sdk_error(exc) from None


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
def _guarded(cls: type, is_async: bool) -> type:
    """A subclass of the client class that runs the guard's "raise" check before sending."""

    def front_of(client: Any) -> _Front | None:
        return getattr(getattr(client._client, "_transport", None), "front", None)

    def check(client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        options = kwargs.get("options", args[1] if len(args) > 1 else None)
        front = front_of(client)
        headers = getattr(options, "headers", None) or {}
        controls = next((v for k, v in headers.items() if k.lower() == HEADER), None)
        if isinstance(controls, str):
            from_header(controls)  # a malformed header fails here, before anything is sent
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
