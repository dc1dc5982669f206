"""llm_memo.integrations.langchain: the real LangChain packages over HTTP against the local server.

LLMMemoCache is LangChain's LLM cache (its lookup/update/clear and their async twins);
cached_chat_openai puts a ChatOpenAI on llm_memo's transport cache (invoke, ainvoke, stream,
astream). Upstream calls are counted with `server.requests`.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_python
from langchain_core.globals import set_llm_cache
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

import llm_memo
from llm_memo.integrations.langchain import LLMMemoCache, cached_chat_openai
from llm_memo.testing.server import LocalServer

pytestmark = pytest.mark.timeout(60)
MODEL = "gpt-4o-mini"


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer() as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(server: LocalServer) -> Iterator[None]:
    server.reset()
    yield
    set_llm_cache(None)


@pytest.fixture
def memo(tmp_path: Path) -> Iterator[llm_memo.Cache]:
    with llm_memo.Cache(tmp_path / "memo") as cache:
        yield cache


def chat(server: LocalServer, **settings: Any) -> ChatOpenAI:
    settings.setdefault("temperature", 0)
    settings.setdefault("model", MODEL)
    return ChatOpenAI(base_url=server.url, api_key="test-key", max_retries=0, **settings)


def generations(server: LocalServer) -> int:
    return sum(r.path.endswith("/chat/completions") for r in server.requests)


class City(BaseModel):
    name: str
    population: int


def lookup_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


# ---- LLMMemoCache: LangChain's cache interface --------------------------------------------------

def test_a_repeated_invoke_is_served_from_llm_memo(server: LocalServer, memo: llm_memo.Cache) -> None:
    cache = LLMMemoCache(memo)
    set_llm_cache(cache)
    llm = chat(server)
    first = llm.invoke([SystemMessage("Be brief."), HumanMessage("Name a colour.")])
    again = llm.invoke([SystemMessage("Be brief."), HumanMessage("Name a colour.")])
    assert generations(server) == 1
    assert isinstance(again, AIMessage) and again.content == first.content
    assert again.usage_metadata is not None and again.usage_metadata["output_tokens"] > 0
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.bypassed) == (1, 1, 0)
    assert stats.tokens_saved == first.usage_metadata["total_tokens"]
    llm.invoke("Name a different colour.")
    assert generations(server) == 2


def test_tool_calls_survive_the_cache(server: LocalServer, memo: llm_memo.Cache) -> None:
    llm = chat(server, cache=LLMMemoCache(memo)).bind_tools([lookup_weather], tool_choice="lookup_weather")
    first = llm.invoke("Weather in Paris?")
    again = llm.invoke("Weather in Paris?")
    assert generations(server) == 1
    assert first.tool_calls and again.tool_calls == first.tool_calls
    assert again.tool_calls[0]["name"] == "lookup_weather"


def test_the_async_twins_serve_what_the_sync_path_stored(server: LocalServer, memo: llm_memo.Cache) -> None:
    llm = chat(server, cache=LLMMemoCache(memo))

    async def run() -> tuple[Any, Any]:
        return await llm.ainvoke("Say hi."), await llm.ainvoke("Say hi.")

    first, again = asyncio.run(run())
    assert generations(server) == 1 and again.content == first.content
    assert llm.invoke("Say hi.").content == first.content
    assert generations(server) == 1


def test_a_fresh_process_is_served_what_another_stored(server: LocalServer, tmp_path: Path) -> None:
    code = """
        import json, sys
        import llm_memo
        from langchain_openai import ChatOpenAI
        from llm_memo.integrations.langchain import LLMMemoCache
        def weather(city: str) -> str:
            '''The weather in a city.'''
        llm = ChatOpenAI(model="gpt-4o-mini", base_url=sys.argv[1], api_key="k", temperature=0, max_retries=0,
                         cache=LLMMemoCache(llm_memo.Cache(sys.argv[2])))
        message = llm.bind_tools([weather], tool_choice="weather").invoke("Weather in Oslo?")
        print(json.dumps([type(message).__name__, message.tool_calls, message.response_metadata["model_name"]]))
    """
    first = json.loads(run_python(code, server.url, str(tmp_path / "shared")))
    assert generations(server) == 1
    again = json.loads(run_python(code, server.url, str(tmp_path / "shared")))
    assert generations(server) == 1
    assert again == first and first[0] == "AIMessage" and first[1][0]["name"] == "weather"


def test_equal_settings_spelled_differently_share_an_entry(server: LocalServer, memo: llm_memo.Cache) -> None:
    cache = LLMMemoCache(memo)
    chat(server, temperature=0, cache=cache).invoke("Capital of France?")
    chat(server, temperature=0.0, cache=cache).invoke("Capital of France?")
    chat(server, temperature=0, cache=cache, extra_body={"top_k": 1, "min_p": 0}).invoke("Capital of France?")
    chat(server, temperature=0, cache=cache, extra_body={"min_p": 0.0, "top_k": 1}).invoke("Capital of France?")
    assert generations(server) == 2
    chat(server, temperature=0, cache=cache, max_tokens=20).invoke("Capital of France?")
    chat(server, temperature=0, cache=cache).invoke("Capital of France?", stop=["."])
    chat(server, temperature=0, cache=cache, model="gpt-4.1").invoke("Capital of France?")
    assert generations(server) == 5


def test_a_sampling_temperature_follows_the_guard(server: LocalServer, memo: llm_memo.Cache) -> None:
    cache = LLMMemoCache(memo)
    llm = chat(server, temperature=0.8, cache=cache)
    with pytest.warns(llm_memo.NonDeterministicCallWarning, match="temperature=0.8"):
        llm.invoke("Write a poem.")
    llm.invoke("Write a poem.")
    assert generations(server) == 2
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.bypassed) == (0, 0, 2)
    assert list(memo.keys()) == []
    refusing = chat(server, temperature=0.8, cache=LLMMemoCache(memo, on_nondeterministic="raise"))
    with pytest.raises(llm_memo.NonDeterministicCallError):
        refusing.invoke("Write a poem.")
    assert generations(server) == 2


def test_a_model_without_temperature_is_cached(server: LocalServer, memo: llm_memo.Cache) -> None:
    llm = ChatOpenAI(model=MODEL, base_url=server.url, api_key="k", max_retries=0, cache=LLMMemoCache(memo))
    first, again = llm.invoke("Name a planet."), llm.invoke("Name a planet.")
    assert generations(server) == 1 and again.content == first.content


def test_a_text_llm_is_cached_by_its_prompt(memo: llm_memo.Cache) -> None:
    """The LLM (text prompt) path: LangChain's own fake LLM answers each call with its next response."""
    llm = FakeListLLM(responses=["first", "second", "third"], cache=LLMMemoCache(memo))
    assert llm.invoke("one") == "first"
    assert llm.invoke("one") == "first"
    assert llm.invoke("two") == "second"


