"""The local OpenAI-compatible server, driven by the real (unpatched) openai SDK over HTTP."""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from llm_memo.testing.payloads import stream_pieces
from llm_memo.testing.server import LocalServer

pytestmark = pytest.mark.timeout(60)

KEY = "test-key"
MODEL = "gpt-4o-mini"


def ask(text: str, **extra: Any) -> dict[str, Any]:
    """Keyword arguments of a one-question chat request."""
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer() as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(server: LocalServer) -> None:
    server.reset()


@pytest.fixture(scope="module")
def client(server: LocalServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=10) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def router(server: LocalServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.openrouter_url, api_key=KEY, max_retries=0, timeout=10) as sdk:
        yield sdk


def raw_post(server: LocalServer, path: str, body: bytes, key: str | None = KEY) -> tuple[int, str]:
    """POST without the SDK, to see exactly what goes over the wire."""
    host, port = server.url.split("//")[1].split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        headers = {"content-type": "application/json"}
        if key is not None:
            headers["authorization"] = f"Bearer {key}"
        conn.request("POST", path, body, headers)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


# -- chat completions --------------------------------------------------------------------------


def test_chat_is_deterministic_at_temperature_zero(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(**ask("What is memoization?", temperature=0))
    second = client.chat.completions.create(**ask("What is memoization?", temperature=0))
    other = client.chat.completions.create(**ask("What is a cache?", temperature=0))
    text = first.choices[0].message.content
    assert text == second.choices[0].message.content
    assert text != other.choices[0].message.content
    assert text.startswith("Answer to 'What is memoization?': ")
    assert len(text.split()) > 15
    assert first.id.startswith("chatcmpl-") and first.id != second.id  # ids are minted per call
    assert first.object == "chat.completion"
    assert first.system_fingerprint == second.system_fingerprint
    assert first.choices[0].finish_reason == "stop"
    usage = first.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (3, len(text.split()))
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_chat_samples_at_temperature_one_unless_seeded(client: openai.OpenAI) -> None:
    def answer(**extra: Any) -> str:
        return client.chat.completions.create(**ask("Name a colour", **extra)).choices[0].message.content

    assert len({answer(temperature=1), answer(temperature=1), answer()}) == 3
    assert answer(temperature=0.7, seed=7) == answer(temperature=0.7, seed=7)
    assert answer(temperature=0.7, seed=7) != answer(temperature=0.7, seed=8)


def test_answers_survive_a_restart(client: openai.OpenAI) -> None:
    before = client.chat.completions.create(**ask("Same after restart?", temperature=0))
    with LocalServer() as fresh, openai.OpenAI(base_url=fresh.url, api_key=KEY, max_retries=0) as other:
        after = other.chat.completions.create(**ask("Same after restart?", temperature=0))
    assert after.choices[0].message.content == before.choices[0].message.content


def test_max_tokens_cuts_with_finish_reason_length(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(**ask("Tell me everything", temperature=0))
    cut = client.chat.completions.create(**ask("Tell me everything", temperature=0, max_tokens=5))
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage.completion_tokens == 5
    assert full.choices[0].message.content.startswith(cut.choices[0].message.content)


def test_stream_joins_to_the_non_streamed_answer(client: openai.OpenAI, server: LocalServer) -> None:
    whole = client.chat.completions.create(**ask("Stream me", temperature=0))
    with client.chat.completions.create(
        **ask("Stream me", temperature=0), stream=True, stream_options={"include_usage": True}
    ) as stream:
        chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) > 3
    assert "".join(c.choices[0].delta.content for c in content) == whole.choices[0].message.content
    assert content[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert len({c.id for c in chunks}) == 1
    assert server.requests[-1].json["stream"] is True


def test_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    with client.chat.completions.create(**ask("No usage"), stream=True) as stream:
        chunks = list(stream)
    assert all(c.choices and c.usage is None for c in chunks)


def test_stream_helper(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(**ask("Use the helper", temperature=0))
    with client.chat.completions.stream(**ask("Use the helper", temperature=0)) as stream:
        deltas = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert "".join(deltas) == final.choices[0].message.content == whole.choices[0].message.content


class Person(BaseModel):
    name: str
    age: int


def test_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    parsed = client.chat.completions.parse(**ask("Invent a person", temperature=0), response_format=Person)
    person = parsed.choices[0].message.parsed
    assert isinstance(person, Person) and person.name and isinstance(person.age, int)
    again = client.chat.completions.parse(**ask("Invent a person", temperature=0), response_format=Person)
    assert again.choices[0].message.parsed == person
    with client.chat.completions.stream(**ask("Invent a person"), response_format=Person) as stream:
        assert isinstance(stream.get_final_completion().choices[0].message.parsed, Person)


def test_json_object_mode_returns_json(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(**ask("JSON please"), response_format={"type": "json_object"})
    assert isinstance(json.loads(reply.choices[0].message.content)["answer"], str)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
            "required": ["city", "days"],
        },
    },
}


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_tool_call(client: openai.OpenAI, choice: Any) -> None:
    reply = client.chat.completions.create(**ask("Weather in Oslo?"), tools=[WEATHER], tool_choice=choice)
    assert reply.choices[0].finish_reason == "tool_calls"
    (call,) = reply.choices[0].message.tool_calls
    assert call.id.startswith("call_") and call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments["city"], str) and 1 <= arguments["days"] <= 7


