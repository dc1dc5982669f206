"""wrap(anthropic_client): the real anthropic SDK over HTTP against the local server's /v1/messages.

`messages.create` (plain and streamed) and `messages.stream` are cached at the transport and come
back as the SDK's own Message and events. anthropic 2.x has no `temperature` parameter: a
deterministic call sends it with `extra_body` (T0 below), as a user of such a model would.
"""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.resources.messages import Messages
from test_semantic import Embedder, serve_all

import llm_memo
from llm_memo._logic.anthropic_wire import (
    assemble_message,
    message_cacheable,
    message_events,
    named_sse,
)
from llm_memo._logic.wire import SSEParser
from llm_memo.testing.server import LocalServer

pytestmark = pytest.mark.timeout(60)

KEY = "test-key"
MODEL = "claude-local-1"  # no SDK lists it as deprecated (it would warn)
HIT_HEADER = "x-llm-memo-cache"
SAMPLING = {"temperature", "top_p", "top_k"} & set(inspect.signature(Messages.create).parameters)
T0: dict[str, Any] = {"temperature": 0} if "temperature" in SAMPLING else {"extra_body": {"temperature": 0}}
TOOLS = [{"name": "get_weather", "description": "Weather for a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer() as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(server: LocalServer) -> Iterator[None]:
    server.reset()
    yield
    server.reset()


@pytest.fixture
def memo(tmp_path: Path) -> Iterator[llm_memo.Cache]:
    cache = llm_memo.Cache(tmp_path / "memo")
    yield cache
    cache.close()


def base(server: LocalServer) -> str:
    return server.url.removesuffix("/v1")


@pytest.fixture
def make(server: LocalServer, memo: llm_memo.Cache) -> Iterator[Callable[..., Any]]:
    """make(**wrap_options) -> a wrapped anthropic.Anthropic on memo; closed after the test."""
    opened: list[Any] = []

    def factory(*, api_key: str = KEY, max_retries: int = 0, **options: Any) -> Any:
        raw = anthropic.Anthropic(base_url=base(server), api_key=api_key, max_retries=max_retries, timeout=10)
        wrapped = llm_memo.wrap(raw, cache=memo, **options)
        opened.extend((wrapped, raw))
        return wrapped

    yield factory
    for client in opened:
        client.close()


def ask(text: str = "What is a cache?", **extra: Any) -> dict[str, Any]:
    """Keyword arguments of a deterministic one-question request."""
    return {"model": MODEL, "max_tokens": 300, "messages": [{"role": "user", "content": text}], **T0, **extra}


def upstream(server: LocalServer) -> int:
    return sum(1 for r in server.requests if r.path.endswith("/messages"))


def same(a: Any, b: Any) -> bool:
    """The same answer: a stream's final message sets the fields a plain one leaves unset to None."""
    return bool(a.to_dict(exclude_none=True) == b.to_dict(exclude_none=True))


def text_of(events: list[Any]) -> str:
    return "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")


# ---- plain and streamed calls --------------------------------------------------------------

def test_create_hit_is_the_same_message(server: LocalServer, make: Callable[..., Any],
                                        memo: llm_memo.Cache) -> None:
    client = make()
    first = client.messages.create(**ask())
    raw = client.messages.with_raw_response.create(**ask())
    second = raw.parse()
    assert isinstance(second, anthropic.types.Message)
    assert second.to_dict() == first.to_dict()
    assert raw.headers[HIT_HEADER] == "hit; tier=memory"
    assert upstream(server) == 1
    assert (memo.counters.snapshot().hits, memo.counters.snapshot().misses) == (1, 1)
    (key,) = memo.keys()
    assert memo.get_entry(key).metadata["function"] == "anthropic.messages"  # type: ignore[union-attr]


def test_async_client_is_cached(server: LocalServer, memo: llm_memo.Cache) -> None:
    async def main() -> tuple[Any, Any, list[Any]]:
        async with anthropic.AsyncAnthropic(base_url=base(server), api_key=KEY, max_retries=0) as raw:
            client = llm_memo.wrap(raw, cache=memo)
            first = await client.messages.create(**ask("async"))
            second = await client.messages.create(**ask("async"))
            stream = await client.messages.create(**ask("async"), stream=True)
            events = [e async for e in stream]
            async with client.messages.stream(**ask("async")) as helper:
                final = await helper.get_final_message()
            await client.close()
            return first, second, [events, final]

    first, second, (events, final) = asyncio.run(main())
    assert second.to_dict() == first.to_dict() and same(final, first)
    assert text_of(events) == first.content[0].text
    assert upstream(server) == 1


def test_stream_miss_is_live_then_replayed(server: LocalServer, make: Callable[..., Any]) -> None:
    client = make()
    live = list(client.messages.create(**ask("stream me"), stream=True))
    replayed = list(client.messages.create(**ask("stream me"), stream=True))
    assert upstream(server) == 1
    assert text_of(replayed) == text_of(live) and text_of(live)
    kinds = [e.type for e in replayed]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert {"content_block_start", "content_block_delta", "content_block_stop"} <= set(kinds)
    assert replayed[-2].delta.stop_reason == "end_turn"
    assert replayed[-2].usage.output_tokens == live[-2].usage.output_tokens > 0


def test_stream_helper_on_a_miss_and_a_hit(server: LocalServer, make: Callable[..., Any]) -> None:
    client = make()
    with client.messages.stream(**ask("helper")) as stream:
        live_text = "".join(stream.text_stream)
        live = stream.get_final_message()
    with client.messages.stream(**ask("helper")) as stream:
        hit_text = "".join(stream.text_stream)
        hit = stream.get_final_message()
    assert upstream(server) == 1
    assert hit_text == live_text == live.content[0].text
    assert same(hit, live)
    plain = client.messages.create(**ask("helper"))  # the streamed entry answers a plain call too
    assert same(plain, live)
    assert upstream(server) == 1


def test_plain_entry_replays_as_a_stream(server: LocalServer, make: Callable[..., Any]) -> None:
    client = make()
    plain = client.messages.create(**ask("plain first"))
    with client.messages.stream(**ask("plain first")) as stream:
        final = stream.get_final_message()
    assert upstream(server) == 1
    assert same(final, plain)


def test_streamed_tool_use_round_trips(server: LocalServer, make: Callable[..., Any]) -> None:
    client = make()
    request = ask("Use the tool for Paris.", tools=TOOLS, tool_choice={"type": "tool", "name": "get_weather"})
    with client.messages.stream(**request) as stream:
        live = stream.get_final_message()
    replayed = list(client.messages.create(**request, stream=True))
    plain = client.messages.create(**request)
    assert upstream(server) == 1
    assert live.stop_reason == plain.stop_reason == "tool_use"
    assert live.content[0].type == "tool_use" and isinstance(live.content[0].input["city"], str)
    assert same(plain, live)
    assert any(e.type == "content_block_delta" and e.delta.type == "input_json_delta" for e in replayed)


@pytest.mark.parametrize("fault", ["error_mid_stream_next", "truncate_stream_next"])
def test_broken_streams_are_not_stored(server: LocalServer, make: Callable[..., Any], memo: llm_memo.Cache,
                                       fault: str) -> None:
    client = make()
    getattr(server, fault)()
    if fault == "error_mid_stream_next":
        with pytest.raises(anthropic.APIError), client.messages.stream(**ask("broken")) as stream:
            stream.get_final_message()
    else:  # the SDK does not notice an early end: the events it got are all it hands back
        list(client.messages.create(**ask("broken"), stream=True))
    assert list(memo.keys()) == []
    client.messages.create(**ask("broken"))
    assert upstream(server) == 2


def test_every_block_kind_round_trips_through_a_stream() -> None:
    """Blocks the local server never writes (thinking, citations, server tools) survive replay and assembly."""
    message = {
        "id": "msg_1", "type": "message", "role": "assistant", "model": MODEL, "stop_reason": "end_turn",
        "stop_sequence": None, "stop_details": None, "container": {"id": "c1", "expires_at": "2030-01-01T00:00:00Z"},
        "usage": {"input_tokens": 5, "output_tokens": 9, "cache_read_input_tokens": 3,
                  "cache_creation_input_tokens": 0, "server_tool_use": {"web_search_requests": 1}},
        "content": [
            {"type": "thinking", "thinking": "Let me think about caches for a while.", "signature": "sig=="},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "llm cache"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [
                {"type": "web_search_result", "url": "https://example.org", "title": "Cache",
                 "encrypted_content": "e"}]},
            {"type": "text", "text": "A cache keeps answers.", "citations": [
                {"type": "web_search_result_location", "url": "https://example.org", "title": "Cache",
                 "encrypted_index": "i", "cited_text": "keeps"}]},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris", "days": [1, 2]}},
        ],
    }
    parser = SSEParser()
    parser.feed(named_sse(message_events(message)))
    parser.close()
    assert parser.done and not parser.failed
    assert assemble_message(parser.events) == message
    snapshot, buffers = None, {}  # the SDK's own accumulator (messages.stream) agrees
    for event in parser.events:
        if event["type"] != "ping":
            snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=buffers)
    assert snapshot is not None and snapshot.to_dict(exclude_none=True)["content"] == message["content"]
    assert not message_cacheable(assemble_message(parser.events[:-2]))  # cut before message_delta: not an answer


