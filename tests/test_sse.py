"""The pure wire-format pieces behind wrap(): SSE parsing, chunk assembly and synthesis, `cacheable`."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_memo._logic.wire import (
    SSEParser,
    assemble_chat,
    cacheable,
    chat_chunks,
    response_events,
    to_sse,
)
from llm_memo.testing.payloads import stream_pieces as server_pieces

pytestmark = pytest.mark.timeout(120)

FAST = settings(max_examples=60, deadline=None)

# ---- strategies ----------------------------------------------------------------------------

words = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
nonempty = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)
ids = st.text("abcdefXYZ0123456789", min_size=1, max_size=12)
finish_reasons = st.sampled_from(["stop", "length", "tool_calls", "content_filter"])
# How text is cut into stream pieces: the replay's default, the local server's words, characters.
splitters = st.sampled_from([None, server_pieces, list])


@st.composite
def tool_calls(draw: Any) -> list[dict[str, Any]]:
    return [{"id": "call_" + draw(ids), "type": "function",
             "function": {"name": draw(st.from_regex(r"[a-z_]{1,12}", fullmatch=True)),
                          "arguments": orjson.dumps(draw(st.dictionaries(ids, st.integers(-1000, 1000), max_size=3))).decode()}}
            for _ in range(draw(st.integers(1, 3)))]


@st.composite
def usages(draw: Any) -> dict[str, Any] | None:
    if draw(st.booleans()):
        return None
    prompt, completion = draw(st.integers(0, 10_000)), draw(st.integers(0, 10_000))
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion,
                             "prompt_tokens_details": {"cached_tokens": draw(st.integers(0, prompt))}}
    if draw(st.booleans()):  # OpenRouter extras
        usage["cost"] = draw(st.floats(0, 1, allow_nan=False))
        usage["is_byok"] = False
    return usage


@st.composite
def completions(draw: Any) -> dict[str, Any]:
    choices = []
    for index in range(draw(st.integers(1, 3))):
        calls = draw(st.none() | tool_calls())
        content = draw(nonempty) if calls is None else draw(st.none() | nonempty)
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if calls is not None:
            message["tool_calls"] = calls
        if draw(st.booleans()):
            message["reasoning"] = draw(nonempty)
        choice: dict[str, Any] = {"index": index, "message": message,
                                  "finish_reason": "tool_calls" if calls else draw(finish_reasons)}
        if draw(st.booleans()):
            choice["native_finish_reason"] = choice["finish_reason"]
        choices.append(choice)
    completion: dict[str, Any] = {"id": "chatcmpl-" + draw(ids), "object": "chat.completion",
                                  "created": draw(st.integers(0, 2**31)), "model": draw(ids), "choices": choices}
    if draw(st.booleans()):
        completion["provider"] = "SomeProvider"
    usage = draw(usages())
    if usage is not None:
        completion["usage"] = usage
    return completion


@st.composite
def responses(draw: Any) -> dict[str, Any]:
    output = []
    for n in range(draw(st.integers(1, 3))):
        if draw(st.booleans()) and n:
            output.append({"type": "reasoning", "id": f"rs_{n}", "summary": []})
            continue
        parts = [{"type": "output_text", "text": draw(words), "annotations": []}
                 for _ in range(draw(st.integers(1, 3)))]
        output.append({"type": "message", "id": f"msg_{n}", "status": "completed", "role": "assistant",
                       "content": parts})
    return {"id": "resp_" + draw(ids), "object": "response", "created_at": draw(st.integers(0, 2**31)),
            "status": draw(st.sampled_from(["completed", "incomplete"])), "model": draw(ids), "output": output,
            "usage": {"input_tokens": 3, "output_tokens": 5, "total_tokens": 8}}


def output_text(response: dict[str, Any]) -> str:
    """What the SDK's Response.output_text joins: every output_text part of every message."""
    return "".join(part["text"] for item in response["output"] if item["type"] == "message"
                   for part in item["content"] if part["type"] == "output_text")


# ---- chat: chunks <-> completion ---------------------------------------------------------------

