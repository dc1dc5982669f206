"""pydantic-ai: `Agent(CachedModel(model))` caches each model request of a run.

`CachedModel` wraps any pydantic-ai model (it is a pydantic-ai `WrapperModel`, so everything
but `request` and `request_stream` is the wrapped model's own). A request is keyed from what can
change the answer: the model, the messages (timestamps, run ids and usage left out, tool call
ids numbered in order), the settings and the request parameters (tools, output schema,
instructions), after the wrapped model prepared them. An answer is stored as pydantic-ai's own
JSON (`ModelMessagesTypeAdapter`) and comes back as a `ModelResponse`; a streamed one keeps its
events and replays them one by one. A served answer carries no usage: its tokens and cost are
counted as saved in `cache_info()`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from .._engine.engine import Engine, Lookup
from .._logic.records import Stats
from .._storage.cache import Cache

try:
    from pydantic import TypeAdapter
    from pydantic_ai.messages import (
        ModelMessagesTypeAdapter,
        ModelResponse,
        ModelResponseStreamEvent,
    )
    from pydantic_ai.models import (
        CompletedStreamedResponse,
        Model,
        ModelRequestParameters,
        StreamedResponse,
    )
    from pydantic_ai.models.wrapper import WrapperModel
    from pydantic_ai.usage import RequestUsage
except ImportError as exc:  # pragma: no cover - the extra is installed in the test environment
    raise ImportError("llm_memo.integrations.pydantic_ai needs pydantic-ai: "
                      "pip install 'llm_memo[pydantic-ai]'") from exc

__all__ = ["CachedModel"]

_EVENTS = TypeAdapter(list[ModelResponseStreamEvent])
_PARAMETERS = TypeAdapter(ModelRequestParameters)
# Fields of a message that record when, where or at what cost it happened, not what it says.
_CIRCUMSTANCES = frozenset({"timestamp", "request_timestamp", "duration", "run_id", "conversation_id", "usage",
                            "provider_response_id", "provider_url", "provider_details", "failed_attempts",
                            "history_digest", "metadata", "state"})
# Settings that change how a request travels, not what it asks.
_TRANSPORT_SETTINGS = frozenset({"timeout", "request_timeout", "first_event_timeout", "extra_headers"})


def pydantic_ai_request(model: str, messages: list[Any], settings: dict[str, Any], parameters: dict[str, Any],
                        stream: bool, provider: dict[str, Any]) -> Any:
    """One model request of a pydantic-ai run, as the cache keys it (never called)."""
    raise NotImplementedError


class CachedModel(WrapperModel):
    """A pydantic-ai model whose requests are served from llm_memo's cache when made before.

    `Agent(CachedModel(OpenAIChatModel("gpt-4o-mini")))`: `run`, `run_sync`, `run_stream`, tool
    calls and `message_history` are cached request by request. `cache`, `policy`, `ttl`,
    `namespace`, `on_nondeterministic`, `on_unset_temperature` and `version` mean what they mean
    for `llm_memo.llm_cache` (an agent that sets no temperature is cached by default).
    """

    def __init__(self, model: Model | str, *, cache: Cache | None = None, policy: Any = None, ttl: Any = None,
                 namespace: str | None = None, on_nondeterministic: str = "bypass",
                 on_unset_temperature: str = "cache", version: Any = None) -> None:
        super().__init__(model)
        self.engine = Engine(pydantic_ai_request, cache=cache, policy=policy, ttl=ttl, namespace=namespace,
                             on_nondeterministic=on_nondeterministic, on_unset_temperature=on_unset_temperature,
                             version=version, track_source=False, shown=_shown)

    def cache_info(self) -> Stats:
        """This model's hits, misses, bypasses, and the tokens and cost hits saved, in this process."""
        return self.engine.stats()

    def cache_clear(self) -> int:
        """Remove every entry this model's requests stored (in every namespace's function tag)."""
        cache = self.engine.current_cache()
        return 0 if cache is None else cache.invalidate(tag=self.engine.tag)

    def _keyed(self, messages: list[Any], settings: Any, parameters: ModelRequestParameters,
               stream: bool) -> dict[str, Any]:
        """What can change this request's answer, as plain JSON data."""
        return {"model": self.wrapped.model_name, "messages": _normal_messages(messages),
                "settings": {k: v for k, v in (settings or {}).items() if k not in _TRANSPORT_SETTINGS},
                "parameters": _normal_parameters(parameters),
                "stream": stream, "provider": {"system": self.wrapped.system, "url": self.wrapped.base_url}}

    async def request(self, messages: list[Any], model_settings: Any,
                      model_request_parameters: ModelRequestParameters) -> ModelResponse:
        settings, parameters = self.wrapped.prepare_request(model_settings, model_request_parameters)
        look = await self.engine.alookup((), self._keyed(messages, settings, parameters, False))
        if look.plan is None:
            return await self.wrapped.request(messages, model_settings, model_request_parameters)
        fetched: list[ModelResponse] = []

        async def compute() -> dict[str, Any]:
            fetched.append(await self.wrapped.request(messages, model_settings, model_request_parameters))
            return _stored(fetched[0])

        value = await self.engine.arun(look, compute)
        return fetched[0] if fetched else _served(value)

    @asynccontextmanager
    async def request_stream(self, messages: list[Any], model_settings: Any,
                             model_request_parameters: ModelRequestParameters,
                             run_context: Any = None) -> AsyncIterator[StreamedResponse]:
        settings, parameters = self.wrapped.prepare_request(model_settings, model_request_parameters)
        look = await self.engine.alookup((), self._keyed(messages, settings, parameters, True), stream=True)
        if look.plan is None:
            async with self.wrapped.request_stream(messages, model_settings, model_request_parameters,
                                                   run_context) as live:
                yield live
            return
        relay = _Relay(self.engine, look, parameters, self)
        opened = await relay.open(lambda: self.wrapped.request_stream(messages, model_settings,
                                                                      model_request_parameters, run_context))
        try:
            yield opened
        finally:
            await opened.close_stream()  # a reader gone: the stream goes on for others reading along


