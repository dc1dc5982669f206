"""wrap() keeps the user's own HTTP client settings, and refuses what it cannot cache.

The real openai SDK over HTTP against llm_memo.LocalServer, through a real forwarding
proxy on loopback; the user's client is an httpx.Client (or the SDK's own httpx2.Client).
"""

from __future__ import annotations

import asyncio
import http.client
import importlib
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import openai
import pytest

import llm_memo
from llm_memo.testing.server import LocalServer

pytestmark = pytest.mark.timeout(60)

KEY = "test-key"
ASK = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is a cache?"}], "temperature": 0}
# The HTTP library the installed SDK is built on (httpx2 for openai 3.x, httpx before).
SDK_HTTP = importlib.import_module(openai.DefaultHttpxClient.__mro__[1].__module__.split(".")[0])
MODULES = sorted({httpx, SDK_HTTP}, key=lambda m: m.__name__)


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer() as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(server: LocalServer) -> None:
    server.reset()


@pytest.fixture
def memo(tmp_path: Path) -> Iterator[llm_memo.Cache]:
    cache = llm_memo.Cache(tmp_path / "memo")
    yield cache
    cache.close()


class Proxy:
    """A forwarding HTTP proxy on 127.0.0.1 that counts the requests it carried."""

    def __init__(self) -> None:
        self.carried: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                target = urlsplit(self.path)  # a proxy gets the absolute URL
                outer.carried.append(f"{target.path}?{target.query}")
                connection = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "proxy-connection")}
                connection.request(self.command, target.path + (f"?{target.query}" if target.query else ""),
                                   body, headers)
                answer = connection.getresponse()
                data = answer.read()
                connection.close()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    running = Proxy()
    yield running
    running.close()


def gateway_auth(module: Any) -> Any:
    """An httpx Auth that signs each request with a header, as API gateways ask."""

    class GatewayAuth(module.Auth):  # type: ignore[misc,name-defined]
        def auth_flow(self, request: Any) -> Any:
            request.headers["x-gateway-signature"] = "signed"
            yield request

    return GatewayAuth()


def settings(module: Any, proxy: Proxy, hooked: list[str]) -> dict[str, Any]:
    """Every setting of the user's HTTP client this test expects to survive wrap()."""

    def on_request(request: Any) -> None:
        hooked.append(f"request {request.url.path}")

    def on_response(response: Any) -> None:
        hooked.append(f"response {response.status_code}")

    return {"headers": {"x-gateway-key": "gw-123"}, "cookies": {"session": "abc"}, "auth": gateway_auth(module),
            "params": {"tenant": "t1"},
            "proxy": proxy.url, "timeout": 7.0, "verify": False,
            "event_hooks": {"request": [on_request], "response": [on_response]}}


def assert_settings_arrived(server: LocalServer, proxy: Proxy, hooked: list[str], sent: int) -> None:
    chats = [r for r in server.requests if r.path.endswith("/chat/completions")]
    assert len(chats) == 1  # the second call was a hit
    assert len(server.requests) == sent
    for request in server.requests:
        assert request.headers.get("x-gateway-key") == "gw-123"
        assert request.headers.get("x-gateway-signature") == "signed"
        assert "session=abc" in request.headers.get("cookie", "")
    assert len(proxy.carried) == sent
    assert all(path.endswith("tenant=t1") for path in proxy.carried)
    assert hooked.count("request /v1/chat/completions") == 2  # hooks see hits too, as the client would
    assert "response 200" in hooked


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_wrap_keeps_the_users_http_client_settings(server: LocalServer, memo: llm_memo.Cache, proxy: Proxy,
                                                   module: Any) -> None:
    hooked: list[str] = []
    http = module.Client(**settings(module, proxy, hooked))
    with openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, http_client=http) as raw:
        wrapped = llm_memo.wrap(raw, cache=memo)
        try:
            first = wrapped.chat.completions.create(**ASK)
            assert wrapped.chat.completions.create(**ASK) == first
            wrapped.models.list()  # passes through, settings kept as well
        finally:
            wrapped.close()
        assert_settings_arrived(server, proxy, hooked, sent=2)
        assert wrapped._client.timeout == http.timeout
        raw.models.list()  # the user's client still works after the wrapped copy closed
    assert len(server.requests) == 3


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_wrap_keeps_the_users_async_http_client_settings(server: LocalServer, memo: llm_memo.Cache, proxy: Proxy,
                                                         module: Any) -> None:
    hooked: list[str] = []
    plain = settings(module, proxy, hooked)
    sync_hooks = plain.pop("event_hooks")

    def hooks(kind: str) -> Callable[..., Any]:
        async def hook(message: Any) -> None:
            sync_hooks[kind][0](message)
        return hook

    async def main() -> None:
        http = module.AsyncClient(**plain, event_hooks={k: [hooks(k)] for k in sync_hooks})
        raw = openai.AsyncOpenAI(base_url=server.url, api_key=KEY, max_retries=0, http_client=http)
        wrapped = llm_memo.wrap(raw, cache=memo)
        try:
            first = await wrapped.chat.completions.create(**ASK)
            assert await wrapped.chat.completions.create(**ASK) == first
            await wrapped.models.list()
        finally:
            await wrapped.close()
            await raw.close()

    asyncio.run(main())
    assert_settings_arrived(server, proxy, hooked, sent=2)


@pytest.mark.parametrize("make", [object, lambda: None, lambda: "sk-not-a-client", httpx.Client, lambda: openai],
                         ids=["object", "None", "str", "httpx.Client", "module"])
def test_wrap_refuses_what_it_cannot_cache(memo: llm_memo.Cache, make: Callable[[], Any]) -> None:
    thing = make()
    with pytest.raises(TypeError) as info:
        llm_memo.wrap(thing, cache=memo)
    message = str(info.value)
    assert "openai.OpenAI" in message and "openai.AsyncOpenAI" in message
    assert type(thing).__name__ in message
    if isinstance(thing, httpx.Client):
        thing.close()


def test_wrap_refuses_a_client_shaped_like_openai(memo: llm_memo.Cache) -> None:
    """Duck typing is not enough: an object with an httpx client inside is not an openai client."""

    class LooksLikeOne:
        def __init__(self) -> None:
            self._client = SDK_HTTP.Client()

        def with_options(self, **_: Any) -> LooksLikeOne:
            return self

    thing = LooksLikeOne()
    try:
        with pytest.raises(TypeError, match="LooksLikeOne"):
            llm_memo.wrap(thing, cache=memo)
    finally:
        thing._client.close()


def test_wrap_accepts_openai_subclasses(server: LocalServer, memo: llm_memo.Cache) -> None:
    class Mine(openai.OpenAI):
        pass

    with Mine(base_url=server.url, api_key=KEY, max_retries=0) as raw:
        wrapped = llm_memo.wrap(raw, cache=memo)
        try:
            assert isinstance(wrapped, Mine)
            wrapped.chat.completions.create(**ASK)
            wrapped.chat.completions.create(**ASK)
        finally:
            wrapped.close()
    assert len(server.requests) == 1
