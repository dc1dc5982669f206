"""What the local server answers: generated text, JSON and tool calls, as OpenAI/OpenRouter payloads.

At temperature 0 an answer is a pure function of the model and the prompt (sha256, so it is the
same in every process); above 0 it is random unless ``seed`` is given. This module builds the JSON
bodies; streams are cut from them by the wire shapes the openai adapter replays with
(``_logic.wire``), and ``server`` sends both. Standard library and pure logic only, like ``server``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import secrets
import string
import struct
import time
from dataclasses import dataclass
from typing import Any

from .._logic.wire import chat_chunks, response_events

__all__ = [
    "PROVIDER", "BadRequest", "Turn", "cache_prefix", "chat_head", "chat_json", "chat_stream", "embeddings",
    "error_body", "plan_chat", "plan_responses", "plan_turn", "require_model", "response_json", "response_stream",
    "stream_pieces", "texts",
]

PROVIDER = "LocalProvider"
# Dollars per token, roughly a small hosted model; cache reads 0.1x, writes 1.25x (Anthropic's rates).
_PRICE_IN, _PRICE_OUT = 0.5e-6, 1.5e-6
# status -> (OpenAI error type, OpenAI error code, default message)
_ERRORS = {
    400: ("invalid_request_error", "invalid_request", "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Missing or incorrect API key."),
    402: ("insufficient_quota", "insufficient_credits", "Insufficient credits for this request."),
    403: ("permission_error", "forbidden", "The request was flagged by moderation."),
    404: ("invalid_request_error", "not_found", "Not found."),
    408: ("timeout", "timeout", "The request timed out."),
    429: ("rate_limit_error", "rate_limit_exceeded", "Rate limit reached; retry later."),
    500: ("server_error", "server_error", "The server had an error processing the request."),
    502: ("server_error", "bad_gateway", "The upstream provider failed mid-generation."),
    503: ("server_error", "service_unavailable", "No provider is available for this request."),
}
_PIECE = re.compile(r"\s*\S+\s*")
_NOUNS = ("cache", "prompt", "model", "budget", "latency", "context window", "dataset", "benchmark",
          "pipeline", "schema", "token count", "retry policy", "embedding", "evaluation", "baseline")
_ADJS = ("simple", "robust", "careful", "cheap", "stable", "incremental", "measurable", "pragmatic",
         "conservative", "explicit", "reproducible", "focused")
_ADVS = ("quickly", "carefully", "gradually", "reliably", "early", "regularly", "explicitly", "cheaply")
_SENTENCES = (
    "In short, the {adj} {noun} matters most here.",
    "A {adj} approach is to start with the {noun} and measure the {noun2}.",
    "Most teams find that the {noun} behaves {adv} once the {noun2} is stable.",
    "It helps to compare the {noun} with the {noun2} before deciding.",
    "The {noun} is usually {adj}, although the {noun2} can change that.",
    "Keep the {noun} {adj} and revisit the {noun2} {adv}.",
    "Evidence suggests the {noun2} drives the {noun} more than expected.",
    "Treat the {noun} as {adj} until the {noun2} says otherwise.",
)

_JSON = dict[str, Any]


@dataclass
class Turn:
    """One generated answer and its token accounting, before it is rendered as JSON or SSE."""

    text: str | None
    tool_call: dict[str, str] | None
    finish: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    written_tokens: int = 0


class BadRequest(Exception):
    """The request body is well-formed JSON but not a valid request (becomes a 400)."""


class _Dice:
    """Pseudo-random numbers from sha256(seed, counter): identical in every process and Python."""

    def __init__(self, seed: bytes) -> None:
        self._seed, self._n = seed, 0

    def below(self, n: int) -> int:
        self._n += 1
        digest = hashlib.sha256(self._seed + self._n.to_bytes(8, "big")).digest()
        return int.from_bytes(digest[:8], "big") % n

    def pick(self, options: Any) -> Any:
        return options[self.below(len(options))]

    def unit(self) -> float:
        return self.below(1 << 53) / (1 << 53)


def _seed(*parts: object) -> bytes:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()


def _rand(n: int) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(n))


def _count(text: str) -> int:
    """Tokens, approximated as whitespace-separated words."""
    return len(text.split())


def stream_pieces(text: str) -> list[str]:
    """Stream pieces of about three words whose concatenation is exactly ``text``."""
    pieces = _PIECE.findall(text)
    return ["".join(pieces[i : i + 3]) for i in range(0, len(pieces), 3)] or [text]


def texts(content: Any) -> list[str]:
    """The text of a message's content: a string or a list of parts with ``text``."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


