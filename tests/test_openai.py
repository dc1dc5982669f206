"""wrap(client): the real openai SDK over HTTP against the local server (nothing patched).

Every bullet of issue 3 that concerns the wrapped client. Upstream calls are counted with
`server.requests`; each test gets a fresh `llm_memo.Cache` in its own directory.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import importlib
import json
import logging
import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseCompletedEvent, ResponseTextDeltaEvent
from pydantic import BaseModel

import llm_memo
import llm_memo._logic.pricing as _pricing
from llm_memo.testing.server import LocalServer

pytestmark = pytest.mark.timeout(60)

KEY = "test-key"
MODEL = "gpt-4o-mini"
HIT_HEADER = "x-llm-memo-cache"
# The HTTP library the installed SDK is built on (httpx2 for openai 3.x, httpx before).
HTTP = importlib.import_module(openai.DefaultHttpxClient.__mro__[1].__module__.split(".")[0])


# ---- fixtures and helpers -------------------------------------------------------------

@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer() as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(server: LocalServer) -> Iterator[None]:
    server.reset()
    server.latency = 0.0
    yield
    server.reset()
    server.latency = 0.0


@pytest.fixture
def memo(tmp_path: Path) -> Iterator[llm_memo.Cache]:
    cache = llm_memo.Cache(tmp_path / "memo")
    yield cache
    cache.close()


@pytest.fixture
def make(server: LocalServer, memo: llm_memo.Cache) -> Iterator[Callable[..., Any]]:
    """make(**wrap_options) -> a wrapped sync client on memo; closed after the test."""
    opened: list[Any] = []

    def factory(*, url: str | None = None, api_key: str = KEY, max_retries: int = 0,
                cache: llm_memo.Cache | None = None, **options: Any) -> Any:
        raw = openai.OpenAI(base_url=url or server.url, api_key=api_key, max_retries=max_retries, timeout=10)
        wrapped = llm_memo.wrap(raw, cache=cache or memo, **options)
        opened.extend((wrapped, raw))
        return wrapped

    yield factory
    for client in opened:
        client.close()


def ask(text: str = "What is a cache?", **extra: Any) -> dict[str, Any]:
    """Keyword arguments of a deterministic one-question chat request."""
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], "temperature": 0, **extra}


def upstream(server: LocalServer, suffix: str = "") -> int:
    """Requests the server has seen (whose path ends with `suffix`)."""
    return sum(1 for r in server.requests if r.path.endswith(suffix))


def text_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def finish_of(chunks: list[ChatCompletionChunk]) -> str | None:
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    return reasons[-1] if reasons else None


def usage_of(chunks: list[ChatCompletionChunk]) -> Any:
    usages = [c.usage for c in chunks if c.usage is not None]
    return usages[-1] if usages else None


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


# ---- wrap() returns the client, the original is untouched ------------------------------

def test_wrap_returns_a_client_of_the_same_class(server: LocalServer, memo: llm_memo.Cache) -> None:
    with openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0) as raw:
        wrapped = llm_memo.wrap(raw, cache=memo)
        try:
            assert isinstance(wrapped, openai.OpenAI)
            assert type(wrapped).__name__ == "OpenAI"
            assert wrapped is not raw
            assert str(wrapped.base_url) == str(raw.base_url)

            wrapped.chat.completions.create(**ask())
            wrapped.chat.completions.create(**ask())
            assert upstream(server, "/chat/completions") == 1

            # The client passed in is left as it was: its calls are not cached.
            raw.chat.completions.create(**ask())
            raw.chat.completions.create(**ask())
            assert upstream(server, "/chat/completions") == 3

            # Other endpoints pass through.
            models = wrapped.models.list()
            wrapped.models.list()
            assert MODEL in [m.id for m in models]
            assert upstream(server, "/models") == 2
        finally:
            wrapped.close()


def test_wrap_async_client(server: LocalServer, memo: llm_memo.Cache) -> None:
    async def main() -> None:
        raw = openai.AsyncOpenAI(base_url=server.url, api_key=KEY, max_retries=0)
        wrapped = llm_memo.wrap(raw, cache=memo)
        try:
            assert isinstance(wrapped, openai.AsyncOpenAI)
            first = await wrapped.chat.completions.create(**ask())
            second = await wrapped.chat.completions.create(**ask())
            assert isinstance(second, ChatCompletion)
            assert first == second
            assert upstream(server, "/chat/completions") == 1
            await raw.chat.completions.create(**ask())
            assert upstream(server, "/chat/completions") == 2
        finally:
            await wrapped.close()
            await raw.close()

    asyncio.run(main())


def test_wrap_rejects_what_is_not_an_openai_client(memo: llm_memo.Cache) -> None:
    with pytest.raises(TypeError, match="wrap"):
        llm_memo.wrap(object(), cache=memo)


def test_wrap_keeps_the_clients_http_settings(server: LocalServer, memo: llm_memo.Cache) -> None:
    """Mounted transports (how httpx routes through proxies) and event hooks still apply."""
    hooked: list[str] = []

    class Tagging(HTTP.HTTPTransport):  # type: ignore[misc,name-defined]
        def handle_request(self, request: Any) -> Any:
            request.headers["x-via-mount"] = "yes"
            return super().handle_request(request)

    http = openai.DefaultHttpxClient(mounts={"all://": Tagging()},
                                     event_hooks={"request": [lambda request: hooked.append(request.url.path)]})
    with openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, http_client=http) as raw:
        raw.models.list()
        assert server.requests[-1].headers.get("x-via-mount") == "yes"
        assert len(hooked) == 1
        wrapped = llm_memo.wrap(raw, cache=memo)
        try:
            wrapped.models.list()
            wrapped.chat.completions.create(**ask())
            wrapped.chat.completions.create(**ask())
        finally:
            wrapped.close()
    assert upstream(server) == 3
    assert [r.headers.get("x-via-mount") for r in server.requests] == ["yes", "yes", "yes"]
    assert len(hooked) >= 3


@pytest.fixture
def redirecting(server: LocalServer) -> Iterator[str]:
    """A base URL whose /old/... paths 307-redirect (same origin) to a proxy of the local server."""
    target = urlsplit(server.url)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            if self.path.startswith("/old/"):
                self.send_response(307)
                self.send_header("location", self.path[len("/old"):])
                self.send_header("content-length", "0")
                self.end_headers()
                return
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
            connection.request(self.command, self.path, body,
                               {k: v for k, v in self.headers.items() if k.lower() != "host"})
            answer = connection.getresponse()
            data = answer.read()
            connection.close()
            self.send_response(answer.status)
            for name, value in answer.getheaders():
                if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(name, value)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=proxy.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{proxy.server_address[1]}/old/v1"
    proxy.shutdown()
    proxy.server_close()
    thread.join()


def test_wrap_follows_redirects_like_the_client(server: LocalServer, make: Callable[..., Any],
                                                redirecting: str) -> None:
    with openai.OpenAI(base_url=redirecting, api_key=KEY, max_retries=0) as raw:
        assert raw.models.list().data  # the SDK's own client follows the redirect
    client = make(url=redirecting)
    assert client.models.list().data
    first = client.chat.completions.create(**ask())
    assert client.chat.completions.create(**ask()) == first
    assert upstream(server, "/chat/completions") == 1


# ---- chat, responses, embeddings: hits return the SDK's own objects --------------------

@pytest.mark.parametrize("endpoint", ["openai", "openrouter"])
def test_chat_hit_equals_the_first_answer(server: LocalServer, make: Callable[..., Any], endpoint: str) -> None:
    client = make(url=server.openrouter_url if endpoint == "openrouter" else server.url)
    first = client.chat.completions.create(**ask())
    second = client.chat.completions.create(**ask())
    assert upstream(server) == 1
    assert isinstance(second, ChatCompletion)
    assert second == first
    assert second.to_dict() == first.to_dict()
    assert second.choices[0].message.content
    assert second.usage is not None
    assert second.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens_details.cached_tokens == first.usage.prompt_tokens_details.cached_tokens
    if endpoint == "openrouter":
        assert second.provider == "LocalProvider"  # type: ignore[attr-defined]
        assert second.usage.cost == first.usage.cost > 0  # type: ignore[attr-defined]
        assert second.usage.prompt_tokens_details.cache_write_tokens == 0  # type: ignore[attr-defined]
        assert second.choices[0].native_finish_reason == "stop"  # type: ignore[attr-defined]


def test_responses_hit(server: LocalServer, make: Callable[..., Any]) -> None:
    client = make(url=server.openrouter_url)
    first = client.responses.create(model=MODEL, input="Name a sorting algorithm.", temperature=0)
    second = client.responses.create(model=MODEL, input="Name a sorting algorithm.", temperature=0)
    assert upstream(server, "/responses") == 1
    assert isinstance(second, Response)
    assert second.output_text == first.output_text != ""
    assert second.to_dict() == first.to_dict()
    assert second.usage.cost == first.usage.cost  # type: ignore[union-attr]


@pytest.mark.parametrize("encoding", [None, "float"])
def test_embeddings_are_cached_without_temperature(server: LocalServer, make: Callable[..., Any],
                                                   encoding: str | None) -> None:
    client = make(on_nondeterministic="raise")  # embeddings are deterministic: never refused
    extra = {} if encoding is None else {"encoding_format": encoding}
    first = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"], **extra)
    second = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"], **extra)
    assert upstream(server, "/embeddings") == 1
    sent = server.requests[0].json
    assert sent.get("encoding_format") == (encoding or "base64")
    assert isinstance(second, CreateEmbeddingResponse)
    assert [d.embedding for d in second.data] == [d.embedding for d in first.data]
    assert all(isinstance(x, float) for x in second.data[0].embedding)
    assert len(second.data[0].embedding) == 64


def test_embeddings_base64_and_float_decode_to_the_same_vectors(server: LocalServer,
                                                                 make: Callable[..., Any]) -> None:
    client = make()
    b64 = [client.embeddings.create(model="text-embedding-3-small", input="gamma") for _ in range(2)]
    flt = [client.embeddings.create(model="text-embedding-3-small", input="gamma", encoding_format="float")
           for _ in range(2)]
    assert upstream(server, "/embeddings") == 2
    assert b64[0].data[0].embedding == b64[1].data[0].embedding == flt[1].data[0].embedding


# ---- the request key --------------------------------------------------------------------

CHANGES_THE_KEY: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "model": ({}, {"model": "gpt-4.1"}),
    "model variant suffix": ({}, {"model": "gpt-4o-mini:nitro"}),
    "message text": ({}, {"messages": [{"role": "user", "content": "What is a cache!"}]}),
    "extra message": ({}, {"messages": [{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "What is a cache?"}]}),
    "message role": ({}, {"messages": [{"role": "developer", "content": "What is a cache?"}]}),
    "top_p": ({}, {"top_p": 0.5}),
    "max_tokens": ({}, {"max_tokens": 5}),
    "seed": ({}, {"seed": 7}),
    "tools": ({}, {"tools": TOOLS}),
    "tool_choice": ({"tools": TOOLS}, {"tools": TOOLS, "tool_choice": "required"}),
    "response_format": ({}, {"response_format": {"type": "json_object"}}),
    "provider routing": ({}, {"extra_body": {"provider": {"order": ["openai"], "allow_fallbacks": False}}}),
    "provider routing value": ({"extra_body": {"provider": {"sort": "price"}}},
                               {"extra_body": {"provider": {"sort": "latency"}}}),
    "transforms": ({}, {"extra_body": {"transforms": ["middle-out"]}}),
    "models fallback list": ({}, {"extra_body": {"models": ["gpt-4o-mini", "gpt-4.1"]}}),
    "reasoning": ({}, {"extra_body": {"reasoning": {"effort": "high"}}}),
}


@pytest.mark.parametrize("name", list(CHANGES_THE_KEY))
def test_what_changes_the_key(server: LocalServer, make: Callable[..., Any], name: str) -> None:
    base, variant = CHANGES_THE_KEY[name]
    client = make(url=server.openrouter_url)
    client.chat.completions.create(**ask(**base))
    client.chat.completions.create(**ask(**base))
    assert upstream(server) == 1
    client.chat.completions.create(**ask(**variant))
    assert upstream(server) == 2, f"changing {name} must be a new entry"
    client.chat.completions.create(**ask(**variant))
    assert upstream(server) == 2


def test_temperature_zero_and_absent_are_different_entries(server: LocalServer, make: Callable[..., Any]) -> None:
    client = make(on_nondeterministic="cache")
    client.chat.completions.create(**ask())
    request = ask()
    del request["temperature"]
    client.chat.completions.create(**request)
    assert upstream(server) == 2
    client.chat.completions.create(**request)
    client.chat.completions.create(**ask(temperature=0))
    assert upstream(server) == 2


def test_the_endpoint_is_part_of_the_key(server: LocalServer, make: Callable[..., Any],
                                         memo: llm_memo.Cache) -> None:
    plain, router = make(url=server.url), make(url=server.openrouter_url)
    plain.chat.completions.create(**ask())
    router.chat.completions.create(**ask())
    assert upstream(server) == 2
    assert upstream(server, "/v1/chat/completions") == 2
    assert sum(1 for r in server.requests if r.path.startswith("/api/v1/")) == 1
    plain.chat.completions.create(**ask())
    router.chat.completions.create(**ask())
    assert upstream(server) == 2


def _consume(stream: Any) -> list[Any]:
    return list(stream)


KEEPS_THE_KEY: dict[str, Callable[[Any], Any]] = {
    "stream": lambda c: _consume(c.chat.completions.create(**ask(stream=True))),
    "stream_options": lambda c: _consume(c.chat.completions.create(
        **ask(stream=True, stream_options={"include_usage": True}))),
    "timeout": lambda c: c.chat.completions.create(**ask(), timeout=5),
    "max_retries": lambda c: c.with_options(max_retries=5).chat.completions.create(**ask()),
    "attribution headers": lambda c: c.chat.completions.create(
        **ask(), extra_headers={"HTTP-Referer": "https://example.com/app", "X-Title": "My App"}),
    "temperature 0.0": lambda c: c.chat.completions.create(**ask(temperature=0.0)),
    "message key order": lambda c: c.chat.completions.create(
        **{**ask(), "messages": [{"content": "What is a cache?", "role": "user"}]}),
    "parameter order": lambda c: c.chat.completions.create(
        temperature=0, messages=[{"role": "user", "content": "What is a cache?"}], model=MODEL),
    "user and metadata": lambda c: c.chat.completions.create(**ask(user="u-1", metadata={"run": "2"})),
}


@pytest.mark.parametrize("name", list(KEEPS_THE_KEY))
def test_what_does_not_change_the_key(server: LocalServer, make: Callable[..., Any], name: str) -> None:
    client = make(url=server.openrouter_url)
    client.chat.completions.create(**ask())
    assert upstream(server) == 1
    KEEPS_THE_KEY[name](client)
    assert upstream(server) == 1, f"{name} must not change the key"


def test_headers_reach_the_provider_as_sent(server: LocalServer, make: Callable[..., Any]) -> None:
    """Attribution headers go upstream untouched; no provider cache header is added."""
    client = make(url=server.openrouter_url)
    client.chat.completions.create(**ask(), extra_headers={"HTTP-Referer": "https://example.com", "X-Title": "App"})
    list(client.chat.completions.create(**ask("streamed", stream=True)))
    assert upstream(server) == 2
    first = server.requests[0].headers
    assert (first.get("http-referer"), first.get("x-title")) == ("https://example.com", "App")
    for request in server.requests:
        assert not [h for h in request.headers if h.startswith("x-openrouter-cache") or h == HIT_HEADER]


def test_a_different_api_key_shares_the_entry(server: LocalServer, make: Callable[..., Any]) -> None:
    first = make(api_key="sk-one").chat.completions.create(**ask())
    second = make(api_key="sk-two").chat.completions.create(**ask())
    assert upstream(server) == 1
    assert first == second


def test_namespace_separates_two_wrapped_clients(server: LocalServer, make: Callable[..., Any]) -> None:
    alice, bob = make(namespace="alice"), make(namespace="bob")
    alice.chat.completions.create(**ask())
    bob.chat.completions.create(**ask())
    assert upstream(server) == 2
    alice.chat.completions.create(**ask())
    bob.chat.completions.create(**ask())
    make(namespace="alice").chat.completions.create(**ask())
    assert upstream(server) == 2


# ---- determinism --------------------------------------------------------------------------

@pytest.mark.parametrize("temperature", [0.7, None])
def test_nondeterministic_calls_bypass_with_one_warning(server: LocalServer, make: Callable[..., Any],
                                                        memo: llm_memo.Cache,
                                                        temperature: float | None) -> None:
    client = make(on_unset_temperature="bypass")  # the strict rule: unset means the provider's 1.0
    request = ask(temperature=temperature) if temperature is not None else {
        k: v for k, v in ask().items() if k != "temperature"}
    with pytest.warns(llm_memo.NonDeterministicCallWarning) as record:
        for _ in range(3):
            client.chat.completions.create(**request)
    assert len([w for w in record if issubclass(w.category, llm_memo.NonDeterministicCallWarning)]) == 1
    assert upstream(server) == 3
    assert list(memo.keys()) == []
    assert memo.counters.snapshot().bypassed == 3


def test_a_call_that_sets_no_temperature_is_cached_and_said_once(server: LocalServer, make: Callable[..., Any],
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    client = make()
    request = {k: v for k, v in ask().items() if k != "temperature"}
    with caplog.at_level(logging.INFO, logger="llm_memo"), warnings.catch_warnings():
        warnings.simplefilter("error")  # no bypass warning
        for _ in range(3):
            client.chat.completions.create(**request)
            client.chat.completions.create(**request, stream=True).close()
    assert upstream(server) == 1
    told = [r.getMessage() for r in caplog.records if "set no temperature" in r.getMessage()]
    assert len(told) == 1 and "on_unset_temperature='bypass'" in told[0]
    with pytest.warns(llm_memo.NonDeterministicCallWarning):
        client.chat.completions.create(**ask(temperature=0.7))  # an explicit temperature > 0 still bypasses
    assert upstream(server) == 2


def test_on_unset_temperature_is_checked(make: Callable[..., Any]) -> None:
    with pytest.raises(ValueError, match="on_unset_temperature"):
        make(on_unset_temperature="maybe")
    with pytest.raises(ValueError, match="on_unset_temperature"):
        llm_memo.llm_cache(on_unset_temperature="never")(lambda q: q)


def test_nondeterministic_raise_refuses_before_sending(server: LocalServer, make: Callable[..., Any]) -> None:
    client = make(on_nondeterministic="raise", on_unset_temperature="bypass", max_retries=3)
    for request in (ask(temperature=0.7), {k: v for k, v in ask().items() if k != "temperature"}):
        with pytest.raises(llm_memo.NonDeterministicCallError):
            client.chat.completions.create(**request)
    with pytest.raises(llm_memo.NonDeterministicCallError):
        list(client.chat.completions.create(**ask(temperature=1.2, stream=True)))
    with pytest.raises(llm_memo.NonDeterministicCallError):
        client.responses.create(model=MODEL, input="hi", temperature=0.5)
    assert upstream(server) == 0
    client.chat.completions.create(**ask())  # temperature 0 is fine
    assert upstream(server) == 1


def test_nondeterministic_raise_async(server: LocalServer, memo: llm_memo.Cache) -> None:
    async def main() -> None:
        raw = openai.AsyncOpenAI(base_url=server.url, api_key=KEY, max_retries=3)
        client = llm_memo.wrap(raw, cache=memo, on_nondeterministic="raise")
        try:
            with pytest.raises(llm_memo.NonDeterministicCallError):
                await client.chat.completions.create(**ask(temperature=0.9))
        finally:
            await client.close()
            await raw.close()

    asyncio.run(main())
    assert upstream(server) == 0


def test_nondeterministic_cache_records_one_sample(server: LocalServer, make: Callable[..., Any]) -> None:
    client = make(on_nondeterministic="cache")
    first = client.chat.completions.create(**ask(temperature=0.7))
    second = client.chat.completions.create(**ask(temperature=0.7))
    assert upstream(server) == 1
    assert first == second


# ---- streams --------------------------------------------------------------------------------

def test_stream_miss_is_live_and_stored_when_complete(server: LocalServer, make: Callable[..., Any],
                                                      memo: llm_memo.Cache) -> None:
    client = make()
    stream = client.chat.completions.create(**ask(stream=True))
    assert isinstance(stream, openai.Stream)
    chunks = iter(stream)
    first = next(chunks)
    assert isinstance(first, ChatCompletionChunk)
    assert first.choices[0].finish_reason is None
    assert not stream.response.is_closed
    assert list(memo.keys()) == []  # nothing stored before the stream completed
    rest = list(chunks)
    assert finish_of([first, *rest]) == "stop"
    assert len(list(memo.keys())) == 1
    again = client.chat.completions.create(**ask())
    assert upstream(server) == 1
    assert again.choices[0].message.content == text_of([first, *rest])


@pytest.mark.parametrize("fault", ["truncate", "midstream"])
def test_broken_streams_are_not_stored(server: LocalServer, make: Callable[..., Any], memo: llm_memo.Cache,
                                       fault: str) -> None:
    client = make()
    if fault == "truncate":
        server.truncate_stream_next()
        chunks = list(client.chat.completions.create(**ask(stream=True)))
        assert finish_of(chunks) is None
    else:
        server.error_mid_stream_next()
        with pytest.raises(openai.APIError):
            list(client.chat.completions.create(**ask(stream=True)))
    assert list(memo.keys()) == []
    chunks = list(client.chat.completions.create(**ask(stream=True)))
    assert upstream(server) == 2
    assert finish_of(chunks) == "stop"
    client.chat.completions.create(**ask())
    assert upstream(server) == 2


def test_a_stream_the_caller_stops_reading_is_not_stored(server: LocalServer, make: Callable[..., Any],
                                                         memo: llm_memo.Cache) -> None:
    client = make()
    stream = client.chat.completions.create(**ask(stream=True))
    next(iter(stream))
    stream.close()
    assert list(memo.keys()) == []
    client.chat.completions.create(**ask())
    assert upstream(server) == 2


def test_a_truncated_responses_stream_is_not_stored(server: LocalServer, make: Callable[..., Any],
                                                    memo: llm_memo.Cache) -> None:
    client = make()
    server.truncate_stream_next()
    events = list(client.responses.create(model=MODEL, input="cut short", temperature=0, stream=True))
    assert not isinstance(events[-1], ResponseCompletedEvent)
    assert list(memo.keys()) == []
    client.responses.create(model=MODEL, input="cut short", temperature=0)
    assert upstream(server, "/responses") == 2


@pytest.mark.parametrize("endpoint", ["openai", "openrouter"])
def test_stream_hit_replays_the_stream(server: LocalServer, make: Callable[..., Any], endpoint: str) -> None:
    client = make(url=server.openrouter_url if endpoint == "openrouter" else server.url)
    live = list(client.chat.completions.create(**ask(stream=True, stream_options={"include_usage": True})))
    stream = client.chat.completions.create(**ask(stream=True))
    assert isinstance(stream, openai.Stream)
    with stream:
        replayed = list(stream)
    assert upstream(server) == 1
    assert all(isinstance(c, ChatCompletionChunk) for c in replayed)
    assert text_of(replayed) == text_of(live) != ""
    assert finish_of(replayed) == finish_of(live) == "stop"
    assert usage_of(replayed) == usage_of(live) is not None
    assert stream.response.headers.get(HIT_HEADER)


def test_non_stream_entry_replays_as_a_stream(server: LocalServer, make: Callable[..., Any]) -> None:
    client = make(url=server.openrouter_url)
    stored = client.chat.completions.create(**ask())
    replayed = list(client.chat.completions.create(**ask(stream=True)))
    assert upstream(server) == 1
    assert text_of(replayed) == stored.choices[0].message.content
    assert finish_of(replayed) == stored.choices[0].finish_reason
    assert usage_of(replayed) == stored.usage
    assert {c.id for c in replayed} == {stored.id}


def test_stream_entry_replays_as_a_non_stream(server: LocalServer, make: Callable[..., Any]) -> None:
    client = make(url=server.openrouter_url)
    live = list(client.chat.completions.create(**ask(stream=True)))
    completion = client.chat.completions.create(**ask())
    assert upstream(server) == 1
    assert isinstance(completion, ChatCompletion)
    assert completion.choices[0].message.content == text_of(live)
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == finish_of(live)
    assert completion.usage == usage_of(live)
    assert completion.id == live[0].id
    assert completion.provider == "LocalProvider"  # type: ignore[attr-defined]


def test_streamed_tool_call_round_trips(server: LocalServer, make: Callable[..., Any]) -> None:
    client = make()
    live = list(client.chat.completions.create(**ask(tools=TOOLS, tool_choice="required", stream=True)))
    completion = client.chat.completions.create(**ask(tools=TOOLS, tool_choice="required"))
    assert upstream(server) == 1
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    arguments = "".join(tc.function.arguments or "" for c in live if c.choices
                        for tc in c.choices[0].delta.tool_calls or ())
    assert call.function.name == "get_weather"
    assert call.function.arguments == arguments
    assert json.loads(call.function.arguments)["city"]
    assert completion.choices[0].finish_reason == "tool_calls"


def test_stream_helper_works_on_a_hit(server: LocalServer, make: Callable[..., Any]) -> None:
    client = make()
    stored = client.chat.completions.create(**ask())
    with client.chat.completions.stream(**ask()) as stream:
        deltas = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert upstream(server) == 1
    assert "".join(deltas) == stored.choices[0].message.content
    assert final.choices[0].message.content == stored.choices[0].message.content


def _response_deltas(events: list[Any]) -> str:
    return "".join(e.delta for e in events if isinstance(e, ResponseTextDeltaEvent))


def test_responses_stream_miss_then_non_stream_hit(server: LocalServer, make: Callable[..., Any]) -> None:
    client = make(url=server.openrouter_url)
    events = list(client.responses.create(model=MODEL, input="Why sort?", temperature=0, stream=True))
    assert any(isinstance(e, ResponseTextDeltaEvent) for e in events)
    assert isinstance(events[-1], ResponseCompletedEvent)
    response = client.responses.create(model=MODEL, input="Why sort?", temperature=0)
    assert upstream(server, "/responses") == 1
    assert isinstance(response, Response)
    assert response.output_text == _response_deltas(events) != ""
    assert response.to_dict() == events[-1].response.to_dict()


def test_responses_non_stream_entry_replays_as_a_stream(server: LocalServer, make: Callable[..., Any]) -> None:
    client = make()
    stored = client.responses.create(model=MODEL, input="Why merge?", temperature=0)
    stream = client.responses.create(model=MODEL, input="Why merge?", temperature=0, stream=True)
    assert isinstance(stream, openai.Stream)
    events = list(stream)
    assert upstream(server, "/responses") == 1
    assert _response_deltas(events) == stored.output_text
    assert isinstance(events[-1], ResponseCompletedEvent)
    assert events[-1].response.output_text == stored.output_text
    with client.responses.stream(model=MODEL, input="Why merge?", temperature=0) as helper:
        final = helper.get_final_response()
    assert final.output_text == stored.output_text
    assert upstream(server, "/responses") == 1


def test_async_stream_replay(server: LocalServer, memo: llm_memo.Cache) -> None:
    async def main() -> None:
        raw = openai.AsyncOpenAI(base_url=server.url, api_key=KEY, max_retries=0)
        client = llm_memo.wrap(raw, cache=memo)
        try:
            live = [c async for c in await client.chat.completions.create(**ask(stream=True))]
            stream = await client.chat.completions.create(**ask(stream=True))
            assert isinstance(stream, openai.AsyncStream)
            replayed = [c async for c in stream]
            assert all(isinstance(c, ChatCompletionChunk) for c in replayed)
            assert text_of(replayed) == text_of(live) != ""
            assert finish_of(replayed) == "stop"
            completion = await client.chat.completions.create(**ask())
            assert completion.choices[0].message.content == text_of(live)
            events = [e async for e in await client.responses.create(
                model=MODEL, input="async?", temperature=0, stream=True)]
            again = [e async for e in await client.responses.create(
                model=MODEL, input="async?", temperature=0, stream=True)]
            assert _response_deltas(again) == _response_deltas(events) != ""
        finally:
            await client.close()
            await raw.close()

    asyncio.run(main())
    assert upstream(server, "/chat/completions") == 1
    assert upstream(server, "/responses") == 1


# ---- parse, with_raw_response, with_options ------------------------------------------------

class Capital(BaseModel):
    country: str
    city: str
    population: int


def test_parse_is_cached(server: LocalServer, make: Callable[..., Any]) -> None:
    client = make()
    first = client.chat.completions.parse(**ask("Capital of France?"), response_format=Capital)
    second = client.chat.completions.parse(**ask("Capital of France?"), response_format=Capital)
    assert upstream(server) == 1
    assert isinstance(second.choices[0].message.parsed, Capital)
    assert second.choices[0].message.parsed == first.choices[0].message.parsed


def test_with_raw_response_on_a_hit(server: LocalServer, make: Callable[..., Any]) -> None:
    client = make()
    miss = client.chat.completions.with_raw_response.create(**ask())
    hit = client.chat.completions.with_raw_response.create(**ask())
    assert upstream(server) == 1
    assert HIT_HEADER not in miss.headers
    assert hit.headers.get(HIT_HEADER, "").startswith("hit")
    assert hit.status_code == 200
    assert hit.parse() == miss.parse()


def test_hit_header_names_the_tier(server: LocalServer, make: Callable[..., Any]) -> None:
    client = make()
    client.chat.completions.create(**ask())
    plain = client.chat.completions.with_raw_response.create(**ask())
    stream = client.chat.completions.create(**ask(stream=True))
    list(stream)
    assert upstream(server) == 1
    assert stream.response.headers[HIT_HEADER] == "hit; tier=memory"
    assert plain.headers[HIT_HEADER] == stream.response.headers[HIT_HEADER]


def test_with_options_copies_keep_caching(server: LocalServer, make: Callable[..., Any]) -> None:
    client = make()
    first = client.chat.completions.create(**ask())
    copy = client.with_options(timeout=5)
    assert copy.chat.completions.create(**ask()) == first
    copy.chat.completions.create(**ask("another question"))
    client.chat.completions.create(**ask("another question"))
    assert upstream(server) == 2


# ---- single flight ---------------------------------------------------------------------------

def test_async_gather_is_one_upstream_request(server: LocalServer, memo: llm_memo.Cache) -> None:
    server.latency = 0.2

    async def main() -> list[ChatCompletion]:
        raw = openai.AsyncOpenAI(base_url=server.openrouter_url, api_key=KEY, max_retries=0)
        client = llm_memo.wrap(raw, cache=memo)
        try:
            return await asyncio.gather(*(client.chat.completions.create(**ask("gathered")) for _ in range(20)))
        finally:
            await client.close()
            await raw.close()

    results = asyncio.run(main())
    assert upstream(server) == 1
    assert all(r == results[0] for r in results)
    stats = memo.counters.snapshot()
    assert stats.misses == 1
    assert stats.hits == 19


def test_coalesced_callers_count_what_they_saved(server: LocalServer, memo: llm_memo.Cache) -> None:
    """19 callers that shared one upstream answer saved 19 calls' tokens and dollars."""
    server.latency = 0.2

    async def main() -> list[ChatCompletion]:
        raw = openai.AsyncOpenAI(base_url=server.openrouter_url, api_key=KEY, max_retries=0)
        client = llm_memo.wrap(raw, cache=memo)
        try:
            return await asyncio.gather(*(client.chat.completions.create(**ask("coalesced")) for _ in range(20)))
        finally:
            await client.close()
            await raw.close()

    usage = asyncio.run(main())[0].usage
    assert upstream(server) == 1
    stats = memo.stats()
    assert stats.hits == 19
    assert stats.tokens_saved == usage.total_tokens * 19  # type: ignore[union-attr]
    assert stats.cost_saved == pytest.approx(usage.cost * 19)  # type: ignore[union-attr]


