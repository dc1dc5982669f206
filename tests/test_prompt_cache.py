"""Anthropic prompt caching through OpenRouter: marking static blocks, reading the usage back."""

from __future__ import annotations

from typing import Any

import openai
import pytest

import llm_memo

BIG = "Reference manual. " * 400  # 7 200 characters: well above the 4 096-character threshold


def _conversation() -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": BIG},
        {"role": "user", "content": [{"type": "text", "text": "Context:"}, {"type": "text", "text": BIG}]},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": BIG + " What does section 2 say?"},
    ]


def test_static_blocks_are_marked_and_the_last_user_turn_is_not() -> None:
    original = _conversation()
    marked = llm_memo.mark_cache_control(original)
    assert marked[0]["content"] == [{"type": "text", "text": BIG, "cache_control": {"type": "ephemeral"}}]
    assert marked[1]["content"][0] == {"type": "text", "text": "Context:"}  # too short to cache
    assert marked[1]["content"][1]["cache_control"] == {"type": "ephemeral"}
    assert marked[2]["content"] == "Noted."
    assert marked[3] == original[3]  # the dynamic turn stays as it was
    assert original == _conversation()  # the input is not modified


def test_at_most_the_requested_breakpoints() -> None:
    messages = [{"role": "system", "content": BIG} for _ in range(6)] + [{"role": "user", "content": "q"}]
    for limit in (1, 4):
        marked = llm_memo.mark_cache_control(messages, breakpoints=limit)
        count = sum(isinstance(m["content"], list) and "cache_control" in m["content"][0] for m in marked)
        assert count == limit


@pytest.mark.parametrize(("argument", "value"), [("breakpoints", 5), ("breakpoints", 0), ("ttl", "2h")])
def test_bad_options_are_refused_by_name(argument: str, value: Any) -> None:
    with pytest.raises(ValueError, match=argument):
        llm_memo.mark_cache_control(_conversation(), **{argument: value})


def test_markers_already_present_count_against_the_limit() -> None:
    marked_part = {"type": "text", "text": BIG, "cache_control": {"type": "ephemeral"}}
    conversation = [{"role": "system", "content": [dict(marked_part), dict(marked_part)]},
                    *[{"role": "user" if i % 2 else "assistant", "content": BIG} for i in range(6)],
                    {"role": "user", "content": "and now?"}]
    marked = llm_memo.mark_cache_control(conversation)
    total = sum(1 for m in marked if isinstance(m["content"], list)
                for part in m["content"] if "cache_control" in part)
    assert total == 4  # two were there, two were added: never past Anthropic's four


def test_one_hour_ttl() -> None:
    marked = llm_memo.mark_cache_control(_conversation(), ttl="1h")
    assert marked[0]["content"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}


def test_provider_cache_reads_and_writes_are_reported(tmp_path: Any) -> None:
    with llm_memo.LocalServer() as server, llm_memo.Cache(tmp_path) as cache:
        raw = openai.OpenAI(api_key="test-key", base_url=server.openrouter_url)
        client = llm_memo.wrap(raw, cache=cache)
        messages = llm_memo.mark_cache_control(_conversation())
        first = client.chat.completions.create(model="anthropic/claude-sonnet-4", messages=messages, temperature=0)
        messages[-1] = {"role": "user", "content": "And section 3?"}
        second = client.chat.completions.create(model="anthropic/claude-sonnet-4", messages=messages, temperature=0)
        raw.close()
    assert llm_memo.provider_cache_usage(first)["cache_write_tokens"] > 0
    assert llm_memo.provider_cache_usage(second)["cached_tokens"] > 0
    assert llm_memo.provider_cache_usage({"usage": None}) == {"cached_tokens": 0, "cache_write_tokens": 0}