class _Relay:
    """How one streamed request is answered: the live stream, read through the engine so its
    events are recorded and shared with identical requests made meanwhile, or a stored answer
    replayed event by event."""

    def __init__(self, engine: Engine, look: Lookup, parameters: ModelRequestParameters, model: Model) -> None:
        self.engine, self.look, self.parameters, self.model = engine, look, parameters, model
        self.live: StreamedResponse | None = None
        self.stored: dict[str, Any] | None = None

    async def open(self, open_live: Any) -> StreamedResponse:
        if self.look.hit is not None:
            return self._replayed(self.engine.serve(self.look))

        async def source() -> AsyncIterator[Any]:
            stack = AsyncExitStack()
            self.live = await stack.enter_async_context(open_live())
            return _copies(self.live.__aiter__(), stack)

        events = await self.engine.astream(self.look, source, final=self._final, replay_of=self._replay_of)
        if self.stored is not None:  # another process stored it while this one waited
            return self._replayed(self.stored)
        placeholder = ModelResponse(parts=[], model_name=self.model.model_name, provider_name=self.model.system)
        return _Streamed(placeholder, self.parameters, events, self.live)

    def _final(self, events: list[Any]) -> dict[str, Any] | None:
        """The stored form of a stream that ended whole."""
        assert self.live is not None
        response = self.live.get()
        if response.state != "complete":
            return None
        return {**_stored(response), "events": _EVENTS.dump_python(events, mode="json")}

    def _replay_of(self, value: dict[str, Any]) -> Iterable[Any]:
        self.stored = value
        return ()

    def _replayed(self, value: dict[str, Any]) -> StreamedResponse:
        """A stored answer as a stream that yields its events again."""
        return CompletedStreamedResponse(_served(value), model_request_parameters=self.parameters,
                                         replay_events=_EVENTS.validate_python(value["events"]))