@FAST
@given(completions(), splitters)
def test_assemble_chat_round_trips_chat_chunks(completion: dict[str, Any], split: Any) -> None:
    original = copy.deepcopy(completion)
    chunks = chat_chunks(completion) if split is None else chat_chunks(completion, split)
    assert completion == original  # synthesis does not touch the stored answer
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assembled = assemble_chat(orjson.loads(orjson.dumps(chunks)))
    assert assembled is not None
    assert assembled["object"] == "chat.completion"
    assert {k: assembled[k] for k in ("id", "created", "model")} == {k: completion[k] for k in ("id", "created", "model")}
    assert assembled.get("provider") == completion.get("provider")
    assert assembled.get("usage") == completion.get("usage")
    assert len(assembled["choices"]) == len(completion["choices"])
    for got, want in zip(assembled["choices"], completion["choices"], strict=True):
        assert got["index"] == want["index"]
        assert got["finish_reason"] == want["finish_reason"]
        assert got.get("native_finish_reason") == want.get("native_finish_reason")
        assert got["message"]["role"] == "assistant"
        assert (got["message"]["content"] or "") == (want["message"]["content"] or "")
        assert got["message"].get("tool_calls") == want["message"].get("tool_calls")
        assert got["message"].get("reasoning") == want["message"].get("reasoning")
    assert cacheable("chat", assembled)


@FAST
@given(completions())
def test_chat_chunks_carry_usage_last_and_finish_once_per_choice(completion: dict[str, Any]) -> None:
    chunks = chat_chunks(completion)
    if "usage" in completion:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == completion["usage"]
    finishes = [(p["index"], p["finish_reason"]) for c in chunks for p in c["choices"] if p.get("finish_reason")]
    assert sorted(finishes) == sorted((c["index"], c["finish_reason"]) for c in completion["choices"])
    for choice in completion["choices"]:  # on the choice's last chunk, as a truncated stream shows none
        parts = [p for c in chunks for p in c["choices"] if p["index"] == choice["index"]]
        assert [p["finish_reason"] for p in parts] == [None] * (len(parts) - 1) + [choice["finish_reason"]]


def test_assemble_chat_of_real_provider_chunks() -> None:
    """Chunks as OpenAI streams them: role first, content pieces, finish, then a usage chunk."""
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunks = [
        {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]},
            "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": '{"a":'}}]}, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": " 1}"}}]}, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}], "usage": None},
        {**head, "choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}},
    ]
    completion = assemble_chat(chunks)
    assert completion is not None
    message = completion["choices"][0]["message"]
    assert message["content"] == "Hello"
    assert message["tool_calls"] == [{"id": "call_1", "type": "function",
                                      "function": {"name": "f", "arguments": '{"a": 1}'}}]
    assert completion["choices"][0]["finish_reason"] == "tool_calls"
    assert completion["usage"]["total_tokens"] == 5
    assert assemble_chat([]) is None


def _chunk(delta: dict[str, Any], finish: str | None = None, **choice: Any) -> dict[str, Any]:
    return {"id": "gen-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, **choice}]}


def test_assemble_chat_joins_streamed_reasoning_and_refusal() -> None:
    """Every string field of a delta arrives in pieces, as content does; the SDK's own
    stream accumulator joins them. OpenRouter streams `reasoning` this way, OpenAI `refusal`."""
    reasoning = assemble_chat([
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "", "reasoning": "Let me "}),
        _chunk({"content": "", "reasoning": "think."}),
        _chunk({"content": "Hello"}),
        _chunk({}, "stop"),
    ])
    assert reasoning is not None
    assert reasoning["choices"][0]["message"]["content"] == "Hello"
    assert reasoning["choices"][0]["message"]["reasoning"] == "Let me think."
    refusal = assemble_chat([
        _chunk({"role": "assistant", "content": None, "refusal": ""}),
        _chunk({"refusal": "I'm sorry, "}),
        _chunk({"refusal": "I can't help with that."}),
        _chunk({}, "stop"),
    ])
    assert refusal is not None
    assert refusal["choices"][0]["message"]["refusal"] == "I'm sorry, I can't help with that."


