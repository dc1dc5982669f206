"""OpenAI wire formats, as pure functions: SSE parsing, stream <-> final object, and
which answers are fit to store. The openai adapter and the local server stream with the
same `chat_chunks` and `response_events`.

The cache keeps one form per answer, the final object (a chat completion or a
Responses `response`), whatever shape the call had. A streamed call is assembled into
that form when it completes; a streamed replay is synthesised from it, so a stored
answer serves both `stream=True` and `stream=False` callers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import orjson

__all__ = [
    "SSEParser",
    "assemble_chat",
    "cacheable",
    "chat_chunks",
    "final_response",
    "quarters",
    "response_events",
    "to_sse",
]

Split = Callable[[str], Iterable[str]]  # cuts a text into stream pieces that join back to it
_TERMINAL = ("response.completed", "response.incomplete", "message_stop")  # events that end a stream


class SSEParser:
    """Incremental parser of `data:` events; remembers whether the stream ended cleanly."""

    def __init__(self) -> None:
        self._buffer = b""
        self.events: list[Any] = []
        self.done = False  # saw [DONE] (chat), a terminal response event, or Anthropic's message_stop
        self.failed = False  # saw an error event, or data that is not JSON

    def feed(self, data: bytes) -> None:
        self._buffer += data
        *blocks, self._buffer = self._buffer.replace(b"\r\n", b"\n").split(b"\n\n")
        for block in blocks:
            self._block(block)

    def close(self) -> None:
        if self._buffer.strip():
            self._block(self._buffer)
        self._buffer = b""

    def _block(self, block: bytes) -> None:
        payload = b"\n".join(line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:"))
        if not payload:
            return  # comments (": OPENROUTER PROCESSING") and event-only lines
        if payload.strip() == b"[DONE]":
            self.done = True
            return
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.failed = True
            return
        if not isinstance(event, dict) or event.get("error") or event.get("type") in ("error", "response.failed"):
            self.failed = True
        elif event.get("type") in _TERMINAL:
            self.done = True
        self.events.append(event)


def to_sse(events: list[Any], *, done: bool) -> bytes:
    """SSE bytes for a list of JSON events, with a final [DONE] line when `done`."""
    lines = [b"data: " + orjson.dumps(e) + b"\n\n" for e in events]
    if done:
        lines.append(b"data: [DONE]\n\n")
    return b"".join(lines)


def quarters(text: str) -> list[str]:
    """`text` in four pieces: enough for a stream-shaped consumer, few for a fast replay."""
    step = max(1, -(-len(text) // 4))
    return [text[start:start + step] for start in range(0, len(text), step)]


# ---- chat completions ---------------------------------------------------------------

def assemble_chat(chunks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The chat completion a complete list of chunks stands for, or None if there is none."""
    if not chunks:
        return None
    head = {k: v for c in chunks for k, v in c.items() if k not in ("choices", "usage", "object")}
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    for chunk in chunks:
        usage = chunk.get("usage") or usage
        for part in chunk.get("choices") or ():
            _merge_choice(choices.setdefault(part.get("index", 0), _empty_choice(part.get("index", 0))), part)
    for choice in choices.values():
        message = choice["message"]
        message["content"] = "".join(message["content"]) if message["content"] else None
        if message["tool_calls"]:
            message["tool_calls"] = [message["tool_calls"][i] for i in sorted(message["tool_calls"])]
        else:
            del message["tool_calls"]
    completion = {**head, "object": "chat.completion", "choices": [choices[i] for i in sorted(choices)]}
    if usage is not None:
        completion["usage"] = usage
    return completion


def _empty_choice(index: int) -> dict[str, Any]:
    return {"index": index, "message": {"role": "assistant", "content": [], "tool_calls": {}},
            "finish_reason": None, "logprobs": None}


def _merge_choice(choice: dict[str, Any], part: dict[str, Any]) -> None:
    delta = part.get("delta") or {}
    message = choice["message"]
    for key, value in delta.items():
        if key == "content" and value:
            message["content"].append(value)
        elif key == "tool_calls":
            for call in value or ():
                _merge_tool_call(message["tool_calls"].setdefault(call.get("index", 0), {}), call)
        elif key not in ("content", "role") and value is not None:
            message[key] = _joined(message.get(key), value)
    for key, value in part.items():
        if key not in ("delta", "index") and value is not None:  # finish reasons are replaced, logprobs grow
            choice[key] = _joined(choice.get(key), value) if key == "logprobs" else value


def _joined(before: Any, piece: Any) -> Any:
    """A streamed field after one more piece: text is appended, lists (reasoning details,
    logprobs content) extended, and objects merged field by field; the rest is replaced."""
    if isinstance(before, str) and isinstance(piece, str):
        return before + piece
    if isinstance(before, list) and isinstance(piece, list):
        return before + piece
    if isinstance(before, dict) and isinstance(piece, dict):
        merged = dict(before)
        for key, value in piece.items():
            merged[key] = _joined(merged.get(key), value) if value is not None else merged.get(key)
        return merged
    return piece


