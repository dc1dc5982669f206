"""`llm-memo demo`: a short, realistic workload through a wrapped openai client.

Offline by default: it starts the local OpenAI-compatible server (with a provider-like
delay) and sends the calls there, and one Anthropic-style call through a wrapped
anthropic client when the anthropic package is installed. `--live` sends the same workload to OpenRouter or
OpenAI with the key from OPENROUTER_API_KEY or OPENAI_API_KEY. Run it twice: the second
run is served from the disk tier.
"""

from __future__ import annotations

import argparse
import os
import textwrap
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

from .._adapters.openai import wrap
from .._errors import NonDeterministicCallWarning
from .._storage.cache import Cache, default_directory

__all__ = ["main"]

DEMO_PORT = 47613
QUESTIONS = [
    "What is the difference between a process and a thread?",
    "Explain what a vector database is in two sentences.",
    "Define idempotence in HTTP APIs.",
]


class _Target(NamedTuple):
    client: Any
    model: str
    embedding_model: str
    where: str
    construct: str  # the code that builds the client, as the demo prints it


def _workload(client: Any, model: str, embedding_model: str) -> list[tuple[str, int, Callable[[], Any]]]:
    """(label, how many times, the call): each call repeated in a row, its row printed after."""
    def chat(text: str, **options: Any) -> Callable[[], Any]:
        return lambda: client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": text}], **options)

    def streamed(text: str) -> Callable[[], Any]:
        def call() -> str:
            stream = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": text}], temperature=0, stream=True)
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        return call

    return [
        *((f"reference: {q[:24]}...", 3, chat(q, temperature=0)) for q in QUESTIONS),
        ("time-sensitive (never cached)", 2, chat("What's the weather in Paris today?", temperature=0)),
        ("temperature 0.9 (bypassed)", 2, chat("Write a haiku about caches.", temperature=0.9)),
        ("streamed answer", 3, streamed("Explain how HTTP keep-alive works.")),
        ("embeddings", 2, lambda: client.embeddings.create(model=embedding_model, input=QUESTIONS)),
    ]


def _anthropic_call(server_url: str, cache: Cache, opened: list[Any]) -> list[tuple[str, int, Callable[[], Any]]]:
    """One Anthropic-style call (Messages API, no temperature: anthropic 2.x has none) when the
    anthropic package is installed; nothing otherwise."""
    try:
        import anthropic
    except ImportError:
        return []
    client = wrap(anthropic.Anthropic(base_url=server_url.removesuffix("/v1"), api_key="demo-key"), cache=cache)
    opened.append(client)
    return [("anthropic messages.create", 3, lambda: client.messages.create(
        model="claude-haiku-4.5", max_tokens=300, messages=[{"role": "user", "content": QUESTIONS[0]}]))]


def _snippet(target: _Target, directory: str) -> str:
    """The lines of code the demo runs, with its real endpoint, model and cache directory."""
    imports = "import os\n        import llm_memo, openai" if "os.environ" in target.construct \
        else "import llm_memo, openai"
    return textwrap.indent(textwrap.dedent(f"""\
        {imports}

        client = llm_memo.wrap({target.construct},
                               cache=llm_memo.Cache({directory!r}))
        for question in QUESTIONS:  # three reference questions, each asked 3 times
            client.chat.completions.create(model={target.model!r}, temperature=0,
                                           messages=[{{"role": "user", "content": question}}])
        # then a time-sensitive question, temperature=0.9, stream=True and
        # client.embeddings.create(model={target.embedding_model!r}, input=QUESTIONS)"""), "    ")