# ---- what the key covers -------------------------------------------------------------------

CHANGES = {
    "model": {"model": "claude-local-2"},
    "system": {"system": "Answer briefly."},
    "messages": {"messages": [{"role": "user", "content": "Something else?"}]},
    "max_tokens": {"max_tokens": 299},
    "stop_sequences": {"stop_sequences": ["END"]},
    "tools": {"tools": TOOLS},
    "tool_choice": {"tools": TOOLS, "tool_choice": {"type": "any"}},
    "thinking": {"thinking": {"type": "enabled", "budget_tokens": 1024}},
    "output_config": {"extra_body": {**T0.get("extra_body", {}),
                                     "output_config": {"format": {"type": "json_schema", "schema": {
                                         "type": "object", "properties": {"a": {"type": "integer"}}}}}}},
    **{name: {"extra_body": {**T0.get("extra_body", {}), name: 0.5}} for name in ("top_p", "top_k")},
}


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_what_changes_the_key(server: LocalServer, make: Callable[..., Any], name: str) -> None:
    client = make()
    client.messages.create(**ask("Key?"))
    client.messages.create(**{**ask("Key?"), **CHANGES[name]})
    assert upstream(server) == 2


def _marked(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]


SAME = {
    "cache_control in messages": {"messages": [{"role": "user", "content": _marked("Key?")}]},
    "top-level cache_control": {"extra_body": {**T0.get("extra_body", {}), "cache_control": {"type": "ephemeral"}}},
    "metadata": {"metadata": {"user_id": "someone"}},
    "headers": {"extra_headers": {"x-trace": "1", "anthropic-beta": "x"}},
}