def _merge_tool_call(target: dict[str, Any], call: dict[str, Any]) -> None:
    for key, value in call.items():
        if key == "index" or value is None:
            continue
        if key == "function":
            function = target.setdefault("function", {"name": "", "arguments": ""})
            function["name"] = function.get("name") or value.get("name") or ""
            function["arguments"] = function.get("arguments", "") + (value.get("arguments") or "")
        else:
            target.setdefault(key, value)


def chat_chunks(completion: dict[str, Any], split: Split = quarters) -> list[dict[str, Any]]:
    """Stream chunks carrying the same text, tool calls, finish reasons and usage.

    `split` cuts text and tool arguments into pieces (default: four). A choice's finish
    reason, logprobs and the like ride on its last chunk and are null on the others.
    """
    head = {k: v for k, v in completion.items() if k not in ("choices", "usage", "object")}
    head["object"] = "chat.completion.chunk"
    chunks = []
    for choice in completion.get("choices") or ():
        index = choice.get("index", 0)
        tail = {k: v for k, v in choice.items() if k not in ("index", "message")}
        pending = {**dict.fromkeys(tail), "finish_reason": None}
        deltas = _chat_deltas(choice.get("message") or {}, split)
        for n, delta in enumerate(deltas, 1):
            chunks.append({**head, "choices": [{"index": index, "delta": delta,
                                                **(tail if n == len(deltas) else pending)}]})
    if completion.get("usage") is not None:
        chunks.append({**head, "choices": [], "usage": completion["usage"]})
    return chunks


def _chat_deltas(message: dict[str, Any], split: Split) -> list[dict[str, Any]]:
    """The role (with any other field whole), the text, then per tool call its name and its arguments."""
    content = message.get("content")
    extra = {k: v for k, v in message.items() if k not in ("role", "content", "tool_calls") and v is not None}
    deltas = [{"role": "assistant", "content": None if content is None else "", **extra}]
    deltas += [{"content": piece} for piece in (split(content) if content else ())]
    for i, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function")
        if not isinstance(function, dict):  # not a function call: sent whole
            deltas.append({"tool_calls": [{**call, "index": i}]})
            continue
        deltas.append({"tool_calls": [{**call, "index": i, "function": {**function, "arguments": ""}}]})
        arguments = function.get("arguments") or ""
        deltas += [{"tool_calls": [{"index": i, "function": {"arguments": piece}}]}
                   for piece in (split(arguments) if arguments else ())]
    return deltas


# ---- responses ----------------------------------------------------------------------

def response_events(response: dict[str, Any], split: Split = quarters) -> list[dict[str, Any]]:
    """The typed Responses stream events that build up `response`, text cut by `split` (default: four)."""
    events: list[dict[str, Any]] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append({"type": kind, "sequence_number": len(events), **fields})

    pending = {**response, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
    emit("response.created", response=pending)
    emit("response.in_progress", response=pending)
    for index, item in enumerate(response.get("output") or ()):
        if item.get("type") != "message":
            emit("response.output_item.added", output_index=index, item=item)
            emit("response.output_item.done", output_index=index, item=item)
            continue
        emit("response.output_item.added", output_index=index,
             item={**item, "status": "in_progress", "content": []})
        for part_index, part in enumerate(item.get("content") or ()):
            where = {"item_id": item.get("id"), "output_index": index, "content_index": part_index}
            emit("response.content_part.added", **where, part={**part, "text": ""} if "text" in part else part)
            if part.get("type") == "output_text":
                text = part.get("text") or ""
                for piece in split(text) if text else ():
                    emit("response.output_text.delta", **where, delta=piece, logprobs=[])
                emit("response.output_text.done", **where, text=text, logprobs=[])
            emit("response.content_part.done", **where, part=part)
        emit("response.output_item.done", output_index=index, item=item)
    emit("response.completed" if response.get("status") != "incomplete" else "response.incomplete",
         response=response)
    return events


def final_response(events: list[dict[str, Any]]) -> Any:
    """The `response` of the last terminal event of a Responses stream, or None."""
    terminal = [e for e in events if e.get("type") in ("response.completed", "response.incomplete")]
    return terminal[-1].get("response") if terminal else None


# ---- what may be stored -------------------------------------------------------------

def cacheable(kind: str, body: Any) -> bool:
    """True for a clean, complete answer; False for errors hidden in a 200 and empty output."""
    if not isinstance(body, dict) or body.get("error"):
        return False
    if kind == "chat":
        choices = body.get("choices") or []
        return bool(choices) and all(_good_choice(c) for c in choices)
    if kind == "responses":
        return body.get("status") in ("completed", "incomplete") and bool(body.get("output"))
    return bool(body.get("data"))


def _good_choice(choice: Any) -> bool:
    if not isinstance(choice, dict) or choice.get("finish_reason") in (None, "error"):
        return False
    message = choice.get("message") or {}
    return bool(message.get("content") or message.get("tool_calls") or message.get("refusal"))