def test_assemble_chat_joins_streamed_logprobs() -> None:
    """With logprobs=True each chunk carries the logprobs of its own tokens only."""
    def logprobs(token: str) -> dict[str, Any]:
        return {"content": [{"token": token, "logprob": -0.5, "bytes": list(token.encode()), "top_logprobs": []}],
                "refusal": None}

    completion = assemble_chat([
        _chunk({"role": "assistant", "content": ""}, logprobs=None),
        _chunk({"content": "Hel"}, logprobs=logprobs("Hel")),
        _chunk({"content": "lo"}, logprobs=logprobs("lo")),
        _chunk({}, "stop", logprobs=None),
    ])
    assert completion is not None
    choice = completion["choices"][0]
    assert choice["message"]["content"] == "Hello"
    assert [t["token"] for t in choice["logprobs"]["content"]] == ["Hel", "lo"]


# ---- SSEParser --------------------------------------------------------------------------------

def _parse(data: bytes, cuts: list[int]) -> SSEParser:
    parser = SSEParser()
    start = 0
    for cut in sorted(set(cuts)):
        parser.feed(data[start:cut])
        start = cut
    parser.feed(data[start:])
    parser.close()
    return parser


@st.composite
def sse_streams(draw: Any) -> tuple[bytes, list[Any], bool, bool]:
    """SSE bytes with comments, event: lines and CRLF, and the events/flags a parser must report."""
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    events: list[Any] = []
    out = b""
    failed = done = False
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["chunk", "comment", "typed", "error"]))
        if kind == "comment":
            out += b": OPENROUTER PROCESSING" + newline + newline
            continue
        if kind == "error":
            event: Any = {"error": {"code": 502, "message": draw(words)}}
            failed = True
        elif kind == "typed":
            event = {"type": "response.output_text.delta", "delta": draw(words)}
        else:
            event = {"id": "c", "choices": [{"index": 0, "delta": {"content": draw(words)}}]}
        events.append(event)
        if kind == "typed":
            out += b"event: " + event["type"].encode() + newline
        out += b"data: " + orjson.dumps(event) + newline + newline
    if draw(st.booleans()):
        out += b"data: [DONE]" + newline + newline
        done = True
    return out, events, done, failed


@FAST
@given(sse_streams(), st.data())
def test_sse_parser_is_indifferent_to_how_bytes_are_split(stream: tuple[bytes, list[Any], bool, bool],
                                                          data: st.DataObject) -> None:
    raw, events, done, failed = stream
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
    whole = _parse(raw, [])
    split = _parse(raw, cuts)
    bytewise = _parse(raw, list(range(len(raw))))
    for parser in (whole, split, bytewise):
        assert parser.events == events
        assert parser.done is done
        assert parser.failed is failed


@FAST
@given(completions())
def test_sse_parser_reads_back_to_sse(completion: dict[str, Any]) -> None:
    chunks = chat_chunks(completion)
    raw = to_sse(chunks, done=True)
    parser = _parse(raw, list(range(0, len(raw), 7)))
    assert parser.events == orjson.loads(orjson.dumps(chunks))
    assert parser.done and not parser.failed
    assert assemble_chat(parser.events) == assemble_chat(chunks)
    assert not SSEParser().done
    unfinished = _parse(to_sse(chunks, done=False), [])
    assert not unfinished.done and not unfinished.failed


def test_sse_parser_ignores_comments_and_event_lines() -> None:
    raw = (b": OPENROUTER PROCESSING\n\n"
           b"event: response.created\n"
           b"data: {\"type\": \"response.created\"}\n\n"
           b"event: ping\n\n"
           b": another comment\n"
           b"data: {\"n\": 1}\n\n"
           b"data:[DONE]\n\n")
    parser = _parse(raw, [3, 30, 31, 60])
    assert parser.events == [{"type": "response.created"}, {"n": 1}]
    assert parser.done and not parser.failed


