"""A process-wide default policy: llm_memo.configure(policy=...) or LLM_MEMO_POLICY.

Functions that pass no policy= use it, read at call time (so configuring after decorating
works); an explicit policy= or ttl= still wins.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import FakeClock, run_python

import llm_memo
from llm_memo import Cache, CachePolicy, llm_cache


@pytest.fixture(autouse=True)
def _restore_policy() -> Iterator[None]:
    yield
    llm_memo.configure(policy="auto")


def expires_in(cache: Cache, clock: FakeClock, fn: llm_memo.CachedFunction, *args: object) -> float | None:
    """Seconds until the entry of fn(*args) expires (None: never)."""
    entry = cache.get_entry(fn.cache_key(*args))
    assert entry is not None
    return None if entry.expires_at is None else entry.expires_at - clock()


def test_configure_policy_applies_to_functions_decorated_before(cache: Cache, clock: FakeClock) -> None:
    @llm_cache(cache=cache)
    def ask(prompt: str) -> str:
        return prompt.upper()

    ask("Tell me a joke")  # the intent rules: SHORT, 5 minutes
    assert expires_in(cache, clock, ask, "Tell me a joke") == CachePolicy.SHORT.ttl
    llm_memo.configure(policy="forever")
    ask("Tell me another joke")
    assert expires_in(cache, clock, ask, "Tell me another joke") is None
    llm_memo.configure(policy=CachePolicy.LONG)
    ask("Tell me a third joke")
    assert expires_in(cache, clock, ask, "Tell me a third joke") == CachePolicy.LONG.ttl


def test_policy_none_means_the_process_default(cache: Cache, clock: FakeClock) -> None:
    llm_memo.configure(policy="medium")

    @llm_cache(cache=cache, policy=None)
    def ask(prompt: str) -> str:
        return prompt

    ask("hi")
    assert expires_in(cache, clock, ask, "hi") == CachePolicy.MEDIUM.ttl


def test_configure_policy_keeps_the_default_cache(cache: Cache) -> None:
    before = llm_memo.default_cache()
    assert llm_memo.configure(policy="forever") is before


def test_an_explicit_policy_or_ttl_wins(cache: Cache, clock: FakeClock) -> None:
    llm_memo.configure(policy="forever")

    @llm_cache(cache=cache, policy="short")
    def short(prompt: str) -> str:
        return prompt

    @llm_cache(cache=cache, ttl=60)
    def minute(prompt: str) -> str:
        return prompt

    @llm_cache(cache=cache, policy="auto")
    def auto(prompt: str) -> str:
        return prompt

    short("hi"), minute("hi"), auto("What is the weather today?")
    assert expires_in(cache, clock, short, "hi") == 300
    assert expires_in(cache, clock, minute, "hi") == 60
    assert cache.get_entry(auto.cache_key("What is the weather today?")) is None  # NEVER: not stored


@pytest.mark.parametrize("policy", ["for ever", "", 5, object()])
def test_configure_rejects_what_is_not_a_policy(policy: object) -> None:
    with pytest.raises((ValueError, TypeError), match="policy"):
        llm_memo.configure(policy=policy)


def test_configure_takes_a_callable(cache: Cache, clock: FakeClock) -> None:
    llm_memo.configure(policy=lambda text: "long" if "history" in text else "never")

    @llm_cache(cache=cache)
    def ask(prompt: str) -> str:
        return prompt

    ask("history of Rome"), ask("hello")
    assert expires_in(cache, clock, ask, "history of Rome") == CachePolicy.LONG.ttl
    assert len(list(cache.keys())) == 1


def test_the_environment_variable_sets_the_default() -> None:
    out = run_python("""
        import os, tempfile
        os.environ["LLM_MEMO_POLICY"] = "Forever"
        import llm_memo
        cache = llm_memo.Cache(tempfile.mkdtemp())

        @llm_memo.llm_cache(cache=cache)
        def ask(prompt):
            return prompt

        ask("What is the weather today?")  # NEVER under the intent rules
        [key] = cache.keys()
        print(cache.get_entry(key).expires_at)
        llm_memo.configure(policy="never")  # code beats the environment
        ask("another")
        print(len(list(cache.keys())))
    """)
    assert out.split() == ["None", "1"]


def test_a_bad_environment_variable_is_a_clear_error_at_decoration() -> None:
    out = run_python("""
        import os
        os.environ["LLM_MEMO_POLICY"] = "permanent"
        import llm_memo  # importing works: the CLI and everything else still run
        try:
            @llm_memo.llm_cache
            def ask(prompt):
                return prompt
        except ValueError as exc:
            print(exc)
    """)
    assert "LLM_MEMO_POLICY='permanent'" in out and "'forever'" in out


def test_wrap_uses_the_default_policy_for_chat() -> None:
    """A wrapped client's chat calls follow the process default too; embeddings stay FOREVER."""
    out = run_python("""
        import os, tempfile
        os.environ["LLM_MEMO_POLICY"] = "long"
        import openai, llm_memo
        from llm_memo import LocalServer

        with LocalServer() as server:
            cache = llm_memo.Cache(tempfile.mkdtemp())
            raw = openai.OpenAI(base_url=server.url, api_key="k", max_retries=0)
            client = llm_memo.wrap(raw, cache=cache)
            client.chat.completions.create(model="gpt-4o-mini", temperature=0,
                                           messages=[{"role": "user", "content": "Tell me a joke"}])
            client.embeddings.create(model="text-embedding-3-small", input="hi")
            entries = [cache.get_entry(key) for key in cache.keys()]
            for entry in sorted(entries, key=lambda e: e.expires_at or 1e300):
                print(None if entry.expires_at is None else round(entry.expires_at - entry.created_at))
            client.close()
            raw.close()
    """)
    assert out.split() == ["86400", "None"]
