"""wrap(client): an openai client whose deterministic calls are served from the cache.

The cache sits at the client's HTTP transport. Every call the SDK makes passes through
it - `create`, `.parse()`, `.stream()`, `with_raw_response`, `with_options()` copies -
and on a hit the SDK parses stored bytes exactly as it parses the provider's, so callers
get the SDK's own objects and streams. Only POSTs to /chat/completions, /responses and
/embeddings are cached; everything else goes to the provider untouched. This module routes
a request (what it means for the cache); transport.py answers it through the engine. wrap()
also takes an anthropic client: anthropic.py routes its requests.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from functools import cache as once
from functools import partial
from typing import Any

from .._engine.engine import Engine
from .._errors import NonDeterministicCallError
from .._logic.policy import CachePolicy
from .._logic.wire import (
    assemble_chat,
    cacheable,
    chat_chunks,
    final_response,
    response_events,
    to_sse,
)
from .._storage.cache import Cache
from .anthropic import AnthropicFront, is_anthropic_client
from .sdk_client import (
    Route,
    Wire,
    caching_client,
    controls_of,
    endpoint_function,
    json_body,
    normal,
    sdk_error_class,
    shown,
    take_controls,
)

__all__ = ["KEY_EXCLUDED", "Route", "wrap"]

_ENDPOINTS = (("/chat/completions", "chat"), ("/responses", "responses"), ("/embeddings", "embeddings"))
# Request fields that cannot change the answer: transport shape, accounting, bookkeeping.
KEY_EXCLUDED = frozenset({"stream", "stream_options", "usage", "user", "metadata", "store"})
# Responses fields whose answer depends on state kept by the provider.
_STATEFUL = ("previous_response_id", "conversation", "background", "prompt")
_WIRES = {
    "chat": Wire(partial(cacheable, "chat"), assemble_chat, lambda value: to_sse(chat_chunks(value), done=True)),
    "responses": Wire(partial(cacheable, "responses"), final_response,
                      lambda value: to_sse(response_events(value), done=False)),
    "embeddings": Wire(partial(cacheable, "embeddings"), lambda events: None, lambda value: b""),
}


def wrap(client: Any, *, cache: Cache | None = None, policy: Any = None, ttl: Any = None,
         on_nondeterministic: str = "bypass", on_unset_temperature: str = "cache",
         namespace: str | None = None, version: Any = None,
         cache_stateful: bool = False, semantic: Any = None) -> Any:
    """A copy of `client` (openai.OpenAI or AsyncOpenAI, anthropic.Anthropic or AsyncAnthropic) that
    caches deterministic calls.

    Chat and Responses calls with temperature > 0 follow `on_nondeterministic`; a call that sets
    no temperature is cached (the provider's first sample is kept) unless
    `on_unset_temperature="bypass"`, which treats it as the provider's default of 1.0 (said
    once at INFO on the llm_memo logger). Embeddings are always cacheable. Calls
    that use provider-side state (`previous_response_id`, `conversation`) pass through
    unless `cache_stateful=True`. Different API keys share entries; pass `namespace=` to
    keep them apart. The client you pass in is left as it was. `semantic=` (an
    llm_memo.SemanticMatch) serves paraphrases of non-streamed chat and Responses calls.
    Without `policy=`, chat and Responses calls follow the process default (see
    llm_memo.configure) and embeddings are kept forever. An anthropic client's
    `messages.create` (streamed or not) and `messages.stream` follow the same rules as chat;
    a request that reuses a code-execution `container` is provider-side state.
    """
    settings = dict(cache=cache, policy=policy, ttl=ttl, on_nondeterministic=on_nondeterministic,
                    on_unset_temperature=on_unset_temperature, namespace=namespace, version=version,
                    cache_stateful=cache_stateful, semantic=semantic)
    if is_anthropic_client(client):
        return caching_client(client, AnthropicFront(**settings))
    _check_client(client)
    return caching_client(client, _Front(**settings))


def _check_client(client: Any) -> None:
    """Refuse, with a TypeError, anything but an openai or anthropic client: wrap() would cache nothing."""
    openai = sys.modules.get("openai")  # not imported: a client of it cannot exist without it
    supported = () if openai is None else (openai.OpenAI, openai.AsyncOpenAI)
    if not isinstance(client, supported):
        got = type(client).__module__ + "." + type(client).__qualname__
        raise TypeError(f"wrap() takes an openai.OpenAI or openai.AsyncOpenAI client (or a subclass such as "
                        f"openai.AzureOpenAI), or an anthropic.Anthropic or AsyncAnthropic client; got a {got}: "
                        f"{client!r:.80}. Other providers' clients are not supported yet: cache their calls with "
                        "@llm_cache on the function that makes them")


@once
def _sdk_error() -> type[Exception]:
    import openai

    return sdk_error_class(openai.OpenAIError)


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
                endpoint_function("openai", {"chat": "chat.completions"}.get(kind, kind)),
                policy=embeddings_policy if deterministic else policy, ttl=ttl,
                cache=cache, on_nondeterministic=on_nondeterministic, namespace=namespace, version=version,
                track_source=False, on_unset_temperature=on_unset_temperature, deterministic=deterministic,
                semantic=None if deterministic else semantic, shown=shown,
            )

    def route(self, request: Any) -> Route | None:
        """What a request means for the cache, or None for one that passes through. Takes the
        `x-llm-memo` header off the request: it never reaches the provider."""
        controls = take_controls(request)
        path = request.url.path
        kind = next((k for suffix, k in _ENDPOINTS if path.endswith(suffix)), None)
        body = json_body(request) if kind is not None else None
        if kind is None or body is None:
            return None
        suffix = next(s for s, k in _ENDPOINTS if k == kind)
        endpoint = str(request.url.copy_with(path=path[: -len(suffix)]))
        keyed = {k: normal(v) for k, v in body.items() if k not in KEY_EXCLUDED and v is not None}
        stateful = kind == "responses" and any(body.get(k) for k in _STATEFUL) and not self.cache_stateful
        return Route(kind, self.engines[kind], endpoint, keyed, bool(body.get("stream")), stateful,
                     controls_of(controls), _WIRES[kind])

    def precheck(self, path: str, body: Mapping[str, Any]) -> None:
        """Raise before the request is sent when the guard is in "raise" mode."""
        kind = next((k for suffix, k in _ENDPOINTS if path.endswith(suffix)), None)
        if kind is None:
            return
        keyed = {k: normal(v) for k, v in body.items() if k not in KEY_EXCLUDED and v is not None}
        try:
            self.engines[kind].check(("",), keyed)
        except NonDeterministicCallError as exc:
            raise self.error(exc) from None

    def error(self, exc: NonDeterministicCallError) -> Exception:
        """The guard's refusal as an error the SDK raises as it is, without retrying."""
        return _sdk_error()(exc.function, exc.temperature)
