"""wrap(anthropic_client): what a request to Anthropic's /v1/messages means for the cache.

The SDK's `messages.create` (streamed or not) and `messages.stream` all POST to /v1/messages;
the transport (transport.py) answers them through the engine, and the SDK parses stored bytes
into its own Message and stream events. The key is the request body less what changes the
bill and not the answer: `cache_control` markers, wherever they are, `metadata`, attribution
fields and the `stream` flag. Headers are never part of it.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from functools import cache as once
from typing import Any

from .._engine.engine import Engine
from .._errors import NonDeterministicCallError
from .._logic.anthropic_wire import assemble_message, message_cacheable, message_events, named_sse
from .._storage.cache import Cache
from .sdk_client import (
    Route,
    Wire,
    controls_of,
    endpoint_function,
    json_body,
    normal,
    sdk_error_class,
    shown,
    take_controls,
)

__all__ = ["KEY_EXCLUDED", "AnthropicFront", "is_anthropic_client", "keyed_body"]

_SUFFIX = "/messages"
# Request fields that cannot change the answer: transport shape, accounting, attribution.
KEY_EXCLUDED = frozenset({"stream", "metadata", "cache_control", "user_profile_id", "workspace_id"})
# A code-execution container kept by the provider between requests.
_STATEFUL = ("container",)
_WIRE = Wire(message_cacheable, assemble_message, lambda value: named_sse(message_events(value)))


def is_anthropic_client(client: Any) -> bool:
    """True for an anthropic.Anthropic or AsyncAnthropic client (or a subclass)."""
    anthropic = sys.modules.get("anthropic")  # not imported: a client of it cannot exist without it
    return anthropic is not None and isinstance(client, (anthropic.Anthropic, anthropic.AsyncAnthropic))


def keyed_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a request that can change the answer, without any `cache_control` marker."""
    keyed = {k: normal(v) for k, v in body.items() if k not in KEY_EXCLUDED and v is not None}
    for name in ("system", "tools"):
        if isinstance(keyed.get(name), list):
            keyed[name] = _unmarked(keyed[name])
    if isinstance(keyed.get("messages"), list):
        keyed["messages"] = [{**m, "content": _unmarked(m["content"])}
                             if isinstance(m, dict) and isinstance(m.get("content"), list) else m
                             for m in keyed["messages"]]
    return keyed


def _unmarked(blocks: list[Any]) -> list[Any]:
    """Content blocks (or tools) without `cache_control`, also in the blocks a block holds (tool results)."""
    out = []
    for block in blocks:
        if isinstance(block, dict):
            block = {k: _unmarked(v) if k == "content" and isinstance(v, list) else v
                     for k, v in block.items() if k != "cache_control"}
        out.append(block)
    return out


@once
def _sdk_error() -> type[Exception]:
    import anthropic

    return sdk_error_class(anthropic.AnthropicError)


class AnthropicFront:
    """The settings of one wrap() of an anthropic client, and its engine for /v1/messages."""

    def __init__(self, *, cache: Cache | None, policy: Any, ttl: Any, on_nondeterministic: str,
                 on_unset_temperature: str, namespace: str | None, version: Any, cache_stateful: bool,
                 semantic: Any = None) -> None:
        self.cache_stateful = cache_stateful
        self.engine = Engine(endpoint_function("anthropic", "messages"), policy=policy, ttl=ttl, cache=cache,
                             on_nondeterministic=on_nondeterministic, on_unset_temperature=on_unset_temperature,
                             namespace=namespace, version=version, track_source=False, semantic=semantic,
                             shown=shown)

    def route(self, request: Any) -> Route | None:
        """What a request means for the cache, or None for one that passes through. Takes the
        `x-llm-memo` header off the request: it never reaches the provider."""
        controls = take_controls(request)
        path = request.url.path
        body = json_body(request) if path.endswith(_SUFFIX) else None
        if body is None:
            return None
        endpoint = str(request.url.copy_with(path=path[: -len(_SUFFIX)]))
        stateful = any(body.get(k) for k in _STATEFUL) and not self.cache_stateful
        return Route("messages", self.engine, endpoint, keyed_body(body), bool(body.get("stream")), stateful,
                     controls_of(controls), _WIRE)

    def precheck(self, path: str, body: Mapping[str, Any]) -> None:
        """Raise before the request is sent when the guard is in "raise" mode."""
        if not path.split("?", 1)[0].endswith(_SUFFIX):
            return
        try:
            self.engine.check(("",), keyed_body(body))
        except NonDeterministicCallError as exc:
            raise self.error(exc) from None

    def error(self, exc: NonDeterministicCallError) -> Exception:
        """The guard's refusal as an error the SDK raises as it is, without retrying."""
        return _sdk_error()(exc.function, exc.temperature)