def require_model(body: _JSON) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a string.")
    return model


def _dice(body: _JSON, model: str, prompt: object) -> _Dice:
    """Seeded by the prompt at temperature 0 (or with ``seed``), fresh entropy otherwise."""
    temperature = body.get("temperature")
    temperature = 1.0 if temperature is None else temperature  # the providers' default
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise BadRequest("'temperature' must be a number.")
    if temperature == 0:
        return _Dice(_seed(model, prompt))
    if body.get("seed") is not None:
        return _Dice(_seed(model, prompt, body["seed"], temperature))
    return _Dice(os.urandom(16))


def _prose(question: str, dice: _Dice) -> str:
    question = " ".join(question.split())
    if len(question) > 60:
        question = question[:57] + "..."
    words = {"noun": _NOUNS, "noun2": _NOUNS, "adj": _ADJS, "adv": _ADVS}
    templates, sentences = list(_SENTENCES), []
    for _ in range(3 + dice.below(3)):  # distinct templates, so no sentence opens twice
        template = templates.pop(dice.below(len(templates)))
        sentences.append(template.format(**{k: dice.pick(v) for k, v in words.items()}))
    return (f"Answer to '{question}': " if question else "") + " ".join(sentences)


def _sample(schema: Any, dice: _Dice, root: _JSON, depth: int = 0) -> Any:
    """A value of the right JSON type for a JSON schema (enough for pydantic models and tools)."""
    if not isinstance(schema, dict) or depth > 8:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return _sample(target, dice, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return dice.pick(schema["enum"])
    for key in ("anyOf", "oneOf", "allOf"):
        options = [s for s in schema.get(key, ()) if isinstance(s, dict) and s.get("type") != "null"]
        if options:
            return _sample(options[0], dice, root, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    low, high = schema.get("minimum", 0), schema.get("maximum", schema.get("minimum", 0) + 99)
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: _sample(v, dice, root, depth + 1) for k, v in props.items()}
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1)))
        return [_sample(schema.get("items", {}), dice, root, depth + 1) for _ in range(count)]
    if kind == "integer":
        return int(low) + dice.below(int(high) - int(low) + 1)
    if kind == "number":
        return round(low + dice.unit() * (high - low), 2)
    if kind == "boolean":
        return dice.below(2) == 1
    if kind == "null":
        return None
    return f"{dice.pick(_ADJS)} {dice.pick(_NOUNS)}"


def plan_turn(body: _JSON, model: str, items: list[_JSON], preamble: str, fmt: _JSON,
          tool: _JSON | None, limit: Any) -> Turn:
    """Generate the answer (text, JSON or a tool call) for a conversation."""
    prompt_tokens = _count(preamble) + sum(_count(t) for i in items for t in texts(i.get("content")))
    users = [i for i in items if i.get("role") == "user"]
    question = " ".join(texts(users[-1].get("content"))) if users else ""
    dice = _dice(body, model, [preamble, items])
    if tool is not None:
        params = tool.get("parameters") or {"type": "object", "properties": {}}
        args = json.dumps(_sample(params, dice, params))
        call = {"id": "call_" + _rand(24), "name": str(tool.get("name") or "tool"), "arguments": args}
        return Turn(None, call, "tool_calls", prompt_tokens, _count(args))
    if fmt.get("type") == "json_schema":
        schema = fmt.get("schema") or {}
        text = json.dumps(_sample(schema, dice, schema))
    elif fmt.get("type") == "json_object":
        text = json.dumps({"answer": _prose(question, dice)})
    else:
        text = _prose(question, dice)
    pieces = _PIECE.findall(text)
    if isinstance(limit, int) and 0 < limit < len(pieces):
        return Turn("".join(pieces[:limit]).rstrip(), None, "length", prompt_tokens, limit)
    return Turn(text, None, "stop", prompt_tokens, len(pieces))