def test_threads_share_one_upstream_request(server: LocalServer, make: Callable[..., Any],
                                            memo: llm_memo.Cache) -> None:
    server.latency = 0.2
    client = make(url=server.openrouter_url)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: client.chat.completions.create(**ask("threads")), range(8)))
    assert upstream(server) == 1
    assert all(r == results[0] for r in results)
    stats = memo.stats()
    assert (stats.misses, stats.hits) == (1, 7)


# ---- errors -----------------------------------------------------------------------------------

def test_401_is_the_sdks_error_and_not_cached(server: LocalServer, make: Callable[..., Any],
                                              memo: llm_memo.Cache) -> None:
    client = make(api_key="bad-key")
    for _ in range(2):
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(**ask())
    assert upstream(server) == 2
    assert list(memo.keys()) == []


@pytest.mark.parametrize("status", [402, 500, 503])
def test_error_statuses_pass_through_uncached(server: LocalServer, make: Callable[..., Any],
                                              memo: llm_memo.Cache, status: int) -> None:
    client = make(max_retries=0)
    server.fail_next(status)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(**ask())
    assert caught.value.status_code == status
    if status >= 500:
        assert isinstance(caught.value, openai.InternalServerError)
    assert list(memo.keys()) == []
    good = client.chat.completions.create(**ask())  # the next call reaches the server again
    assert upstream(server) == 2
    assert client.chat.completions.create(**ask()) == good
    assert upstream(server) == 2