@pytest.mark.parametrize("name", sorted(SAME))
def test_what_does_not_change_the_key(server: LocalServer, make: Callable[..., Any], name: str) -> None:
    client = make()
    plain = [{"role": "user", "content": [{"type": "text", "text": "Key?"}]}]
    client.messages.create(**ask("Key?", messages=plain))
    client.messages.create(**{**ask("Key?", messages=plain), **SAME[name]})
    assert upstream(server) == 1


def test_cache_control_on_system_and_tools_does_not_change_the_key(server: LocalServer,
                                                                    make: Callable[..., Any]) -> None:
    client = make()
    client.messages.create(**ask("Key?", system=[{"type": "text", "text": "Be brief."}], tools=TOOLS))
    marked_tools = [{**TOOLS[0], "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    client.messages.create(**ask("Key?", system=_marked("Be brief."), tools=marked_tools))
    assert upstream(server) == 1


# ---- the guard, errors, state ----------------------------------------------------------------

def test_a_temperature_above_zero_follows_the_guard(server: LocalServer, make: Callable[..., Any],
                                                    memo: llm_memo.Cache) -> None:
    hot = {"extra_body": {"temperature": 0.8}}
    client = make()
    with pytest.warns(llm_memo.NonDeterministicCallWarning):
        for _ in range(2):
            client.messages.create(**{**ask("hot"), **hot})
    assert upstream(server) == 2 and list(memo.keys()) == []
    strict = make(on_nondeterministic="raise", max_retries=3)
    with pytest.raises(llm_memo.NonDeterministicCallError) as info:
        strict.messages.create(**{**ask("hot"), **hot})
    assert isinstance(info.value, anthropic.AnthropicError)
    assert upstream(server) == 2  # refused before anything was sent, and not retried


def test_a_call_without_temperature_is_cached(server: LocalServer, make: Callable[..., Any]) -> None:
    """The new rule of issue 11: anthropic 2.x sends no temperature, and such a call is cached."""
    client = make()
    request = {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "no temperature"}]}
    first = client.messages.create(**request)
    second = client.messages.create(**request)
    assert upstream(server) == 1
    assert second.to_dict() == first.to_dict()


def test_errors_pass_through_uncached(server: LocalServer, make: Callable[..., Any], memo: llm_memo.Cache) -> None:
    with pytest.raises(anthropic.AuthenticationError):
        make(api_key="bad-key").messages.create(**ask())
    server.fail_next(429)
    with pytest.raises(anthropic.RateLimitError):
        make().messages.create(**ask())
    assert list(memo.keys()) == []
    make().messages.create(**ask())
    assert upstream(server) == 3


