"""Secrets stay out of every file: planted credentials are grepped for in every byte the cache wrote.

The sinks: the cache directory (entries, SQLite WAL, ledger), a real Redis (every key under the
prefix and every value, the event stream included), an export file, `llm-memo show --json`,
and the DEBUG log. The sources: a decorated function's arguments (secret names, secret values,
nested dicts, headers, (user, password) pairs) and `wrap(OpenAI(...))` with a key, a password in
the base URL and a key in the query string, talking to llm_memo.LocalServer.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from test_redis import Server, fresh_prefix

import llm_memo
from llm_memo import Cache, LocalServer, llm_cache

pytestmark = pytest.mark.slow

# Every value is unique, so a hit names the secret that leaked.
NAMED = {  # secret names holding plain values: only the name rule hides them
    "password": "hunter2-plain-1",
    "passwd": "plain-passwd-2",
    "accessToken": "plain-access-3",
    "openaiApiKey": "plain-openai-4",
    "OPENAI_API_KEY": "plain-screaming-5",
    "hf_key": "plain-hf-6",
    "client_secret": "plain-client-7",
    "private_key": "plain-private-8",
    "session_id": "plain-session-9",
    "api_key": "plain-apikey-10",
}
VALUES = {  # secret values under plain names: only the value rule hides them
    "note": "Bearer a1B2c3D4e5F6g7H8-note",
    "sk": "sk-proj-Qm7xT2vLk9RzW4nB8cYd1HfJ",
    "openrouter": "sk-or-v1-3f9a1c0d5e7b2a4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e",
    "anthropic": "sk-ant-api03-Zx8Vb2Nm4Lk6Jh8Gf0Ds2Aq4We6Rt8Yu0",
    "groq": "gsk_Pq2Wr4Et6Yu8Io0Pa2Sd4Fg6Hj8Kl0Zx",
    "hf": "hf_QwErTyUiOpAsDfGhJkLzXcVbNmQwErTy12",
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "github": "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
    "slack": "xoxb-2048163510-4096327020-Ab1Cd2Ef3Gh4",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "basic": "Basic " + base64.b64encode(b"bob:basic-pw-11").decode(),
}
EMBEDDED = {  # pieces of longer strings
    "url-password": "pw-in-url-12",
    "url-query": "qs-secret-13",
    "prose": "sk-proj-Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2",
}
NESTED = {"headers-api-key": "hdr-api-key-14", "headers-x-api-key": "hdr-x-api-key-15",
          "headers-auth": "hdr-bearer-16A7b8C9d0", "deep-token": "deep-token-17", "pair": "pair-pw-18",
          "cookie": "cookie-19"}
WRAP = {"api_key": "sk-live-Wr4pK3yN0tStOr3d99", "userinfo": "wrap-userinfo-pw-20",
        "query": "wrap-query-key-21", "header": "wrap-header-key-22", "body": "wrap-body-key-23"}
MARKER = "visible-marker-42"  # not a secret: it must show, so the grep is not looking at compressed bytes


def _needles() -> dict[str, bytes]:
    found = {f"name:{k}": v for k, v in NAMED.items()}
    found |= {f"value:{k}": v.split()[-1] for k, v in VALUES.items()}
    found |= {f"embedded:{k}": v for k, v in EMBEDDED.items()}
    found |= {f"nested:{k}": v for k, v in NESTED.items()}
    found |= {f"wrap:{k}": v for k, v in WRAP.items()}
    return {label: value.encode() for label, value in found.items()}


def _decorated_calls(cache: Cache) -> None:
    @llm_cache(cache=cache, ttl=600)
    def ask(prompt: str, **settings: Any) -> str:
        return f"an answer without secrets ({len(settings)} settings)"

    settings: dict[str, Any] = {**NAMED, **VALUES}
    settings["endpoint"] = f"https://bob:{EMBEDDED['url-password']}@llm.example.com/v1?key={EMBEDDED['url-query']}&x=1"
    settings["headers"] = {"api-key": NESTED["headers-api-key"], "X-API-KEY": NESTED["headers-x-api-key"],
                           "Authorization": f"Bearer {NESTED['headers-auth']}", "Accept": MARKER}
    settings["provider"] = {"options": [{"routing": {"credentials": {"token": NESTED["deep-token"]}}}]}
    settings["auth"] = ("bob", NESTED["pair"])
    settings["cookies"] = [("session", NESTED["cookie"])]
    prompt = f"{MARKER}: use key {EMBEDDED['prose']} please"
    for _ in range(2):
        assert ask(prompt, **settings).startswith("an answer")
    assert ask.cache_info().hits == 1


def _wrapped_calls(cache: Cache, server: LocalServer) -> None:
    def bearer(request: httpx.Request) -> None:  # httpx turns URL userinfo into Basic auth; the server wants Bearer
        request.headers["Authorization"] = f"Bearer {WRAP['api_key']}"

    base_url = server.url.replace("http://", f"http://bob:{WRAP['userinfo']}@")
    http = httpx.Client(event_hooks={"request": [bearer]})
    raw = openai.OpenAI(api_key=WRAP["api_key"], base_url=base_url, max_retries=0, http_client=http,
                        default_query={"key": WRAP["query"]}, default_headers={"x-api-key": WRAP["header"]})
    client = llm_memo.wrap(raw, cache=cache)
    try:
        for _ in range(2):
            client.chat.completions.create(model="gpt-4o-mini", temperature=0, extra_body={"api_key": WRAP["body"]},
                                           messages=[{"role": "user", "content": f"say {MARKER}"}])
            client.embeddings.create(model="text-embedding-3-small", input=MARKER)
    finally:
        client.close()
        raw.close()


def _directory_bytes(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def _redis_bytes(server: Server, prefix: str) -> dict[str, bytes]:
    """Every key under the prefix and everything it holds, whatever its type."""
    found: dict[str, bytes] = {}
    with contextlib.closing(server.client()) as client:
        for name in client.scan_iter(match=f"{prefix}*"):
            kind = client.type(name).decode()
            parts: list[Any] = [name, client.dump(name) or b""]
            if kind == "string":
                parts.append(client.get(name))
            elif kind == "zset":
                parts += [m for m, _ in client.zrange(name, 0, -1, withscores=True)]
            elif kind == "set":
                parts += list(client.smembers(name))
            elif kind == "hash":
                parts += [b for pair in client.hgetall(name).items() for b in pair]
            elif kind == "list":
                parts += client.lrange(name, 0, -1)
            elif kind == "stream":
                parts += [b for _, fields in client.xrange(name) for pair in fields.items() for b in pair]
            found[f"redis {kind} {name!r}"] = b"\n".join(p if isinstance(p, bytes) else str(p).encode()
                                                          for p in parts)
    return found


def _cli(directory: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "LLM_MEMO_DIR": str(directory), "NO_COLOR": "1"}
    env.pop("LLM_MEMO_REDIS_URL", None)
    result = subprocess.run([sys.executable, "-m", "llm_memo", *args], capture_output=True, env=env, timeout=60,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.kill()


def test_no_planted_secret_reaches_any_byte_the_cache_wrote(tmp_path: Path, redis_server: Server,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    directory, prefix = tmp_path / "cache", fresh_prefix()
    caplog.set_level(logging.DEBUG, logger="llm_memo")
    sinks: dict[str, bytes] = {}
    with LocalServer() as server, Cache(directory, redis_url=redis_server.url, redis_prefix=prefix) as cache:
        _decorated_calls(cache)
        _wrapped_calls(cache, server)
        cache.ledger.flush()  # type: ignore[union-attr]
        sinks |= _directory_bytes(directory)  # while open: the SQLite WAL holds the newest pages
        sinks |= _redis_bytes(redis_server, prefix)
        assert cache.stats().hits == 3
    sinks |= {f"{name} (closed)": data for name, data in _directory_bytes(directory).items()}
    export = tmp_path / "export.jsonl"
    _cli(directory, "export", str(export))
    sinks["export"] = export.read_bytes()
    sinks["ls"] = _cli(directory, "ls").stdout
    for key in {line.split(b"\t")[0] for line in sinks["ls"].splitlines()[1:]}:
        sinks[f"show {key.decode()}"] = _cli(directory, "show", "--json", key.decode()).stdout
    assert caplog.records
    sinks["DEBUG log"] = "\n".join([caplog.text, *(r.getMessage() for r in caplog.records)]).encode()

    needles = _needles()
    hits = [(label, sink) for label, needle in needles.items() for sink, data in sinks.items() if needle in data]
    leaked = sorted({label for label, _ in hits})
    assert hits == [], f"{len(leaked)} of {len(needles)} planted secrets leaked ({len(hits)} hits in {len(sinks)} sinks): {leaked}"
    for sink in ("export", "cache.db (closed)", "show"):  # what is not secret does show
        assert any(MARKER.encode() in data for name, data in sinks.items() if name.startswith(sink)), sink
    assert any(MARKER.encode() in data for name, data in sinks.items() if name.startswith("redis string"))


def test_the_stored_endpoint_has_no_userinfo_or_query(tmp_path: Path) -> None:
    with LocalServer() as server, Cache(tmp_path / "cache") as cache:
        _wrapped_calls(cache, server)
        endpoints = {s.metadata["args"]["llm_memo_endpoint"] for s in cache.scan()}
    assert endpoints == {server.url}


# ---- file modes -----------------------------------------------------------------------------------

@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _private(path: Path) -> bool:
    """No group or other bits (the umask may have taken owner bits too, never added any)."""
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o000])
def test_the_default_directory_and_its_missing_parents_are_created_private(tmp_path: Path, mask: int,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLM_MEMO_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home" / ".cache"))
    with _umask(mask), Cache() as cache:
        cache.set("a" * 64, "x", lifetime=None)
    assert cache.directory == tmp_path / "home" / ".cache" / "llm_memo"
    for path in (cache.directory, cache.directory.parent, cache.directory.parent.parent):
        assert _private(path), (path, oct(path.stat().st_mode))
    for path in cache.directory.iterdir():
        assert _private(path), (path, oct(path.stat().st_mode))


@pytest.mark.parametrize("mask", [0o022, 0o000])
def test_a_directory_the_cache_creates_is_private(tmp_path: Path, mask: int) -> None:
    target = tmp_path / "a" / "b" / "cache"
    with _umask(mask), Cache(target) as cache:
        cache.set("a" * 64, "x", lifetime=None)
    assert all(_private(p) for p in (target, target.parent, target.parent.parent))
    assert stat.S_IMODE(target.stat().st_mode) == 0o700


@pytest.mark.parametrize("mask", [0o022, 0o000])
def test_an_export_is_written_0600(tmp_path: Path, mask: int) -> None:
    with Cache(tmp_path / "cache") as cache:
        cache.set("a" * 64, "x", lifetime=None)
    fresh, existing = tmp_path / "fresh.jsonl", tmp_path / "existing.jsonl"
    existing.write_text("old")
    existing.chmod(0o644)
    with _umask(mask):
        for path in (fresh, existing):
            _cli(tmp_path / "cache", "export", str(path))
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(path.stat().st_mode))
            assert path.read_bytes().count(b"\n") == 1


def test_an_export_redacts_arguments_an_older_version_stored_in_clear(tmp_path: Path) -> None:
    """Entries written before these rules may hold secrets in their metadata: the export file does not."""
    old = {"function": "app.ask", "args": {"prompt": f"{MARKER} with {VALUES['groq']}", "accessToken": "plain-old-24",
                                           "headers": {"x-api-key": "plain-old-25"}}}
    with Cache(tmp_path / "cache") as cache:
        cache.set("a" * 64, "answer", lifetime=None, metadata=old)
    export = tmp_path / "export.jsonl"
    _cli(tmp_path / "cache", "export", str(export))
    data = export.read_bytes()
    assert MARKER.encode() in data
    for secret in (VALUES["groq"], "plain-old-24", "plain-old-25"):
        assert secret.encode() not in data, secret
