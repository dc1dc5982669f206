"""What wrap() does to any provider SDK client built on httpx (openai, anthropic).

Both SDKs send every call through one httpx client; wrap() hands back a copy of the SDK client
whose httpx transports go through the cache (transport.py), and whose class runs the guard's
"raise" check before a request is built. A front (openai.py, anthropic.py) says what a request
means for the cache: its Route, and the Wire shapes of the endpoint's answers.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Mapping
from functools import cache as once
from typing import Any, NamedTuple, Protocol

import orjson

from .._engine.engine import Engine
from .._engine.options import HEADER, CallOptions, from_header
from .._errors import NonDeterministicCallError
from .._logic.redact import public_url
from .transport import transports

__all__ = ["Front", "Route", "Wire", "caching_client", "controls_of", "endpoint_function", "json_body", "normal",
           "sdk_error_class", "shown", "take_controls"]


class Wire(NamedTuple):
    """How one endpoint's answers look: which may be stored, a stream's final object, its replay."""

    cacheable: Callable[[Any], bool]
    final: Callable[[list[Any]], Any]  # the final object of a complete stream's parsed events
    replay: Callable[[Any], bytes]  # SSE bytes that stream a stored final object again


class Route(NamedTuple):
    """What a request means for the cache: its endpoint kind, engine, key data and controls."""

    kind: str
    engine: Engine
    endpoint: str
    keyed: dict[str, Any]
    streaming: bool
    stateful: bool
    options: CallOptions | None
    wire: Wire

    @property
    def bypass(self) -> str | None:
        """Why this request must reach the provider uncached, if it must."""
        return "depends on provider-side state" if self.stateful else None


class Front(Protocol):
    """One wrap()'s settings and engines, for one provider's SDK."""

    def route(self, request: Any) -> Route | None: ...
    def precheck(self, path: str, body: Mapping[str, Any]) -> None: ...
    def error(self, exc: NonDeterministicCallError) -> Exception: ...


def caching_client(client: Any, front: Front) -> Any:
    """A copy of the SDK `client` whose HTTP transports answer through `front`; `client` is left as it was."""
    http = client._client
    is_async = hasattr(http._transport, "handle_async_request")
    sync, asynchronous = transports(_http_module(http))
    wrapped = client.with_options(http_client=_caching_copy(http, asynchronous if is_async else sync, front))
    wrapped.__class__ = _guarded(type(wrapped), is_async)
    return wrapped


def _caching_copy(http: Any, caching: type, front: Front) -> Any:
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
    """httpx2 (openai 3.x, anthropic 2.x) or httpx (earlier): whichever the client is built on."""
    for cls in type(http).__mro__:
        root = cls.__module__.partition(".")[0]
        if root in ("httpx", "httpx2") and cls.__name__ in ("Client", "AsyncClient"):
            return sys.modules[root]
    raise TypeError(f"wrap() does not know the HTTP client {type(http).__name__}")


def take_controls(request: Any) -> str | None:
    """The request's `x-llm-memo` header, taken off it: it never reaches the provider."""
    controls = request.headers.get(HEADER)
    if controls is not None:
        del request.headers[HEADER]
    return controls


def json_body(request: Any) -> dict[str, Any] | None:
    """The body of a POST when it is a JSON object, else None."""
    if request.method != "POST":
        return None
    try:
        body = orjson.loads(request.read())
    except (orjson.JSONDecodeError, TypeError):
        return None
    return body if isinstance(body, dict) else None


def controls_of(controls: str | None) -> CallOptions | None:
    """The CallOptions an `x-llm-memo` header value asks for."""
    return from_header(controls) if controls is not None else None


def endpoint_function(module: str, name: str) -> Callable[..., Any]:
    """The function an endpoint's entries are recorded under (its identity and signature only)."""
    def request(llm_memo_endpoint: str, model: str | None = None, **body: Any) -> Any:
        raise NotImplementedError  # the transport does the work

    request.__module__ = module
    request.__qualname__ = request.__name__ = name
    return request


def shown(arguments: dict[str, Any]) -> dict[str, Any]:
    """The request as an entry records it: the endpoint without user name, password or query."""
    endpoint = arguments.get("llm_memo_endpoint")
    return {**arguments, "llm_memo_endpoint": public_url(endpoint)} if isinstance(endpoint, str) else arguments


def normal(value: Any) -> Any:
    """Wire JSON as the key sees it: 1.0 and 1 are the same number on the wire."""
    if type(value) is float and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [normal(v) for v in value]
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items()}
    return value


def sdk_error_class(sdk_base: type[Exception]) -> type[Exception]:
    """NonDeterministicCallError that is also the SDK's own base error, so the SDK re-raises it
    as it is instead of retrying it as a connection error."""
    class SDKNonDeterministicCallError(NonDeterministicCallError, sdk_base):
        """NonDeterministicCallError that the SDK re-raises as it is, without retrying."""

    SDKNonDeterministicCallError.__module__ = "llm_memo"
    SDKNonDeterministicCallError.__qualname__ = "NonDeterministicCallError"
    return SDKNonDeterministicCallError


@once
def _guarded(cls: type, is_async: bool) -> type:
    """A subclass of the client class that runs the guard's "raise" check before sending."""

    def front_of(client: Any) -> Front | None:
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