def test_streamed_tool_call_through_the_helper(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(**ask("Weather?"), tools=[WEATHER], tool_choice="required") as stream:
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    assert set(json.loads(final.choices[0].message.tool_calls[0].function.arguments)) == {"city", "days"}


def test_with_raw_response(client: openai.OpenAI, server: LocalServer) -> None:
    raw = client.chat.completions.with_raw_response.create(**ask("Raw", temperature=0))
    assert raw.status_code == 200
    assert raw.headers["content-type"] == "application/json"
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.parse().choices[0].message.content.startswith("Answer to 'Raw'")
    seen = server.requests[-1]
    assert (seen.method, seen.path) == ("POST", "/v1/chat/completions")
    assert seen.headers["x-stainless-raw-response"] == "true"
    assert seen.headers["authorization"] == "<redacted>"
    assert seen.json["messages"] == [{"role": "user", "content": "Raw"}]
    assert KEY not in repr(server.requests)


# -- responses and embeddings ------------------------------------------------------------------


def test_responses_create_and_stream(client: openai.OpenAI) -> None:
    made = client.responses.create(model=MODEL, input="Explain caching", temperature=0)
    assert made.id.startswith("resp_") and made.object == "response" and made.status == "completed"
    assert made.output_text.startswith("Answer to 'Explain caching': ")
    usage = made.usage
    assert usage.input_tokens == 2 and usage.output_tokens == len(made.output_text.split())
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0
    with client.responses.create(model=MODEL, input="Explain caching", temperature=0, stream=True) as stream:
        events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed",
    ]
    assert kinds.count("response.output_text.delta") > 3
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == made.output_text
    assert events[-1].response.output_text == made.output_text
    with client.responses.stream(model=MODEL, input="Explain caching", temperature=0) as helper:
        assert helper.get_final_response().output_text == made.output_text


def test_responses_instructions_messages_and_limits(client: openai.OpenAI) -> None:
    items = [{"role": "user", "content": [{"type": "input_text", "text": "Two word question"}]}]
    made = client.responses.create(model=MODEL, input=items, instructions="Be brief", max_output_tokens=4)
    assert made.status == "incomplete" and made.incomplete_details.reason == "max_output_tokens"
    assert made.usage.input_tokens == 5 and made.usage.output_tokens == 4
    assert made.output_text == "Answer to 'Two word"


def test_responses_parse(client: openai.OpenAI) -> None:
    parsed = client.responses.parse(model=MODEL, input="Invent a person", text_format=Person)
    assert isinstance(parsed.output_parsed, Person)


