"""A decorated function and a wrapped client behave like good citizens.

dir(), help(), isinstance() and repr() of what @llm_cache returns, and where the
bypass warning of a decorated function or a wrapped openai client points.
"""

from __future__ import annotations

import asyncio
import inspect
import pydoc
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

import llm_memo
from llm_memo import Cache, CachedFunction, NonDeterministicCallWarning, llm_cache
from llm_memo.testing.server import LocalServer

METHODS = ("cache_info", "cache_key", "cache_clear", "invalidate", "warm")


@llm_cache
def ask(prompt: str) -> str:
    """Answer one question."""
    return prompt.upper()


@llm_cache
async def aask(prompt: str) -> str:
    """Answer one question, asynchronously."""
    return prompt.upper()


@llm_cache
def words(prompt: str) -> Iterator[str]:
    """Stream an answer."""
    yield from prompt.split()


@llm_cache
async def awords(prompt: str) -> AsyncIterator[str]:
    """Stream an answer, asynchronously."""
    for word in prompt.split():
        yield word


class Assistant:
    @llm_cache
    def answer(self, prompt: str) -> str:
        """Answer as this assistant."""
        return prompt


def undecorated(prompt: str) -> str:
    """Not cached."""
    return prompt


DECORATED: dict[str, Callable[[], Any]] = {
    "plain": lambda: ask, "async": lambda: aask, "generator": lambda: words, "async generator": lambda: awords,
    "bound method": lambda: Assistant().answer, "method on the class": lambda: Assistant.answer,
}


@pytest.mark.parametrize("name", DECORATED)
def test_dir_shows_the_cache_methods_and_the_functions_own(name: str) -> None:
    fn = DECORATED[name]()
    listed = dir(fn)
    assert set(METHODS) <= set(listed)
    assert {*dir(fn.__wrapped__), "__wrapped__"} <= set(listed)  # still the function's, too
    assert listed == sorted(listed)


