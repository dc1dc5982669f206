"""llm_memo.integrations.pydantic_ai: real pydantic-ai agents talking HTTP to the local server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from pydantic import BaseModel
from pydantic_ai import Agent, RunContext
from pydantic_ai.messages import ModelResponse, ToolReturnPart
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.tools import ToolDefinition

import llm_memo
from llm_memo.integrations.pydantic_ai import CachedModel
from llm_memo.testing import LocalServer

pytestmark = pytest.mark.slow
ZERO = {"temperature": 0}


class City(BaseModel):
    name: str
    population: int


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


@pytest.fixture(autouse=True)
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop per test, the one `run_sync` uses too, closed with the HTTP client at the end."""
    running = asyncio.new_event_loop()
    asyncio.set_event_loop(running)
    yield running
    running.run_until_complete(HTTP.pop().aclose()) if HTTP else None
    asyncio.set_event_loop(None)
    running.close()


HTTP: list[httpx2.AsyncClient] = []


def run(coro: Any) -> Any:
    return asyncio.get_event_loop().run_until_complete(coro)


def openai_model(server: LocalServer, name: str = "gpt-4o-mini") -> OpenAIChatModel:
    if not HTTP:
        HTTP.append(httpx2.AsyncClient())
    provider = OpenAIProvider(base_url=server.url, api_key="test-key", http_client=HTTP[0])
    return OpenAIChatModel(name, provider=provider)


def cached(server: LocalServer, memo: llm_memo.Cache, **options: Any) -> CachedModel:
    return CachedModel(openai_model(server), cache=memo, **options)


def sent(server: LocalServer) -> int:
    return sum(1 for r in server.requests if r.path.endswith("/chat/completions"))


async def _once(ctx: RunContext[Any], tool: ToolDefinition) -> ToolDefinition | None:
    """Offer a tool until it has been called (the local server calls the first tool it is offered)."""
    returned = any(isinstance(p, ToolReturnPart) and p.tool_name == tool.name
                   for m in ctx.messages for p in getattr(m, "parts", ()))
    return None if returned else tool


def city_agent(model: CachedModel, calls: list[str]) -> Agent[None, City]:
    agent = Agent(model, output_type=City, model_settings=ZERO)

    @agent.tool_plain(prepare=_once)
    def population_of(city: str) -> int:
        calls.append(city)
        return len(city) * 1000

    return agent


# ---- run, run_sync, message history ---------------------------------------------------------

def test_second_run_sync_is_served_from_the_cache(server: LocalServer, memo: llm_memo.Cache) -> None:
    model = cached(server, memo)
    agent = Agent(model, instructions="Be brief.", model_settings=ZERO)
    first = agent.run_sync("Tell me about Paris")
    second = agent.run_sync("Tell me about Paris")
    assert sent(server) == 1
    assert second.output == first.output
    response = second.all_messages()[-1]
    assert isinstance(response, ModelResponse) and response.model_name == "gpt-4o-mini"
    assert first.usage.output_tokens > 0 and second.usage.output_tokens == 0  # the hit used no tokens
    info = model.cache_info()
    assert (info.hits, info.misses) == (1, 1)
    assert info.tokens_saved == first.usage.input_tokens + first.usage.output_tokens
    assert info.cost_saved > 0


def test_async_run_and_message_history_are_cached(server: LocalServer, memo: llm_memo.Cache) -> None:
    agent = Agent(cached(server, memo), model_settings=ZERO)

    async def conversation() -> list[str]:
        first = await agent.run("Name a river")
        second = await agent.run("And its length?", message_history=first.all_messages())
        return [first.output, second.output]

    answers = run(conversation())
    assert sent(server) == 2
    assert run(conversation()) == answers  # new timestamps and run ids, same requests
    assert sent(server) == 2


def test_what_the_model_is_asked_keys_the_request(server: LocalServer, memo: llm_memo.Cache) -> None:
    model = cached(server, memo)
    Agent(model, model_settings=ZERO).run_sync("Hello")
    Agent(model, model_settings={**ZERO, "max_tokens": 5}).run_sync("Hello")
    Agent(model, model_settings=ZERO, instructions="Answer in French.").run_sync("Hello")
    Agent(model, model_settings=ZERO, output_type=City).run_sync("Hello")
    Agent(CachedModel(openai_model(server, "gpt-4.1"), cache=memo), model_settings=ZERO).run_sync("Hello")
    assert sent(server) == 5
    Agent(model, model_settings={"max_tokens": 5, "temperature": 0}).run_sync("Hello")
    assert sent(server) == 5


# ---- streams --------------------------------------------------------------------------------

async def _streamed_text(agent: Agent[None, str], prompt: str) -> list[str]:
    async with agent.run_stream(prompt) as result:
        return [chunk async for chunk in result.stream_text(delta=True, debounce_by=None)]


def test_run_stream_replays_text_chunk_by_chunk(server: LocalServer, memo: llm_memo.Cache) -> None:
    model = cached(server, memo)
    agent = Agent(model, model_settings=ZERO)
    first = run(_streamed_text(agent, "Count to five"))
    second = run(_streamed_text(agent, "Count to five"))
    assert sent(server) == 1
    assert len(first) > 3 and second == first
    assert model.cache_info().hits == 1


def test_run_stream_structured_output_is_cached(server: LocalServer, memo: llm_memo.Cache) -> None:
    agent = Agent(cached(server, memo), output_type=City, model_settings=ZERO)

    async def go() -> tuple[City, list[City]]:
        async with agent.run_stream("A city") as result:
            partial = [o async for o in result.stream_output(debounce_by=None)]
            return await result.get_output(), partial

    first, second = run(go()), run(go())
    assert sent(server) == 1
    assert isinstance(second[0], City) and second[0] == first[0]
    assert second[1][-1] == first[0]