def test_embeddings_base64_and_float_agree(client: openai.OpenAI, server: LocalServer) -> None:
    texts = ["the cat sat", "on the mat"]
    default = client.embeddings.create(model="text-embedding-3-small", input=texts)
    assert server.requests[-1].json["encoding_format"] == "base64"  # what the SDK sends by default
    floats = client.embeddings.create(model="text-embedding-3-small", input=texts, encoding_format="float")
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    first, second = (d.embedding for d in floats.data)
    assert len(first) == 64 and first != second
    assert math.isclose(math.fsum(x * x for x in first), 1.0, rel_tol=1e-5)
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == 6
    single = client.embeddings.create(model="text-embedding-3-small", input="on the mat", dimensions=8)
    assert len(single.data[0].embedding) == 8
    again = client.embeddings.create(model="text-embedding-3-small", input="the cat sat")
    assert again.data[0].embedding == first


def test_models_list(client: openai.OpenAI) -> None:
    assert MODEL in [m.id for m in client.models.list()]


# -- errors and faults -------------------------------------------------------------------------


def test_bad_key_is_an_authentication_error(server: LocalServer) -> None:
    with (
        openai.OpenAI(base_url=server.url, api_key="bad-key", max_retries=0) as sdk,
        pytest.raises(openai.AuthenticationError) as raised,
    ):
        sdk.chat.completions.create(**ask("hi"))
    assert raised.value.status_code == 401
    assert "bad-key" not in str(raised.value) and "bad-key" not in raised.value.response.text
    assert raw_post(server, "/v1/chat/completions", json.dumps(ask("hi")).encode(), key=None)[0] == 401


def test_rate_limit_with_retry_after_is_retried_transparently(server: LocalServer) -> None:
    server.fail_next(429, retry_after=0.01)
    with openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=2) as sdk:
        reply = sdk.chat.completions.create(**ask("Retry me"))
    assert reply.choices[0].message.content
    assert [r.headers["x-stainless-retry-count"] for r in server.requests] == ["0", "1"]


def test_faults_count_down_and_then_stop(server: LocalServer) -> None:
    server.fail_next(503, count=3, retry_after=0.01)
    with openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=2) as sdk:
        with pytest.raises(openai.InternalServerError):
            sdk.chat.completions.create(**ask("Down"))
        assert len(server.requests) == 3
        assert sdk.chat.completions.create(**ask("Up again")).choices[0].finish_reason == "stop"


def test_payment_required_is_a_plain_status_error(router: openai.OpenAI, server: LocalServer) -> None:
    server.fail_next(402, message="Out of credits")
    with pytest.raises(openai.APIStatusError) as raised:
        router.chat.completions.create(**ask("hi"))
    assert type(raised.value) is openai.APIStatusError and raised.value.status_code == 402
    assert raised.value.body == {"code": 402, "message": "Out of credits", "metadata": {"provider_name": "LocalProvider"}}


def test_openai_shaped_error_body(client: openai.OpenAI, server: LocalServer) -> None:
    server.fail_next(429)
    with pytest.raises(openai.RateLimitError) as raised:
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert raised.value.body["type"] == "rate_limit_error" and raised.value.code == "rate_limit_exceeded"


def test_error_in_a_200_body(router: openai.OpenAI, server: LocalServer) -> None:
    server.error_in_body_next()
    raw = router.chat.completions.with_raw_response.create(**ask("hi"))
    assert raw.status_code == 200
    assert raw.http_response.json() == {
        "error": {"code": 502, "message": "The upstream provider failed mid-generation.",
                  "metadata": {"provider_name": "LocalProvider"}},
    }
    assert router.chat.completions.create(**ask("hi")).choices  # one request only


def test_error_mid_stream_raises_while_iterating(router: openai.OpenAI, server: LocalServer) -> None:
    server.error_mid_stream_next()
    received = []
    with (
        pytest.raises(openai.APIError) as raised,
        router.chat.completions.create(**ask("Stream then fail"), stream=True) as stream,
    ):
        received.extend(stream)
    assert received and all(c.choices[0].finish_reason is None for c in received)
    assert raised.value.body["code"] == 502