def test_503_with_sdk_retries(server: LocalServer, make: Callable[..., Any]) -> None:
    client = make(max_retries=1)
    server.fail_next(503, count=2, retry_after=0.01)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(**ask())
    assert upstream(server) == 2  # the SDK's own retry, unchanged
    client.chat.completions.create(**ask())
    assert upstream(server) == 3


def test_429_then_200_is_transparent_and_cached(server: LocalServer, make: Callable[..., Any]) -> None:
    client = make(max_retries=2)
    server.fail_next(429, retry_after=0.01)
    first = client.chat.completions.create(**ask())
    assert upstream(server) == 2
    assert client.chat.completions.create(**ask()) == first
    assert upstream(server) == 2


def test_error_in_a_200_body_is_not_stored(server: LocalServer, make: Callable[..., Any],
                                           memo: llm_memo.Cache) -> None:
    client = make(url=server.openrouter_url)
    server.error_in_body_next()
    broken = client.chat.completions.create(**ask())
    assert not broken.choices
    assert list(memo.keys()) == []
    good = client.chat.completions.create(**ask())
    assert upstream(server) == 2
    assert good.choices[0].message.content
    client.chat.completions.create(**ask())
    assert upstream(server) == 2


def test_stateful_responses_are_not_cached_unless_asked(server: LocalServer, make: Callable[..., Any]) -> None:
    plain = make()
    for _ in range(2):
        plain.responses.create(model=MODEL, input="and then?", temperature=0, previous_response_id="resp_x")
    assert upstream(server, "/responses") == 2
    opted = make(cache_stateful=True)
    for _ in range(2):
        opted.responses.create(model=MODEL, input="and then?", temperature=0, previous_response_id="resp_x")
    assert upstream(server, "/responses") == 3


