"""What the local server answers on Anthropic's ``/v1/messages``: a Message, or its SSE events.

The answer is generated as for chat (``payloads.plan_turn``: at temperature 0 a pure function
of the model and the prompt), then written in Anthropic's shapes: content blocks, stop
reasons, and usage whose ``input_tokens`` leaves out the prompt-cache reads and writes
(``cache_read_input_tokens``, ``cache_creation_input_tokens``). Streams are cut from the
Message by the wire shapes the anthropic adapter replays with (``_logic.anthropic_wire``).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from .._logic.anthropic_wire import message_events
from .payloads import BadRequest, Turn, plan_turn, stream_pieces, texts

__all__ = ["message_error", "message_items", "message_json", "message_sse", "plan_message"]

_JSON = dict[str, Any]
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_ERRORS = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
           404: "not_found_error", 429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}


def message_items(body: _JSON) -> list[_JSON]:
    """The prompt as a list of turns, the system prompt first (where a cache breakpoint may sit too)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise BadRequest("messages: must be a non-empty array of message objects.")
    system = body.get("system")
    if isinstance(system, str):
        system = [{"type": "text", "text": system}]
    return ([{"role": "system", "content": system}] if isinstance(system, list) else []) + messages


def plan_message(body: _JSON, model: str) -> Turn:
    """Generate the answer (text, JSON or a tool call) for a /v1/messages request."""
    if not isinstance(body.get("max_tokens"), int) or isinstance(body.get("max_tokens"), bool):
        raise BadRequest("max_tokens: Field required")
    items = message_items(body)
    preamble = " ".join(texts(items[0]["content"])) if items[0]["role"] == "system" else ""
    turns = items[1:] if items[0]["role"] == "system" else items
    fmt = ((body.get("output_config") or {}).get("format") or {}) if isinstance(body.get("output_config"), dict) else {}
    tools = [t for t in body.get("tools") or () if isinstance(t, dict) and t.get("name")]
    choice, tool = body.get("tool_choice") or {}, None
    if choice.get("type") == "any" and tools:
        tool = tools[0]
    elif choice.get("type") == "tool":
        tool = next((t for t in tools if t["name"] == choice.get("name")), {"name": choice.get("name")})
    if tool is not None:
        tool = {"name": tool["name"], "parameters": tool.get("input_schema")}
    return plan_turn(body, model, turns, preamble, fmt, tool, body["max_tokens"])


def message_json(turn: Turn, model: str) -> _JSON:
    """The Message of a generated answer."""
    if turn.tool_call:
        call = turn.tool_call
        content = [{"type": "tool_use", "id": "toolu_" + secrets.token_hex(12), "name": call["name"],
                    "input": json.loads(call["arguments"])}]
    else:
        content = [{"type": "text", "text": turn.text, "citations": None}]
    usage = {"input_tokens": turn.prompt_tokens - turn.cached_tokens - turn.written_tokens,
             "cache_creation_input_tokens": turn.written_tokens, "cache_read_input_tokens": turn.cached_tokens,
             "output_tokens": turn.completion_tokens, "service_tier": "standard"}
    return {"id": "msg_" + secrets.token_hex(12), "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": _STOP[turn.finish], "stop_sequence": None, "usage": usage}


def message_sse(message: _JSON) -> list[str]:
    """The named SSE events of a streamed Message, a ping after its start as the API sends."""
    events = message_events(message, stream_pieces)
    events.insert(1, {"type": "ping"})
    return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events]


def message_error(status: int, message: str) -> _JSON:
    """An error body in Anthropic's shape."""
    return {"type": "error", "error": {"type": _ERRORS.get(status, "api_error"), "message": message}}