def test_error_mid_stream_of_a_response(client: openai.OpenAI, server: LocalServer) -> None:
    server.error_mid_stream_next()
    with pytest.raises(openai.APIError), client.responses.create(model=MODEL, input="fail", stream=True) as s:
        for _ in s:
            pass


def test_truncated_stream_ends_without_finish_or_error(client: openai.OpenAI, server: LocalServer) -> None:
    server.truncate_stream_next()
    with client.chat.completions.create(**ask("Cut me off"), stream=True) as stream:
        chunks = list(stream)
    assert chunks and all(c.choices[0].finish_reason is None for c in chunks)
    with client.chat.completions.create(**ask("Cut me off"), stream=True) as stream:
        assert list(stream)[-1].choices[0].finish_reason == "stop"  # the fault was used up


def test_stream_faults_skip_plain_requests(client: openai.OpenAI, server: LocalServer) -> None:
    server.truncate_stream_next()
    assert client.chat.completions.create(**ask("plain")).choices[0].finish_reason == "stop"
    with client.chat.completions.create(**ask("streamed"), stream=True) as stream:
        assert all(c.choices[0].finish_reason is None for c in stream)


def test_reset_forgets_requests_and_faults(client: openai.OpenAI, server: LocalServer) -> None:
    server.fail_next(500)
    with pytest.raises(openai.InternalServerError):
        client.models.list()  # fail_next applies to every endpoint...
    server.fail_next(500)
    server.reset()  # ...unless reset first
    assert server.requests == []
    assert client.models.list().data


@pytest.mark.parametrize(("call", "message"), [
    (lambda s: s.fail_next(200), "status must be an HTTP error status"),
    (lambda s: s.fail_next(500, count=0), "count must be a positive integer"),
    (lambda s: s.truncate_stream_next(count=-1), "count must be a positive integer"),
])
def test_fault_arguments_are_checked(server: LocalServer, call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(server)


def test_bad_json_unknown_paths_and_bad_parameters(server: LocalServer, client: openai.OpenAI) -> None:
    status, text = raw_post(server, "/v1/chat/completions", b"{not json")
    assert status == 400 and json.loads(text)["error"]["type"] == "invalid_request_error"
    status, text = raw_post(server, "/v2/chat/completions", b"{}")
    assert status == 404 and "error" in json.loads(text)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model=MODEL, prompt="legacy endpoint")
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model=MODEL, messages=[])
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        client.embeddings.create(model=MODEL, input="x", dimensions=0)
    status, text = raw_post(server, "/v1/chat/completions", json.dumps(ask("x", response_format="odd")).encode())
    assert status == 400 and "Malformed request" in text


def test_a_client_that_hangs_up_leaves_no_traceback(server: LocalServer, capfd: pytest.CaptureFixture[str]) -> None:
    host, port = server.url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST
    time.sleep(0.3)  # let the handler thread meet the reset
    assert capfd.readouterr().err == ""


# -- OpenRouter layout -------------------------------------------------------------------------


def test_openrouter_extras(router: openai.OpenAI) -> None:
    reply = router.chat.completions.create(**ask("Route me", temperature=0))
    assert reply.id.startswith("gen-")
    assert reply.provider == "LocalProvider"
    assert reply.choices[0].native_finish_reason == "stop"
    assert reply.usage.cost > 0 and reply.usage.is_byok is False
    assert reply.usage.prompt_tokens_details.cached_tokens == 0
    with router.chat.completions.create(**ask("Route me", temperature=0), stream=True) as stream:
        chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage.cost == reply.usage.cost  # usage always sent
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == reply.choices[0].message.content


def test_openrouter_stream_starts_with_a_processing_comment(server: LocalServer) -> None:
    status, text = raw_post(server, "/api/v1/chat/completions", json.dumps(ask("hi", stream=True)).encode())
    assert status == 200
    assert text.startswith(": OPENROUTER PROCESSING\n\n")
    assert text.endswith("data: [DONE]\n\n")
    plain = raw_post(server, "/v1/chat/completions", json.dumps(ask("hi", stream=True)).encode())[1]
    assert plain.startswith("data: {")