# ---- cost accounting ----------------------------------------------------------------------------

def test_savings_from_openrouter_usage_cost(server: LocalServer, make: Callable[..., Any],
                                            memo: llm_memo.Cache) -> None:
    client = make(url=server.openrouter_url)
    first = client.chat.completions.create(**ask())
    hits = 3
    for _ in range(hits):
        client.chat.completions.create(**ask())
    assert upstream(server) == 1
    for stats in (memo.counters.snapshot(), memo.stats()):
        assert stats.hits == hits
        assert stats.misses == 1
        assert stats.tokens_saved == first.usage.total_tokens * hits  # type: ignore[union-attr]
        assert stats.cost_saved == pytest.approx(first.usage.cost * hits)  # type: ignore[union-attr]


def test_savings_from_the_price_table(server: LocalServer, make: Callable[..., Any], memo: llm_memo.Cache,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_pricing, "PRICES", dict(_pricing.PRICES))  # register_price changes a copy
    llm_memo.register_price("llm-memo-test-model", 2.0, 8.0)
    client = make(url=server.url)
    first = client.chat.completions.create(**ask(model="llm-memo-test-model"))
    usage = first.usage
    assert usage is not None and not hasattr(usage, "cost")
    hits = 2
    for _ in range(hits):
        client.chat.completions.create(**ask(model="llm-memo-test-model"))
    assert upstream(server) == 1
    per_call = (usage.prompt_tokens * 2.0 + usage.completion_tokens * 8.0) / 1e6
    stats = memo.stats()
    assert stats.tokens_saved == usage.total_tokens * hits
    assert stats.cost_saved == pytest.approx(per_call * hits)
    assert stats.cost_saved > 0