@pytest.mark.parametrize("name", DECORATED)
def test_help_shows_the_cache_methods(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    fn = DECORATED[name]()
    help(fn)
    shown = capsys.readouterr().out
    for method in METHODS:
        assert f"{method}(" in shown
    assert fn.__wrapped__.__doc__.strip() in shown  # the function's own docstring comes first


def test_ipython_question_mark_shows_the_cache_methods() -> None:
    from IPython.core import oinspect

    shown = oinspect.getdoc(ask)
    assert shown is not None and shown.startswith("Answer one question.")
    assert all(f"{method}(" in shown for method in METHODS)


def test_the_docstring_is_left_as_the_function_wrote_it() -> None:
    """Tools that read __doc__ (tool schemas, prompt frameworks, Sphinx) see the user's text only."""
    assert ask.__doc__ == "Answer one question."
    assert inspect.getdoc(ask) == "Answer one question."
    assert Assistant().answer.__doc__ == "Answer as this assistant."
    assert "cache_info" in pydoc.render_doc(ask)


@pytest.mark.parametrize("name", DECORATED)
def test_isinstance_of_cached_function(name: str) -> None:
    assert isinstance(DECORATED[name](), CachedFunction)


@pytest.mark.parametrize("thing", [undecorated, lambda: None, print, Assistant(), "ask"],
                         ids=["function", "lambda", "builtin", "instance", "str"])
def test_what_is_not_decorated_is_not_a_cached_function(thing: Any) -> None:
    assert not isinstance(thing, CachedFunction)


def test_a_decorated_function_is_still_a_function() -> None:
    assert inspect.isfunction(ask) and inspect.iscoroutinefunction(aask)
    assert callable(ask) and ask("hi") == "HI"


def test_repr_names_the_function() -> None:
    assert repr(ask) == f"<llm_memo cached function {__name__}.ask>"
    assert repr(awords) == f"<llm_memo cached function {__name__}.awords>"
    assistant = Assistant()
    assert repr(assistant.answer) == f"<llm_memo cached function {__name__}.Assistant.answer of {assistant!r}>"
    assert repr(Assistant.answer) == f"<llm_memo cached function {__name__}.Assistant.answer>"


def test_help_of_a_function_without_a_docstring(capsys: pytest.CaptureFixture[str]) -> None:
    @llm_cache
    def bare(prompt: str) -> str:
        return prompt

    assert bare.__doc__ is None
    help(bare)
    shown = capsys.readouterr().out
    assert "    cache_info(): " in shown and "    warm(calls, *, concurrency=4, progress=True): " in shown


# ---- where the bypass warning points ----------------------------------------------------

def sampling(cache: Cache) -> dict[str, Callable[[], Any]]:
    """One call of each kind of decorated function, with temperature=0.7."""

    @llm_cache(cache=cache)
    def plain(prompt: str, temperature: float) -> str:
        return prompt

    @llm_cache(cache=cache)
    async def coroutine(prompt: str, temperature: float) -> str:
        return prompt

    @llm_cache(cache=cache)
    def generator(prompt: str, temperature: float) -> Iterator[str]:
        yield prompt

    @llm_cache(cache=cache)
    async def agenerator(prompt: str, temperature: float) -> AsyncIterator[str]:
        yield prompt

    class Bot:
        @llm_cache(cache=cache)
        def method(self, prompt: str, temperature: float) -> str:
            return prompt

    async def collect() -> list[str]:
        return [word async for word in agenerator("hi", temperature=0.7)]

    async def answer() -> str:
        return await coroutine("hi", temperature=0.7)

    return {"plain": lambda: plain("hi", temperature=0.7),
            "async": lambda: asyncio.run(answer()),
            "async at the top": lambda: asyncio.run(coroutine("hi", temperature=0.7)),
            "generator": lambda: list(generator("hi", temperature=0.7)),
            "async generator": lambda: asyncio.run(collect()),
            "method": lambda: Bot().method("hi", temperature=0.7)}


@pytest.mark.parametrize("kind", ["plain", "async", "async at the top", "generator", "async generator", "method"])
def test_a_decorated_functions_warning_points_at_the_callers_line(kind: str, cache: Cache) -> None:
    call = sampling(cache)[kind]
    with pytest.warns(NonDeterministicCallWarning, match="temperature=0.7") as record:
        call()
    assert record[0].filename == __file__


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer() as running:
        yield running


ASK = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Tell me a story"}]}


@pytest.mark.parametrize("temperature", [0.7, None], ids=["0.7", "omitted"])
def test_a_wrapped_calls_warning_points_at_the_users_line(server: LocalServer, tmp_path: Path,
                                                          temperature: float | None) -> None:
    extra = {} if temperature is None else {"temperature": temperature}
    with openai.OpenAI(base_url=server.url, api_key="k", max_retries=0) as raw:
        client = llm_memo.wrap(raw, cache=Cache(tmp_path / "memo"), on_unset_temperature="bypass")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            client.chat.completions.create(**ASK, **extra)
            with client.chat.completions.create(**ASK, **extra, stream=True) as stream:
                list(stream)
        client.close()
    assert [w.category for w in caught] == [NonDeterministicCallWarning]
    assert caught[0].filename == __file__
    message = str(caught[0].message)
    if temperature is None:
        assert "temperature not set (the provider samples at its default)" in message
        assert "temperature=None" not in message
    else:
        assert "temperature=0.7" in message


def test_a_wrapped_async_calls_warning_points_at_the_users_line(server: LocalServer, tmp_path: Path) -> None:
    async def main() -> list[warnings.WarningMessage]:
        raw = openai.AsyncOpenAI(base_url=server.url, api_key="k", max_retries=0)
        client = llm_memo.wrap(raw, cache=Cache(tmp_path / "memo"), on_unset_temperature="bypass")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            await client.chat.completions.create(**ASK)
        await client.close()
        await raw.close()
        return caught

    caught = asyncio.run(main())
    assert [w.category for w in caught] == [NonDeterministicCallWarning]
    assert caught[0].filename == __file__
    assert "temperature not set" in str(caught[0].message)

