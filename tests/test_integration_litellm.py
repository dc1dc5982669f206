"""LiteLLM on llm_memo: `litellm.completion(..., client=llm_memo.wrap(openai.OpenAI(...)))`.

The real litellm package over HTTP against the local server. LiteLLM's OpenAI route sends the
request through the client it is handed, so the wrapped client's transport cache answers it:
llm_memo's keys and guard, LiteLLM's own ModelResponse objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of the price list from GitHub

import litellm
from litellm.types.utils import ModelResponse, ModelResponseStream

import llm_memo
from llm_memo.testing.server import LocalServer

pytestmark = [
    pytest.mark.timeout(60),
    # litellm's own pydantic models (a TypedDict of its GitHub Copilot login), built on first use
    pytest.mark.filterwarnings("ignore:Item.* using the `ReadOnly` qualifier:UserWarning"),
    # litellm's stream wrapper reads a pydantic attribute the way pydantic 2.11 deprecated
    pytest.mark.filterwarnings("ignore:Accessing the 'model_(computed_)?fields' attribute on the instance:DeprecationWarning"),
]
MODEL = "openai/gpt-4o-mini"


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer() as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(server: LocalServer) -> None:
    server.reset()


@pytest.fixture
def memo(tmp_path: Path) -> Iterator[llm_memo.Cache]:
    with llm_memo.Cache(tmp_path / "memo") as cache:
        yield cache


@pytest.fixture
def client(server: LocalServer, memo: llm_memo.Cache) -> Any:
    return llm_memo.wrap(openai.OpenAI(base_url=server.url, api_key="k", max_retries=0), cache=memo)


@contextlib.asynccontextmanager
async def wrapped_async(server: LocalServer, memo: llm_memo.Cache) -> AsyncIterator[Any]:
    """A wrapped AsyncOpenAI whose connections close before the test's event loop does."""
    raw = openai.AsyncOpenAI(base_url=server.url, api_key="k", max_retries=0)
    try:
        yield llm_memo.wrap(raw, cache=memo)
    finally:
        await raw.close()


def generations(server: LocalServer) -> int:
    return sum(r.path.endswith("/chat/completions") for r in server.requests)


def ask(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def test_completion_is_cached_with_litellm_objects(server: LocalServer, client: Any) -> None:
    first = litellm.completion(model=MODEL, messages=ask("Name a colour."), temperature=0, client=client)
    again = litellm.completion(model=MODEL, messages=ask("Name a colour."), temperature=0, client=client)
    assert generations(server) == 1
    assert isinstance(again, ModelResponse)
    assert again.choices[0].message.content == first.choices[0].message.content
    assert again.usage.total_tokens == first.usage.total_tokens > 0
    litellm.completion(model=MODEL, messages=ask("Name a shape."), temperature=0, client=client)
    assert generations(server) == 2


def test_litellm_keeps_llm_memos_keys(server: LocalServer, client: Any) -> None:
    """What LiteLLM stored answers the openai SDK's own identical call, and the reverse."""
    via_litellm = litellm.completion(model=MODEL, messages=ask("Capital of Peru?"), temperature=0, client=client)
    direct = client.chat.completions.create(model="gpt-4o-mini", messages=ask("Capital of Peru?"), temperature=0)
    assert generations(server) == 1
    assert direct.choices[0].message.content == via_litellm.choices[0].message.content
    client.chat.completions.create(model="gpt-4o-mini", messages=ask("Capital of Chile?"), temperature=0.0)
    litellm.completion(model=MODEL, messages=ask("Capital of Chile?"), temperature=0, client=client)
    assert generations(server) == 2


def test_acompletion_is_cached(server: LocalServer, memo: llm_memo.Cache) -> None:
    async def run() -> tuple[Any, Any]:
        async with wrapped_async(server, memo) as client:
            first = await litellm.acompletion(model=MODEL, messages=ask("Say hi."), temperature=0, client=client)
            again = await litellm.acompletion(model=MODEL, messages=ask("Say hi."), temperature=0, client=client)
            return first, again

    first, again = asyncio.run(run())
    assert generations(server) == 1
    assert isinstance(again, ModelResponse)
    assert again.choices[0].message.content == first.choices[0].message.content


def test_streams_are_cached(server: LocalServer, memo: llm_memo.Cache, client: Any) -> None:
    def stream() -> list[Any]:
        return list(litellm.completion(model=MODEL, messages=ask("Tell a story."), temperature=0,
                                       client=client, stream=True))

    async def astream() -> list[Any]:
        async with wrapped_async(server, memo) as aclient:
            chunks = await litellm.acompletion(model=MODEL, messages=ask("Tell a story."), temperature=0,
                                               client=aclient, stream=True)
            return [chunk async for chunk in chunks]

    first, again, replayed = stream(), stream(), asyncio.run(astream())
    assert generations(server) == 1 and server.requests[0].json["stream"] is True
    assert all(isinstance(c, ModelResponseStream) for c in (*again, *replayed))

    def text(chunks: list[Any]) -> str:
        return "".join(c.choices[0].delta.content or "" for c in chunks)

    assert text(first) and text(again) == text(first) == text(replayed)


def test_a_sampling_temperature_follows_the_guard(server: LocalServer, client: Any) -> None:
    with pytest.warns(llm_memo.NonDeterministicCallWarning, match="temperature=0.7"):
        litellm.completion(model=MODEL, messages=ask("Write a poem."), temperature=0.7, client=client)
    litellm.completion(model=MODEL, messages=ask("Write a poem."), temperature=0.7, client=client)
    assert generations(server) == 2


def test_a_call_without_temperature_is_cached(server: LocalServer, client: Any) -> None:
    """LiteLLM sends no temperature unless told: such a call is cached (the unset-temperature rule)."""
    first = litellm.completion(model=MODEL, messages=ask("Name a planet."), client=client)
    again = litellm.completion(model=MODEL, messages=ask("Name a planet."), client=client)
    assert generations(server) == 1
    assert again.choices[0].message.content == first.choices[0].message.content