def _client(live: bool, server_url: str | None) -> _Target:
    import openai

    if not live:
        assert server_url is not None
        return _Target(openai.OpenAI(api_key="demo-key", base_url=server_url), "gpt-4o-mini",
                       "text-embedding-3-small", "local server",
                       f"openai.OpenAI(base_url={server_url!r}, api_key='demo-key')")
    if os.environ.get("OPENROUTER_API_KEY"):
        url = "https://openrouter.ai/api/v1"
        return _Target(openai.OpenAI(api_key=os.environ["OPENROUTER_API_KEY"], base_url=url),
                       "openai/gpt-4o-mini", "openai/text-embedding-3-small", "OpenRouter",
                       f"openai.OpenAI(base_url={url!r}, api_key=os.environ['OPENROUTER_API_KEY'])")
    if os.environ.get("OPENAI_API_KEY"):
        return _Target(openai.OpenAI(), "gpt-4o-mini", "text-embedding-3-small", "OpenAI",
                       "openai.OpenAI()  # the key from OPENAI_API_KEY")
    raise SystemExit("llm-memo demo --live needs OPENROUTER_API_KEY or OPENAI_API_KEY in the environment")


def _server(latency: float) -> Any:
    """The local server on the first free port of a fixed range: the endpoint is part of every
    key, so a second run must find the same address to be served from the disk tier."""
    from ..testing.server import LocalServer

    for port in range(DEMO_PORT, DEMO_PORT + 20):
        try:
            return LocalServer(port=port, latency=latency).start()
        except OSError:
            continue
    return LocalServer(latency=latency).start()


def _say(line: str) -> None:
    """Print one line now, piped or not: a demo's output is read as it runs."""
    print(line, flush=True)


def run(directory: str | None, live: bool = False, latency: float = 0.4, out: Callable[[str], Any] = _say) -> int:
    """Show the code, run the workload with a row per call as it completes, then what the cache did."""
    server = None if live else _server(latency)
    target = _client(live, server.url if server else None)
    cache = Cache(directory) if directory else Cache(default_directory() / "demo")
    opened: list[Any] = [target.client]
    try:
        client = wrap(target.client, cache=cache)
        workload = _workload(client, target.model, target.embedding_model)
        if server is not None:
            workload += _anthropic_call(server.url, cache, opened)
        out(f"llm_memo demo against the {target.where} - cache in {cache.directory}")
        out("")
        out(_snippet(target, str(cache.directory)))
        out("")
        out(f"{'call':40} {'calls':>5} {'first':>9} {'repeats':>9}")
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonDeterministicCallWarning)  # the demo bypasses on purpose
            for label, times, call in workload:
                out(_row(label, [_timed(call) for _ in range(times)]))
        _summary(out, cache, time.perf_counter() - started)
    finally:
        for opened_client in opened:
            opened_client.close()
        cache.close()
        if server is not None:
            server.stop()
    return 0


def _timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _row(label: str, times: list[float]) -> str:
    repeats = sum(times[1:]) / max(1, len(times) - 1)
    return f"{label:40} {len(times):>5} {times[0] * 1000:>7.0f}ms {repeats * 1000:>7.1f}ms"


def _summary(out: Callable[[str], Any], cache: Cache, total: float) -> None:
    stats = cache.counters.snapshot()
    out("")
    tiers = ", ".join(f"{tier} {n}" for tier, n in sorted(stats.hits_by_tier.items())) or "none"
    uncached = total + stats.time_saved
    out(f"calls {stats.calls}: hits {stats.hits} ({tiers}), misses {stats.misses}, bypassed {stats.bypassed}, "
        f"errors {stats.errors}")
    out(f"wall time {total:.2f}s with the cache; about {uncached:.2f}s without it "
        f"({uncached / total if total else 0:.1f}x)")
    out(f"saved: {stats.tokens_saved} tokens, ${stats.cost_saved:.5f}, {stats.time_saved:.2f}s of waiting")
    if not stats.hits_by_tier.get("disk"):
        out("run it again: a new process starts with an empty memory tier and is served from disk")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `llm-memo demo`."""
    parser = argparse.ArgumentParser(prog="llm-memo demo", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="cache directory (default: $LLM_MEMO_DIR/demo or ~/.cache/llm_memo/demo)")
    parser.add_argument("--live", action="store_true", help="call OpenRouter/OpenAI instead of the local server")
    parser.add_argument("--latency", type=float, default=0.4, help="seconds the local server takes per answer")
    args = parser.parse_args(argv)
    return run(args.dir, live=args.live, latency=args.latency)
