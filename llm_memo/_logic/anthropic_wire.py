"""Anthropic's /v1/messages wire format, as pure functions: a stream <-> its final Message.

As for OpenAI (wire.py), the cache keeps one form per answer, the final Message. A streamed
call is assembled into it when the stream ends with `message_stop`; a streamed replay is the
event sequence that builds it up again: message_start, per content block its start, deltas
and stop, message_delta, message_stop. The anthropic adapter and the local server use the
same `message_events`.
"""

from __future__ import annotations

from typing import Any

import orjson

from .wire import Split, quarters

__all__ = ["assemble_message", "message_cacheable", "message_events", "named_sse"]

# Fields of a Message that arrive in message_delta, at the end of a stream.
_DELTA_FIELDS = ("stop_reason", "stop_sequence", "stop_details", "container")
_TOOL_INPUT = ("tool_use", "server_tool_use")  # blocks whose input streams as input_json_delta


def named_sse(events: list[dict[str, Any]]) -> bytes:
    """SSE bytes with an `event:` line per event (the anthropic SDK dispatches on it)."""
    return b"".join(b"event: " + str(e.get("type")).encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n"
                    for e in events)


def message_cacheable(body: Any) -> bool:
    """True for a complete Message with content; False for errors and empty or unfinished answers."""
    return (isinstance(body, dict) and body.get("type") == "message" and body.get("stop_reason") is not None
            and bool(body.get("content")))


# ---- a stored Message replayed as a stream ------------------------------------------------

def message_events(message: dict[str, Any], split: Split = quarters) -> list[dict[str, Any]]:
    """The stream events that build up `message`, text, thinking and tool input cut by `split`."""
    usage = dict(message.get("usage") or {})
    start = {**message, "content": [], **dict.fromkeys(k for k in _DELTA_FIELDS if k in message and k != "container"),
             "usage": {**usage, "output_tokens": 0}}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(message.get("content") or ()):
        events += _block_events(index, block, split)
    delta = {k: message[k] for k in _DELTA_FIELDS if k in message}
    events.append({"type": "message_delta", "delta": delta, "usage": usage})
    events.append({"type": "message_stop"})
    return events


def _block_events(index: int, block: dict[str, Any], split: Split) -> list[dict[str, Any]]:
    kind = block.get("type")
    deltas: list[dict[str, Any]] = []
    if kind == "text":
        opening = {**block, "text": "", **({"citations": None} if "citations" in block else {})}
        deltas += [{"type": "citations_delta", "citation": c} for c in block.get("citations") or ()]
        deltas += [{"type": "text_delta", "text": piece} for piece in _pieces(block.get("text"), split)]
    elif kind == "thinking":
        opening = {**block, "thinking": "", "signature": ""}
        deltas += [{"type": "thinking_delta", "thinking": piece} for piece in _pieces(block.get("thinking"), split)]
        deltas.append({"type": "signature_delta", "signature": block.get("signature") or ""})
    elif kind in _TOOL_INPUT:
        opening = {**block, "input": {}}
        arguments = orjson.dumps(block.get("input") or {}).decode()
        deltas += [{"type": "input_json_delta", "partial_json": piece} for piece in _pieces(arguments, split)]
    else:  # redacted thinking, server tool results and the like: sent whole, as the API does
        opening = block
    return [{"type": "content_block_start", "index": index, "content_block": opening},
            *({"type": "content_block_delta", "index": index, "delta": d} for d in deltas),
            {"type": "content_block_stop", "index": index}]


def _pieces(text: Any, split: Split) -> list[str]:
    return list(split(text)) if isinstance(text, str) and text else []


# ---- a complete stream assembled into its Message -------------------------------------------

def assemble_message(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The Message a complete event list stands for; None if it has none or holds a delta this
    module does not know (storing a Message that misses part of the answer would be worse)."""
    message: dict[str, Any] | None = None
    blocks: dict[int, dict[str, Any]] = {}
    inputs: dict[int, str] = {}
    for event in events:
        kind = event.get("type")
        if kind == "message_start":
            message = dict(event.get("message") or {})
            message["usage"] = dict(message.get("usage") or {})
        elif message is None:
            continue
        elif kind == "content_block_start":
            blocks[event.get("index", len(blocks))] = dict(event.get("content_block") or {})
        elif kind == "content_block_delta":
            if not _apply(blocks.get(event.get("index", -1)), event.get("delta") or {}, inputs, event.get("index")):
                return None
        elif kind == "message_delta":
            message.update(event.get("delta") or {})
            message["usage"].update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
    if message is None or sorted(blocks) != list(range(len(blocks))):
        return None
    for index, text in inputs.items():
        try:
            blocks[index]["input"] = orjson.loads(text) if text else blocks[index].get("input", {})
        except orjson.JSONDecodeError:
            return None
    message["content"] = [blocks[i] for i in range(len(blocks))]
    return message


def _apply(block: dict[str, Any] | None, delta: dict[str, Any], inputs: dict[int, str], index: Any) -> bool:
    """Add one delta to its block; False for a delta of an unknown kind or a missing block."""
    kind = delta.get("type")
    if block is None:
        return False
    if kind == "text_delta":
        block["text"] = (block.get("text") or "") + (delta.get("text") or "")
    elif kind == "thinking_delta":
        block["thinking"] = (block.get("thinking") or "") + (delta.get("thinking") or "")
    elif kind == "signature_delta":
        block["signature"] = delta.get("signature")
    elif kind == "citations_delta":
        block["citations"] = [*(block.get("citations") or ()), delta.get("citation")]
    elif kind == "input_json_delta":
        inputs[index] = inputs.get(index, "") + (delta.get("partial_json") or "")
    else:
        return False
    return True