def plan_chat(body: _JSON, model: str) -> tuple[Turn, list[_JSON]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise BadRequest("'messages' must be a non-empty array of message objects.")
    fmt = dict(body.get("response_format") or {})
    if fmt.get("type") == "json_schema":
        fmt["schema"] = (fmt.get("json_schema") or {}).get("schema")
    tools = body.get("tools") or ()
    functions = [t["function"] for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    choice, tool = body.get("tool_choice"), None
    if choice == "required" and functions:
        tool = functions[0]
    elif isinstance(choice, dict) and (choice.get("function") or {}).get("name"):
        name = choice["function"]["name"]
        tool = next((f for f in functions if f.get("name") == name), {"name": name})
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    return plan_turn(body, model, messages, "", fmt, tool, limit), messages


def plan_responses(body: _JSON, model: str) -> tuple[Turn, list[_JSON]]:
    given = body.get("input")
    items = [{"role": "user", "content": given}] if isinstance(given, str) else given
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        raise BadRequest("'input' must be a string or a non-empty array of input items.")
    fmt = (body.get("text") or {}).get("format") or {}
    instructions = body.get("instructions")
    preamble = instructions if isinstance(instructions, str) else ""
    return plan_turn(body, model, items, preamble, fmt, None, body.get("max_output_tokens")), items


def cache_prefix(items: list[_JSON]) -> tuple[str, int] | None:
    """The prompt up to the last ``cache_control`` breakpoint, as a key and a token count."""
    found = None
    for i, item in enumerate(items):
        content = item.get("content")
        for j, part in enumerate(content if isinstance(content, list) else ()):
            if isinstance(part, dict) and (part.get("cache_control") or {}).get("type") == "ephemeral":
                found = (i, j)
    if found is None:
        return None
    i, j = found
    prefix = [*items[:i], {**items[i], "content": items[i]["content"][: j + 1]}]
    return json.dumps(prefix, sort_keys=True), sum(_count(t) for p in prefix for t in texts(p.get("content")))


def _cost(turn: Turn) -> float:
    fresh = turn.prompt_tokens - turn.cached_tokens - turn.written_tokens
    dollars = (fresh + 0.1 * turn.cached_tokens + 1.25 * turn.written_tokens) * _PRICE_IN
    return round(dollars + turn.completion_tokens * _PRICE_OUT, 10)


def error_body(status: int, message: str | None, openrouter: bool) -> _JSON:
    kind, code, default = _ERRORS.get(status, ("api_error", "error", "The request failed."))
    if openrouter:
        return {"error": {"code": status, "message": message or default, "metadata": {"provider_name": PROVIDER}}}
    return {"error": {"message": message or default, "type": kind, "param": None, "code": code}}


def chat_head(model: str, openrouter: bool) -> _JSON:
    """The identity fields of a chat completion: random ids, as real providers mint them."""
    now = int(time.time())
    fingerprint = "fp_" + hashlib.sha256(model.encode()).hexdigest()[:10]
    if openrouter:
        return {"id": f"gen-{now}-{_rand(20)}", "provider": PROVIDER, "model": model, "created": now,
                "system_fingerprint": fingerprint}
    return {"id": "chatcmpl-" + _rand(29), "model": model, "created": now, "service_tier": "default",
            "system_fingerprint": fingerprint}


def _chat_usage(turn: Turn, openrouter: bool) -> _JSON:
    usage: _JSON = {
        "prompt_tokens": turn.prompt_tokens,
        "completion_tokens": turn.completion_tokens,
        "total_tokens": turn.prompt_tokens + turn.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": turn.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }
    if openrouter:
        usage["prompt_tokens_details"]["cache_write_tokens"] = turn.written_tokens
        usage.update(cost=_cost(turn), is_byok=False, cost_details={"upstream_inference_cost": None})
    return usage


def chat_json(turn: Turn, head: _JSON, openrouter: bool) -> _JSON:
    message: _JSON = {"role": "assistant", "content": turn.text, "refusal": None}
    if turn.tool_call:
        call = turn.tool_call
        message["tool_calls"] = [{"id": call["id"], "type": "function",
                                  "function": {"name": call["name"], "arguments": call["arguments"]}}]
    choice: _JSON = {"index": 0, "message": message, "logprobs": None, "finish_reason": turn.finish}
    if openrouter:
        choice["native_finish_reason"] = turn.finish
    return {**head, "object": "chat.completion", "choices": [choice], "usage": _chat_usage(turn, openrouter)}


def chat_stream(completion: _JSON, openrouter: bool, include_usage: bool) -> list[_JSON]:
    """The chunks of a streamed ``completion``: usage last when asked for (on OpenRouter always),
    and, as OpenAI sends it, null on every chunk before."""
    chunks = chat_chunks(completion if include_usage else {**completion, "usage": None}, stream_pieces)
    if include_usage and not openrouter:
        chunks[:-1] = [{**chunk, "usage": None} for chunk in chunks[:-1]]
    return chunks


def response_json(turn: Turn, body: _JSON, model: str, openrouter: bool) -> _JSON:
    done = turn.finish == "stop"
    usage: _JSON = {
        "input_tokens": turn.prompt_tokens,
        "input_tokens_details": {"cached_tokens": turn.cached_tokens, "cache_write_tokens": turn.written_tokens},
        "output_tokens": turn.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": turn.prompt_tokens + turn.completion_tokens,
    }
    if openrouter:
        usage.update(cost=_cost(turn), is_byok=False)
    part: _JSON = {"type": "output_text", "text": turn.text, "annotations": [], "logprobs": []}
    item = {"id": "msg_" + secrets.token_hex(24), "type": "message", "status": "completed" if done else "incomplete",
            "role": "assistant", "content": [part]}
    return {
        "id": "resp_" + secrets.token_hex(24), "object": "response", "created_at": int(time.time()),
        "status": "completed" if done else "incomplete", "background": False, "error": None,
        "incomplete_details": None if done else {"reason": "max_output_tokens"},
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "model": model, "output": [item], "parallel_tool_calls": True, "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None}, "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": (body.get("text") or {}).get("format") or {"type": "text"}},
        "tool_choice": "auto", "tools": [], "top_p": 1.0, "truncation": "disabled", "usage": usage,
        "metadata": body.get("metadata") or {},
    }


def response_stream(full: _JSON) -> list[_JSON]:
    """The typed events of a streamed Response, ending with the full response."""
    return response_events(full, stream_pieces)


def _vector(model: str, text: str, dims: int) -> list[float]:
    dice = _Dice(_seed("embedding", model, text))
    raw = [dice.unit() * 2 - 1 for _ in range(dims)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    # Round through float32 so the float and base64 encodings decode to the same numbers.
    return list(struct.unpack(f"<{dims}f", struct.pack(f"<{dims}f", *(x / norm for x in raw))))


def embeddings(body: _JSON, model: str, openrouter: bool) -> _JSON:
    given = body.get("input")
    inputs = [given] if isinstance(given, str) else given
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("'input' must be a string or a non-empty array.")
    dims, encoding = body.get("dimensions", 64), body.get("encoding_format", "float")
    if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= 4096:
        raise BadRequest("'dimensions' must be an integer between 1 and 4096.")
    if encoding not in ("float", "base64"):
        raise BadRequest("'encoding_format' must be 'float' or 'base64'.")
    data, tokens = [], 0
    for index, item in enumerate(inputs):
        text = item if isinstance(item, str) else json.dumps(item)
        tokens += _count(text) if isinstance(item, str) else len(item) if isinstance(item, list) else 1
        vector: Any = _vector(model, text, dims)
        if encoding == "base64":
            vector = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    usage: _JSON = {"prompt_tokens": tokens, "total_tokens": tokens}
    out: _JSON = {"object": "list", "data": data, "model": model, "usage": usage}
    if openrouter:
        out["provider"] = PROVIDER
        usage.update(cost=round(tokens * _PRICE_IN * 0.04, 10), is_byok=False)
    return out