def test_embeddings_savings(server: LocalServer, make: Callable[..., Any], memo: llm_memo.Cache) -> None:
    client = make(url=server.openrouter_url)
    first = client.embeddings.create(model="text-embedding-3-small", input=["one two three"])
    client.embeddings.create(model="text-embedding-3-small", input=["one two three"])
    stats = memo.stats()
    assert stats.hits == 1
    assert stats.tokens_saved == first.usage.total_tokens
    assert stats.cost_saved == pytest.approx(first.usage.cost)  # type: ignore[attr-defined]


def test_savings_are_attributed_to_the_model(server: LocalServer, make: Callable[..., Any],
                                            memo: llm_memo.Cache) -> None:
    """The lifetime ledger (`llm-memo stats --by model`) files every call under its model."""
    client = make()
    client.chat.completions.create(**ask())
    client.chat.completions.create(**ask())  # hit
    list(client.chat.completions.create(**ask(stream=True)))  # streamed hit
    list(client.chat.completions.create(**ask("streamed miss", stream=True)))
    with pytest.warns(llm_memo.NonDeterministicCallWarning):
        client.chat.completions.create(**ask(temperature=0.5))  # bypass
    assert memo.ledger is not None
    by_model = memo.ledger.totals(by="model")
    assert by_model is not None
    assert set(by_model) == {MODEL}, {k: (v.hits, v.misses, v.bypassed) for k, v in by_model.items()}
    mine = by_model[MODEL]
    assert (mine.hits, mine.misses, mine.bypassed) == (2, 2, 1)