class _Streamed(CompletedStreamedResponse):
    """A stream whose events arrive through the engine, its parts built from the events this reader
    has had (the live stream may be ahead of it: another reader of the shared stream pulls too).
    Its response is the live stream's once it ended; a reader along another's stream had it free."""

    def __init__(self, response: ModelResponse, parameters: ModelRequestParameters, events: AsyncIterator[Any],
                 live: StreamedResponse | None) -> None:
        super().__init__(response, model_request_parameters=parameters, replay_events=[])
        self._events, self._live = events, live

    def __aiter__(self) -> AsyncIterator[Any]:
        if self._event_iterator is None:
            self._event_iterator = self._applied()
        return self._event_iterator

    async def _applied(self) -> AsyncIterator[Any]:
        async for event in self._events:
            self._parts_manager.apply_event(event)
            yield event
        if self._live is not None:
            self.response = self._live.get()
        self._finished = True

    async def close_stream(self) -> None:
        await self._events.aclose()  # type: ignore[attr-defined]

    @property
    def usage(self) -> RequestUsage:
        return self._live.usage if self._live is not None else self.response.usage


async def _copies(events: AsyncIterator[Any], live: AsyncExitStack) -> AsyncIterator[Any]:
    """The live stream's events, each as it was when it came (an event holds the part it starts,
    which the stream goes on to change while another reader may be behind); the live stream is
    closed when its events end or nobody reads them any more, not when its opener leaves."""
    async with live:
        async for event in events:
            yield copy.deepcopy(event)


def _stored(response: ModelResponse) -> dict[str, Any]:
    """A response as the cache keeps it: pydantic-ai's JSON, and the usage a hit saves."""
    usage = response.usage
    saved: dict[str, Any] = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}
    with contextlib.suppress(Exception):  # no price known to pydantic-ai: llm_memo's price table decides
        saved["cost"] = float(response.cost().total_price)
    return {"model": response.model_name, "usage": saved,
            "response": ModelMessagesTypeAdapter.dump_python([response], mode="json")[0]}


def _served(value: dict[str, Any]) -> ModelResponse:
    """A stored response as pydantic-ai's own type; it used no tokens this time."""
    response = ModelMessagesTypeAdapter.validate_python([value["response"]])[0]
    assert isinstance(response, ModelResponse)
    return dataclasses.replace(response, usage=RequestUsage())


def _normal_messages(messages: list[Any]) -> list[Any]:
    """The messages as JSON without their circumstances, tool call ids numbered in order of appearance."""
    ids: dict[str, str] = {}

    def normal(value: Any, top: bool) -> Any:
        if isinstance(value, dict):
            return {k: (ids.setdefault(v, f"call_{len(ids)}") if k == "tool_call_id" and isinstance(v, str)
                        else normal(v, False))
                    for k, v in value.items() if not (k in _CIRCUMSTANCES and (top or k == "timestamp"))}
        if isinstance(value, list):
            return [normal(v, False) for v in value]
        return value

    return [normal(m, True) for m in ModelMessagesTypeAdapter.dump_python(messages, mode="json")]


def _normal_parameters(parameters: ModelRequestParameters) -> dict[str, Any]:
    """The request parameters as JSON, the sets among them sorted."""
    dumped = _PARAMETERS.dump_python(parameters, mode="json")
    for field in dataclasses.fields(parameters):
        if isinstance(getattr(parameters, field.name, None), (set, frozenset)) and field.name in dumped:
            dumped[field.name] = sorted(dumped[field.name], key=str)
    return dumped


def _shown(arguments: dict[str, Any]) -> dict[str, Any]:
    """An entry's metadata: the model and the last message, not the whole history."""
    messages = arguments.get("messages") or []
    return {"model": arguments.get("model"), "last_message": messages[-1] if messages else None,
            "settings": arguments.get("settings")}