def test_openrouter_prompt_cache_writes_then_reads(router: openai.OpenAI) -> None:
    document = {"type": "text", "text": "a long shared document " * 20, "cache_control": {"type": "ephemeral"}}

    def usage(question: str) -> Any:
        messages = [{"role": "system", "content": [document]}, {"role": "user", "content": question}]
        return router.chat.completions.create(model=MODEL, messages=messages).usage

    first, second = usage("First question?"), usage("Second question?")
    assert (first.prompt_tokens_details.cache_write_tokens, first.prompt_tokens_details.cached_tokens) == (80, 0)
    assert (second.prompt_tokens_details.cache_write_tokens, second.prompt_tokens_details.cached_tokens) == (0, 80)
    assert second.cost < first.cost
    plain = router.chat.completions.create(**ask("No breakpoint")).usage.prompt_tokens_details
    assert (plain.cached_tokens, plain.cache_write_tokens) == (0, 0)


def test_openrouter_responses_and_embeddings_carry_cost(router: openai.OpenAI) -> None:
    made = router.responses.create(model=MODEL, input="Routed response")
    assert made.usage.cost > 0
    vectors = router.embeddings.create(model="text-embedding-3-small", input="routed")
    assert vectors.provider == "LocalProvider" and vectors.usage.cost > 0


# -- concurrency, lifecycle, CLI ---------------------------------------------------------------


def test_async_client_under_gather(client: openai.OpenAI, server: LocalServer) -> None:
    questions = [f"Question {i}" for i in range(6)]

    async def run() -> tuple[list[str], str]:
        async with openai.AsyncOpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=10) as sdk:
            replies = await asyncio.gather(
                *(sdk.chat.completions.create(**ask(q, temperature=0)) for q in questions)
            )
            stream = await sdk.chat.completions.create(**ask(questions[0], temperature=0), stream=True)
            async with stream:
                streamed = "".join([c.choices[0].delta.content or "" async for c in stream])
        return [r.choices[0].message.content for r in replies], streamed

    answers, streamed = asyncio.run(run())
    expected = [client.chat.completions.create(**ask(q, temperature=0)).choices[0].message.content for q in questions]
    assert answers == expected and streamed == expected[0]
    assert sum(r.headers["x-stainless-async"] != "false" for r in server.requests) == 7


def test_latency_delays_answers() -> None:
    with LocalServer(latency=0.2) as slow, openai.OpenAI(base_url=slow.url, api_key=KEY) as sdk:
        started = time.perf_counter()
        sdk.chat.completions.create(**ask("slow"))
        assert time.perf_counter() - started >= 0.2


def test_stop_closes_kept_alive_connections() -> None:
    short_lived = LocalServer().start()
    try:
        with openai.OpenAI(base_url=short_lived.url, api_key=KEY, max_retries=0, timeout=5) as sdk:
            assert sdk.chat.completions.create(**ask("before")).choices
            short_lived.stop()
            with pytest.raises(openai.APIConnectionError):
                sdk.chat.completions.create(**ask("after"))
    finally:
        short_lived.stop()  # stopping twice is harmless
    with pytest.raises(RuntimeError, match="create a new one"):
        short_lived.start()


@pytest.mark.slow
def test_main_serves_the_same_answers_from_another_process(client: openai.OpenAI) -> None:
    code = "import sys; from llm_memo.testing.server import main; sys.exit(main(['--port', '0']))"
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as process:
        try:
            banner = process.stdout.readline()
            url = banner.split()[-1]
            assert banner.startswith("OpenAI-style base_url: http://127.0.0.1:") and url.endswith("/v1")
            with openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=10) as remote:
                theirs = remote.chat.completions.create(**ask("Cross-process?", temperature=0))
        finally:
            process.send_signal(signal.SIGINT)
            output = process.communicate(timeout=10)[0]
    ours = client.chat.completions.create(**ask("Cross-process?", temperature=0))
    assert theirs.choices[0].message.content == ours.choices[0].message.content
    assert process.returncode == 0 and "Traceback" not in output


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_stream_pieces_join_to_the_text(text: str) -> None:
    assert "".join(stream_pieces(text)) == text