@pytest.mark.parametrize("event", [
    b'data: {"error": {"message": "upstream failed", "code": 502}}\n\n',
    b'data: {"type": "error", "message": "boom"}\n\n',
    b'data: {"type": "response.failed", "response": {"status": "failed"}}\n\n',
    b"data: not json\n\n",
])
def test_sse_parser_flags_failures(event: bytes) -> None:
    parser = _parse(b'data: {"choices": []}\n\n' + event, [])
    assert parser.failed


def test_sse_parser_terminal_response_events_finish_the_stream() -> None:
    for kind in ("response.completed", "response.incomplete"):
        parser = _parse(b'data: {"type": "%s", "response": {}}\n\n' % kind.encode(), [])
        assert parser.done and not parser.failed


# ---- responses: response -> events ---------------------------------------------------------------

@FAST
@given(responses(), splitters)
def test_response_events_end_with_the_response_and_deltas_join_to_its_text(response: dict[str, Any],
                                                                          split: Any) -> None:
    original = copy.deepcopy(response)
    events = response_events(response) if split is None else response_events(response, split)
    assert response == original
    assert events[0]["type"] == "response.created"
    assert events[0]["response"]["status"] == "in_progress"
    terminal = "response.completed" if response["status"] == "completed" else "response.incomplete"
    assert events[-1]["type"] == terminal
    assert events[-1]["response"] == response
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == output_text(response)
    done = [e["text"] for e in events if e["type"] == "response.output_text.done"]
    assert done == [p["text"] for i in response["output"] if i["type"] == "message"
                    for p in i["content"] if p["type"] == "output_text"]
    parser = _parse(to_sse(events, done=False), [5, 50])
    assert parser.done and not parser.failed
    assert parser.events[-1]["response"] == response


# ---- cacheable ---------------------------------------------------------------------------------

GOOD_CHAT = {"id": "c", "object": "chat.completion", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}]}
GOOD_RESPONSE = {"id": "r", "object": "response", "status": "completed", "output": [
    {"type": "message", "content": [{"type": "output_text", "text": "Hi"}]}]}


def _choice(**changes: Any) -> dict[str, Any]:
    choice = copy.deepcopy(GOOD_CHAT["choices"][0])  # type: ignore[index]
    choice.update(changes)
    return {**GOOD_CHAT, "choices": [choice]}


def test_cacheable_accepts_clean_answers() -> None:
    assert cacheable("chat", GOOD_CHAT)
    assert cacheable("chat", _choice(message={"role": "assistant", "content": None,
                                               "tool_calls": [{"id": "x", "type": "function",
                                                               "function": {"name": "f", "arguments": "{}"}}]},
                                      finish_reason="tool_calls"))
    assert cacheable("chat", _choice(finish_reason="length"))
    assert cacheable("responses", GOOD_RESPONSE)
    assert cacheable("responses", {**GOOD_RESPONSE, "status": "incomplete"})
    assert cacheable("embeddings", {"object": "list", "data": [{"embedding": [0.1]}]})


@pytest.mark.parametrize(("kind", "body"), [
    ("chat", {"error": {"code": 502, "message": "upstream failed"}}),
    ("chat", {**GOOD_CHAT, "error": {"message": "late error"}}),
    ("chat", _choice(finish_reason="error")),
    ("chat", _choice(finish_reason=None)),
    ("chat", _choice(message={"role": "assistant", "content": ""})),
    ("chat", _choice(message={"role": "assistant", "content": None})),
    ("chat", {**GOOD_CHAT, "choices": []}),
    ("chat", {k: v for k, v in GOOD_CHAT.items() if k != "choices"}),
    ("chat", "not a dict"),
    ("responses", {**GOOD_RESPONSE, "status": "failed", "error": {"code": "server_error", "message": "x"}}),
    ("responses", {**GOOD_RESPONSE, "status": "failed"}),
    ("responses", {**GOOD_RESPONSE, "status": "in_progress"}),
    ("responses", {**GOOD_RESPONSE, "output": []}),
    ("responses", {"error": {"message": "x"}}),
    ("embeddings", {"object": "list", "data": []}),
    ("embeddings", {"error": {"message": "x"}}),
])
def test_cacheable_refuses_errors_and_empty_answers(kind: str, body: Any) -> None:
    assert not cacheable(kind, body)