def test_a_reused_container_is_provider_state(server: LocalServer, make: Callable[..., Any],
                                              memo: llm_memo.Cache) -> None:
    request = {**ask("container"), "extra_body": {**T0.get("extra_body", {}), "container": "container_1"}}
    client = make()
    client.messages.create(**request)
    client.messages.create(**request)
    assert upstream(server) == 2 and memo.counters.snapshot().bypassed == 2
    make(cache_stateful=True).messages.create(**request)
    make(cache_stateful=True).messages.create(**request)
    assert upstream(server) == 3


def test_wrap_refuses_anthropics_cloud_clients(memo: llm_memo.Cache) -> None:
    """Bedrock and Vertex clients speak other paths: wrap() says so rather than cache nothing."""
    bedrock = anthropic.AnthropicBedrock(aws_region="us-east-1", aws_access_key="a", aws_secret_key="b")
    with pytest.raises(TypeError, match=r"anthropic\.Anthropic"):
        llm_memo.wrap(bedrock, cache=memo)


# ---- the provider's prompt cache, beside ours ------------------------------------------------

def test_prompt_cache_usage_is_read_and_summed(server: LocalServer, make: Callable[..., Any],
                                               memo: llm_memo.Cache) -> None:
    client = make()
    system = _marked("You are a careful assistant. " + " ".join(f"Fact {i}." for i in range(200)))
    first = client.messages.create(**ask("First question?", system=system))
    second = client.messages.create(**ask("Second question?", system=system))
    client.messages.create(**ask("Second question?", system=system))  # ours: a hit, no new provider read
    written, read = first.usage.cache_creation_input_tokens, second.usage.cache_read_input_tokens
    assert written > 0 and read == written
    assert llm_memo.provider_cache_usage(first) == {"cached_tokens": 0, "cache_write_tokens": written}
    assert llm_memo.provider_cache_usage(second) == {"cached_tokens": read, "cache_write_tokens": 0}
    assert upstream(server) == 2
    for stats in (memo.counters.snapshot(), memo.stats()):  # this process, and the persisted ledger
        assert (stats.hits, stats.misses) == (1, 2)
        assert (stats.provider_cached_tokens, stats.provider_cache_write_tokens) == (read, written)
        total = second.usage.input_tokens + read + second.usage.output_tokens
        assert stats.tokens_saved == total


def test_provider_cache_usage_reads_openrouter_fields() -> None:
    usage = {"usage": {"prompt_tokens": 100, "cache_read_tokens": 60, "cache_write_tokens": 30}}
    assert llm_memo.provider_cache_usage(usage) == {"cached_tokens": 60, "cache_write_tokens": 30}
    anthropic_usage = {"usage": {"input_tokens": 5, "cache_read_input_tokens": 7, "cache_creation_input_tokens": 0}}
    assert llm_memo.provider_cache_usage(anthropic_usage) == {"cached_tokens": 7, "cache_write_tokens": 0}


# ---- across processes --------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import sys, anthropic, llm_memo
    directory, url, extra = sys.argv[1], sys.argv[2], eval(sys.argv[3])
    with llm_memo.Cache(directory) as cache:
        client = llm_memo.wrap(anthropic.Anthropic(base_url=url, api_key="k", max_retries=0), cache=cache)
        message = client.messages.create(model="claude-local-1", max_tokens=300,
                                         messages=[{"role": "user", "content": "survive a restart"}], **extra)
        print(message.content[0].text)
""")


def test_an_entry_survives_a_process_restart(server: LocalServer, tmp_path: Path) -> None:
    directory = tmp_path / "restart"
    done = subprocess.run([sys.executable, "-c", CHILD, str(directory), base(server), repr(T0)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert upstream(server) == 1
    with llm_memo.Cache(directory) as cache:
        with anthropic.Anthropic(base_url=base(server), api_key="other-key", max_retries=0) as raw:
            client = llm_memo.wrap(raw, cache=cache)
            with client.messages.stream(**ask("survive a restart")) as stream:
                answer = stream.get_final_message()
            client.close()
        assert upstream(server) == 1
        assert answer.content[0].text == done.stdout.strip()
        assert dict(cache.counters.snapshot().hits_by_tier) == {"disk": 1}
        assert (cache.stats().misses, cache.stats().hits) == (1, 1)


def test_semantic_match_serves_a_paraphrase(server: LocalServer, make: Callable[..., Any]) -> None:
    """wrap(..., semantic=) works for Messages as for chat: a paraphrase of a stored question is served."""
    embedder = Embedder()
    embedder.near("What's a cache, briefly?", "What is a cache, briefly?", 0.99)
    client = make(semantic=serve_all(embedder), policy="long")
    first = client.messages.create(**ask("What is a cache, briefly?"))
    second = client.messages.create(**ask("What's a cache, briefly?"))
    assert upstream(server) == 1
    assert second.content[0].text == first.content[0].text
