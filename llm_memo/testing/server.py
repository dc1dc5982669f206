"""Local OpenAI-compatible HTTP server: a stand-in provider for tests, the demo and notebooks.

It answers ``/chat/completions``, ``/responses``, ``/embeddings`` and ``/models`` under ``/v1``
(OpenAI layout) and ``/api/v1`` (OpenRouter layout, with OpenRouter's extra fields), and
Anthropic's ``/v1/messages``, as JSON or SSE. This module handles HTTP, request recording and
fault injection; ``payloads`` and ``messages`` write the answers (at temperature 0, a pure function of the model and the prompt). Standard library
and llm_memo's pure logic only, so it keeps working when the cache itself is broken.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from .messages import message_error, message_items, message_json, message_sse, plan_message
from .payloads import (
    PROVIDER,
    BadRequest,
    Turn,
    cache_prefix,
    chat_head,
    chat_json,
    chat_stream,
    embeddings,
    error_body,
    plan_chat,
    plan_responses,
    require_model,
    response_json,
    response_stream,
)

__all__ = ["BAD_KEY", "PROVIDER", "LocalServer", "RecordedRequest", "main"]

BAD_KEY = "bad-key"
_MODELS = ("gpt-4o-mini", "gpt-4.1", "text-embedding-3-small")
_ROUTES = {
    ("POST", "/chat/completions"): "chat",
    ("POST", "/responses"): "responses",
    ("POST", "/embeddings"): "embeddings",
    ("POST", "/messages"): "messages",
    ("GET", "/models"): "models",
}

_JSON = dict[str, Any]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received: lower-cased header names, Authorization value redacted."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    body: bytes = field(repr=False)


@dataclass
class _Fault:
    """A pending injected fault and how many more requests it applies to."""

    kind: str  # "status" | "body" | "midstream" | "truncate"
    count: int
    status: int = 502
    retry_after: float | None = None
    message: str | None = None



class _Handler(BaseHTTPRequestHandler):
    """Routes one HTTP request to the fake provider."""

    protocol_version = "HTTP/1.1"
    server_version, sys_version = "llm-memo-local", ""
    timeout = 120  # an idle keep-alive connection gives its thread back eventually
    disable_nagle_algorithm = True  # else headers, body and SSE events each wait ~40 ms for an ACK
    server: _HTTPServer
    anthropic = False  # the request is Anthropic's /v1/messages: errors in its shape

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: an access log per request would drown test output."""

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        self.server.track(self.connection, add=False)
        super().finish()

    def _serve(self) -> None:
        """Answer one request, whatever its method (``self.command``)."""
        owner = self.server.owner
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            body, bad_json = (json.loads(raw) if raw else None), False
        except ValueError:
            body, bad_json = None, True
        path = urlsplit(self.path).path
        headers = {k.lower(): "<redacted>" if k.lower() == "authorization" else v for k, v in self.headers.items()}
        owner._record(RecordedRequest(self.command, path, headers, body, raw))

        openrouter = path.startswith("/api/v1/")
        prefix = "/api/v1" if openrouter else "/v1"
        kind = _ROUTES.get((self.command, path[len(prefix):])) if path.startswith(prefix + "/") else None
        if kind is None:
            return self._json(404, error_body(404, f"No route for {self.command} {path}.", openrouter))
        self.anthropic = kind == "messages"
        auth = self.headers.get("authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else self.headers.get("x-api-key", "")
        if not key or key == BAD_KEY:  # never echo the key back
            return self._json(401, self._error(401, None, openrouter))
        if kind != "models" and (bad_json or not isinstance(body, dict)):
            return self._json(400, self._error(400, "The request body must be a JSON object.", openrouter))
        request: _JSON = body if isinstance(body, dict) else {}
        generation = kind in ("chat", "responses", "messages")
        streaming = generation and request.get("stream") is True
        fault = owner._take_fault(generation=generation, streaming=streaming)
        if fault is not None and fault.kind == "status":
            return self._json(fault.status, self._error(fault.status, fault.message, openrouter), _retry_headers(fault))
        if kind == "models":
            data = [{"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "llm-memo"} for m in _MODELS]
            return self._json(200, {"object": "list", "data": data})
        time.sleep(owner.latency)
        if fault is not None and fault.kind == "body":
            return self._json(200, self._error(502, None, openrouter))
        try:
            self._answer(kind, request, openrouter, streaming, fault)
        except BadRequest as exc:
            self._json(400, self._error(400, str(exc), openrouter))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:  # a field of the wrong shape
            self._json(400, self._error(400, f"Malformed request: {type(exc).__name__}: {exc}", openrouter))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def _error(self, status: int, message: str | None, openrouter: bool) -> _JSON:
        if self.anthropic:
            return message_error(status, message or error_body(status, None, False)["error"]["message"])
        return error_body(status, message, openrouter)

    def _messages(self, body: _JSON, model: str, streaming: bool, fault: _Fault | None) -> None:
        """Anthropic's /v1/messages; its prompt cache works without OpenRouter."""
        turn = plan_message(body, model)
        self.server.owner._prompt_cache(turn, model, message_items(body))
        message = message_json(turn, model)
        if not streaming:
            return self._json(200, message)
        self._sse(message_sse(message), False, fault)

    def _answer(self, kind: str, body: _JSON, openrouter: bool, streaming: bool, fault: _Fault | None) -> None:
        model = require_model(body)
        if kind == "messages":
            return self._messages(body, model, streaming, fault)
        if kind == "embeddings":
            return self._json(200, embeddings(body, model, openrouter))
        turn, items = (plan_chat if kind == "chat" else plan_responses)(body, model)
        if openrouter:
            self.server.owner._prompt_cache(turn, model, items)
        if kind == "responses":
            full = response_json(turn, body, model, openrouter)
            if not streaming:
                return self._json(200, full)
            events = [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in response_stream(full)]
            return self._sse(events, openrouter, fault)
        completion = chat_json(turn, chat_head(model, openrouter), openrouter)
        if not streaming:
            return self._json(200, completion)
        usage = openrouter or bool((body.get("stream_options") or {}).get("include_usage"))
        chunks = chat_stream(completion, openrouter, usage)
        self._sse([f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"], openrouter, fault)

    def _json(self, status: int, payload: _JSON, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in {"content-type": "application/json", "content-length": str(len(data)),
                            "x-request-id": "req_" + secrets.token_hex(16), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, events: list[str], openrouter: bool, fault: _Fault | None) -> None:
        """Send SSE events with chunked encoding; a fault cuts the stream before its finish."""
        if fault is not None:
            events = events[: max(1, (len(events) - 1) // 2)]
            if fault.kind == "midstream":
                failure = json.dumps(self._error(502, None, openrouter))
                events.append(f"event: error\ndata: {failure}\n\n" if self.anthropic else f"data: {failure}\n\n")
        if openrouter:
            events.insert(0, ": OPENROUTER PROCESSING\n\n")
        self.send_response(200)
        for name, value in (("content-type", "text/event-stream"), ("cache-control", "no-cache"),
                            ("transfer-encoding", "chunked"), ("x-request-id", "req_" + secrets.token_hex(16))):
            self.send_header(name, value)
        if fault is not None:
            self.send_header("connection", "close")  # as a provider whose stream broke would
        self.end_headers()
        for n, event in enumerate(events):
            if n and self.server.owner.chunk_delay:
                time.sleep(self.server.owner.chunk_delay)
            data = event.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


def _retry_headers(fault: _Fault) -> dict[str, str]:
    if fault.retry_after is None:
        return {}
    return {"retry-after": f"{fault.retry_after:g}", "retry-after-ms": str(round(fault.retry_after * 1000))}


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its LocalServer and its open connections."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], owner: LocalServer) -> None:
        self.owner = owner
        self.connections: set[socket.socket] = set()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, *, add: bool) -> None:
        with self.owner._lock:
            (self.connections.add if add else self.connections.discard)(connection)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that hang up mid-response (normal for a closed stream); report bugs."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class LocalServer:
    """A local OpenAI/OpenRouter-compatible server with request recording and fault injection."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, latency: float = 0.0,
                 chunk_delay: float = 0.0) -> None:
        self.latency = latency  # seconds before each answer
        self.chunk_delay = chunk_delay  # seconds between the events of a stream, as a model generating
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._prefixes: set[str] = set()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._httpd = _HTTPServer((host, port), self)
        host, port = self._httpd.socket.getsockname()[:2]  # port 0 means the OS picked one
        self.url = f"http://{host}:{port}/v1"
        self.openrouter_url = f"http://{host}:{port}/api/v1"

    def start(self) -> LocalServer:
        """Serve from a daemon thread; returns self."""
        if self._stopped:
            raise RuntimeError("this LocalServer was stopped and its socket closed; create a new one")
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        name="llm-memo-server", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve from the calling thread until interrupted."""
        self._httpd.serve_forever()

    def stop(self) -> None:
        """Stop serving, close the listening socket and any kept-alive connections."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()
        self._stopped = True
        with self._lock:
            connections = list(self._httpd.connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # wakes a handler waiting for a keep-alive request
                connection.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget recorded requests, pending faults and the simulated prompt cache."""
        with self._lock:
            self.requests.clear()
            self._faults.clear()
            self._prefixes.clear()

    def fail_next(self, status: int, *, count: int = 1, retry_after: float | None = None,
                  message: str | None = None) -> None:
        """Answer the next ``count`` requests with ``status`` and a provider-shaped error body."""
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error status (400-599), got status={status!r}")
        self._add(_Fault("status", count, status, retry_after, message))

    def error_in_body_next(self, *, count: int = 1) -> None:
        """Answer the next ``count`` non-streamed generations with 200 and an ``{"error": ...}`` body."""
        self._add(_Fault("body", count))

    def error_mid_stream_next(self, *, count: int = 1) -> None:
        """Send a few chunks of the next ``count`` streams, then a ``data: {"error": ...}`` event."""
        self._add(_Fault("midstream", count))

    def truncate_stream_next(self, *, count: int = 1) -> None:
        """End the next ``count`` streams early and close: no finish_reason, no [DONE], no error."""
        self._add(_Fault("truncate", count))

    def _add(self, fault: _Fault) -> None:
        if isinstance(fault.count, bool) or not isinstance(fault.count, int) or fault.count < 1:
            raise ValueError(f"count must be a positive integer, got count={fault.count!r}")
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, *, generation: bool, streaming: bool) -> _Fault | None:
        """The oldest pending fault that applies to this request, counted down."""
        with self._lock:
            for fault in self._faults:
                if fault.kind == "status" or (generation and streaming == (fault.kind != "body")):
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _prompt_cache(self, turn: Turn, model: str, items: list[_JSON]) -> None:
        """Simulate provider prompt caching: the first prefix is written, later ones are read."""
        found = cache_prefix(items)
        if found is None:
            return
        prefix, tokens = found
        key = hashlib.sha256(f"{model}\0{prefix}".encode()).hexdigest()
        with self._lock:
            hit = key in self._prefixes
            self._prefixes.add(key)
        if hit:
            turn.cached_tokens = tokens
        else:
            turn.written_tokens = tokens


def main(argv: list[str] | None = None) -> int:
    """Run the server in the foreground until Ctrl-C (``llm-memo serve``)."""
    parser = argparse.ArgumentParser(prog="llm-memo serve", description="Local OpenAI-compatible server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds to wait before each answer")
    args = parser.parse_args(argv)
    server = LocalServer(args.host, args.port, latency=args.latency)
    print(f"OpenAI-style base_url: {server.url}\nOpenRouter-style base_url: {server.openrouter_url}\n"
          f"Any API key works except {BAD_KEY!r}. Ctrl-C stops.", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