def test_time_saved_is_the_original_latency(make: Callable[..., Any], memo: llm_memo.Cache) -> None:
    with LocalServer(latency=0.2) as slow:
        client = make(url=slow.url)
        client.chat.completions.create(**ask())
        list(client.chat.completions.create(**ask("streamed", stream=True)))
        hits = 0
        for _ in range(2):
            client.chat.completions.create(**ask())
            list(client.chat.completions.create(**ask("streamed", stream=True)))
            hits += 2
        assert len(slow.requests) == 2
    stats = memo.stats()
    assert stats.hits == hits
    assert stats.time_saved >= 0.2 * hits


# ---- a process restart --------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import sys, openai, llm_memo
    directory, url = sys.argv[1], sys.argv[2]
    with llm_memo.Cache(directory) as cache:
        client = llm_memo.wrap(openai.OpenAI(base_url=url, api_key="k", max_retries=0), cache=cache)
        answer = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "survive a restart"}], temperature=0)
        print(answer.choices[0].message.content)
""")


def test_an_entry_survives_a_process_restart(server: LocalServer, tmp_path: Path) -> None:
    directory = tmp_path / "restart"
    done = subprocess.run([sys.executable, "-c", CHILD, str(directory), server.url],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert upstream(server) == 1
    with llm_memo.Cache(directory) as cache:
        raw = openai.OpenAI(base_url=server.url, api_key="other-key", max_retries=0)
        client = llm_memo.wrap(raw, cache=cache)
        try:
            answer = client.chat.completions.create(**ask("survive a restart"))
        finally:
            client.close()
            raw.close()
        assert upstream(server) == 1
        assert answer.choices[0].message.content == done.stdout.strip()
        assert dict(cache.counters.snapshot().hits_by_tier) == {"disk": 1}
        lifetime = cache.stats()  # the ledger adds up both processes
        assert (lifetime.misses, lifetime.hits) == (1, 1)
        assert lifetime.tokens_saved == answer.usage.total_tokens  # type: ignore[union-attr]


# ---- secrets ----------------------------------------------------------------------------------------

def test_the_api_key_is_never_stored_or_logged(server: LocalServer, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-live-SECRET-123"
    directory = tmp_path / "secret"
    caplog.set_level(logging.DEBUG, logger="llm_memo")
    with llm_memo.Cache(directory) as cache:
        raw = openai.OpenAI(base_url=server.openrouter_url, api_key=secret, max_retries=0)
        client = llm_memo.wrap(raw, cache=cache)
        try:
            for _ in range(2):
                client.chat.completions.create(**ask())
                list(client.chat.completions.create(**ask("streamed", stream=True)))
                client.responses.create(model=MODEL, input="hi", temperature=0)
                client.embeddings.create(model="text-embedding-3-small", input="hi")
            with pytest.warns(llm_memo.NonDeterministicCallWarning):
                client.chat.completions.create(**ask(temperature=0.5))
            server.fail_next(500)
            with pytest.raises(openai.InternalServerError):
                client.chat.completions.create(**ask("fails"))
        finally:
            client.close()
            raw.close()
        assert cache.stats().hits == 4
    files = [p for p in directory.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert secret.encode() not in path.read_bytes(), path
    assert caplog.records  # DEBUG logging was on and llm_memo logged
    for record in caplog.records:
        assert secret not in record.getMessage()
    assert secret not in caplog.text


# ---- import cost -----------------------------------------------------------------------------------

def test_importing_llm_memo_loads_no_heavy_dependency() -> None:
    code = ("import sys, llm_memo; "
            "print(sorted(m for m in ('openai', 'anthropic', 'httpx', 'httpx2', 'redis', 'numpy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