def test_identical_streams_at_once_share_one_request(server: LocalServer, memo: llm_memo.Cache) -> None:
    server.latency = 0.3
    agent = Agent(cached(server, memo), model_settings=ZERO)

    async def both() -> list[list[str]]:
        return list(await asyncio.gather(_streamed_text(agent, "Same question"), _streamed_text(agent, "Same question")))

    one, other = run(both())
    assert sent(server) == 1
    assert "".join(one) == "".join(other) and one


def test_a_stream_read_in_part_is_not_stored(server: LocalServer, memo: llm_memo.Cache) -> None:
    agent = Agent(cached(server, memo), model_settings=ZERO)

    async def first_chunk() -> None:
        async with agent.run_stream("Tell me a long story") as result:
            async for _ in result.stream_text(delta=True, debounce_by=None):
                break

    run(first_chunk())
    whole = run(_streamed_text(agent, "Tell me a long story"))
    assert sent(server) == 2
    assert run(_streamed_text(agent, "Tell me a long story")) == whole
    assert sent(server) == 2


# ---- tools and structured output ------------------------------------------------------------

def test_a_run_with_tool_calls_is_replayed_without_the_provider(server: LocalServer, memo: llm_memo.Cache) -> None:
    calls: list[str] = []
    agent = city_agent(cached(server, memo), calls)
    first = agent.run_sync("Biggest city?")
    assert sent(server) == 2 and len(calls) == 1  # the tool call, then the answer
    second = agent.run_sync("Biggest city?")
    assert sent(server) == 2
    assert isinstance(second.output, City) and second.output == first.output
    assert calls == [calls[0], calls[0]]  # the tool ran again, with the same arguments


def test_a_streamed_run_with_tool_calls_is_cached(server: LocalServer, memo: llm_memo.Cache) -> None:
    calls: list[str] = []
    agent = city_agent(cached(server, memo), calls)

    async def go() -> City:
        async with agent.run_stream("Streamed biggest city?") as result:
            return await result.get_output()

    first = run(go())
    assert run(go()) == first
    assert sent(server) == 2 and len(calls) == 2


# ---- temperature ----------------------------------------------------------------------------

def test_sampling_temperature_follows_the_guard(server: LocalServer, memo: llm_memo.Cache) -> None:
    model = cached(server, memo)
    agent = Agent(model, model_settings={"temperature": 0.7})
    with pytest.warns(llm_memo.NonDeterministicCallWarning):
        agent.run_sync("Hello")
    agent.run_sync("Hello")
    Agent(model, model_settings=ZERO).run_sync("Hello", model_settings={"temperature": 0.9})
    assert sent(server) == 3
    assert model.cache_info().bypassed == 3 and model.cache_info().hits == 0


def test_raise_mode_refuses_sampling_before_anything_is_sent(server: LocalServer, memo: llm_memo.Cache) -> None:
    agent = Agent(cached(server, memo, on_nondeterministic="raise"), model_settings={"temperature": 1.0})
    with pytest.raises(llm_memo.NonDeterministicCallError):
        agent.run_sync("Hello")
    assert sent(server) == 0


def test_an_agent_that_sets_no_temperature_is_cached(server: LocalServer, memo: llm_memo.Cache) -> None:
    agent = Agent(cached(server, memo))
    first = agent.run_sync("Hello")
    assert agent.run_sync("Hello").output == first.output
    assert sent(server) == 1


# ---- persistence, packaging -----------------------------------------------------------------

CHILD = """
import asyncio, json, sys
from pydantic_ai import Agent
from pydantic_ai.messages import ModelResponse
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
import llm_memo
from llm_memo.integrations.pydantic_ai import CachedModel

url, directory = sys.argv[1], sys.argv[2]
model = CachedModel(OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(base_url=url, api_key="k")),
                    cache=llm_memo.Cache(directory))
agent = Agent(model, model_settings={"temperature": 0})
result = agent.run_sync("Persist me")

async def stream():
    async with agent.run_stream("Stream me") as streamed:
        return [c async for c in streamed.stream_text(delta=True, debounce_by=None)]

chunks = asyncio.run(stream())
last = result.all_messages()[-1]
print(json.dumps({"output": result.output, "chunks": chunks, "native": isinstance(last, ModelResponse),
                  "hits": model.cache_info().hits}))
"""


def test_a_new_process_is_served_from_disk(server: LocalServer, tmp_path: Path) -> None:
    with llm_memo.Cache(tmp_path / "shared") as memo:
        agent = Agent(CachedModel(openai_model(server), cache=memo), model_settings=ZERO)
        output = agent.run_sync("Persist me").output
        chunks = run(_streamed_text(agent, "Stream me"))
    assert sent(server) == 2
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(CHILD), server.url, str(tmp_path / "shared")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    child = json.loads(done.stdout)
    assert child == {"output": output, "chunks": chunks, "native": True, "hits": 2}
    assert sent(server) == 2


def test_the_wrapper_is_the_wrapped_model_to_pydantic_ai(server: LocalServer, memo: llm_memo.Cache) -> None:
    inner = openai_model(server)
    model = CachedModel(inner, cache=memo)
    assert (model.model_name, model.system, model.wrapped) == ("gpt-4o-mini", "openai", inner)


def test_import_llm_memo_does_not_import_pydantic_ai() -> None:
    code = "import sys, llm_memo; print('pydantic_ai' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_without_pydantic_ai_the_import_names_the_extra() -> None:
    code = ("import sys; sys.modules['pydantic_ai'] = None\n"
            "try:\n    import llm_memo.integrations.pydantic_ai\nexcept ImportError as exc:\n    print(exc)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "pip install 'llm_memo[pydantic-ai]'" in done.stdout, done.stderr