def test_clear_removes_only_langchain_entries(server: LocalServer, memo: llm_memo.Cache) -> None:
    @llm_memo.llm_cache(cache=memo)
    def other(x: int) -> int:
        return x

    other(1)
    cache = LLMMemoCache(memo)
    chat(server, cache=cache).invoke("Hello?")
    assert len(list(memo.keys())) == 2
    cache.clear()
    assert len(list(memo.keys())) == 1
    chat(server, cache=cache).invoke("Hello?")
    asyncio.run(cache.aclear())
    assert len(list(memo.keys())) == 1 and generations(server) == 2


def test_cache_options_reach_langchain_calls(server: LocalServer, memo: llm_memo.Cache) -> None:
    llm = chat(server, cache=LLMMemoCache(memo))
    with llm_memo.cache_options(write=False):
        llm.invoke("Hello?")
    llm.invoke("Hello?")
    assert generations(server) == 2
    with llm_memo.cache_options(read=False):
        llm.invoke("Hello?")
    assert generations(server) == 3


# ---- cached_chat_openai: the transport cache under ChatOpenAI ----------------------------------

def test_invoke_and_ainvoke_are_cached_at_the_transport(server: LocalServer, memo: llm_memo.Cache) -> None:
    plain = chat(server)
    llm = cached_chat_openai(plain, cache=memo)
    first = llm.invoke("Name a river.")
    again = asyncio.run(llm.ainvoke("Name a river."))
    assert generations(server) == 1
    assert isinstance(again, AIMessage) and again.content == first.content
    assert again.usage_metadata == first.usage_metadata
    plain.invoke("Name a river.")
    assert generations(server) == 2  # the model passed in is left as it was


def test_stream_and_astream_are_cached(server: LocalServer, memo: llm_memo.Cache) -> None:
    llm = cached_chat_openai(chat(server), cache=memo)
    first = list(llm.stream("Tell a story."))
    again = list(llm.stream("Tell a story."))

    async def collect() -> list[Any]:
        return [chunk async for chunk in llm.astream("Tell a story.")]

    replayed = asyncio.run(collect())
    assert generations(server) == 1
    assert all(isinstance(c, AIMessageChunk) for c in (*again, *replayed))
    text = "".join(str(c.content) for c in first)
    assert text and "".join(str(c.content) for c in again) == text == "".join(str(c.content) for c in replayed)
    assert llm.invoke("Tell a story.").content == text  # the stream's answer serves a plain call too
    assert generations(server) == 1


def test_structured_output_is_cached(server: LocalServer, memo: llm_memo.Cache) -> None:
    llm = cached_chat_openai(chat(server), cache=memo).with_structured_output(City)
    first = llm.invoke("Biggest city in Japan?")
    again = llm.invoke("Biggest city in Japan?")
    assert generations(server) == 1
    assert isinstance(again, City) and again == first


def test_the_helper_keeps_the_guard(server: LocalServer, memo: llm_memo.Cache) -> None:
    llm = cached_chat_openai(chat(server, temperature=0.9), cache=memo)
    with pytest.warns(llm_memo.NonDeterministicCallWarning):
        llm.invoke("Write a poem.")
    llm.invoke("Write a poem.")
    assert generations(server) == 2


def test_a_chat_openai_without_temperature_is_cached(server: LocalServer, memo: llm_memo.Cache) -> None:
    """ChatOpenAI sends no temperature unless told: such a call is cached (the unset-temperature rule)."""
    llm = cached_chat_openai(ChatOpenAI(model=MODEL, base_url=server.url, api_key="k", max_retries=0), cache=memo)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = llm.invoke("Name a planet.")
        again = llm.invoke("Name a planet.")
    assert generations(server) == 1 and again.content == first.content


def test_the_helper_refuses_what_is_not_a_chat_openai() -> None:
    with pytest.raises(TypeError, match="ChatOpenAI"):
        cached_chat_openai(object())


# ---- packaging -------------------------------------------------------------------------------

def test_import_llm_memo_loads_no_langchain() -> None:
    out = run_python("import sys, llm_memo; print(sorted(m for m in sys.modules if m.startswith('langchain')))")
    assert out.strip() == "[]"


def test_without_langchain_the_import_error_names_the_extra() -> None:
    out = run_python("""
        import sys
        sys.modules["langchain_core"] = None
        try:
            import llm_memo.integrations.langchain
        except ImportError as exc:
            print(exc)
    """)
    assert "pip install 'llm_memo[langchain]'" in out
