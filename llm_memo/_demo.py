"""`llm-memo demo`: a short, realistic workload through a wrapped openai client.

Offline by default: it starts the local OpenAI-compatible server (with a provider-like
delay) and sends the calls there. `--live` sends the same workload to OpenRouter or
OpenAI with the key from OPENROUTER_API_KEY or OPENAI_API_KEY. Run it twice: the second
run is served from the disk tier.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

from ._cache import Cache, default_directory
from ._errors import NonDeterministicCallWarning
from ._openai import wrap

__all__ = ["main"]

DEMO_PORT = 47613
QUESTIONS = [
    "What is the difference between a process and a thread?",
    "Explain what a vector database is in two sentences.",
    "Define idempotence in HTTP APIs.",
]


def _workload(client: Any, model: str, embedding_model: str) -> list[tuple[str, Callable[[], Any]]]:
    def chat(text: str, **options: Any) -> Callable[[], Any]:
        return lambda: client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": text}], **options)

    def streamed(text: str) -> Callable[[], Any]:
        def call() -> str:
            stream = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": text}], temperature=0, stream=True)
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        return call

    calls: list[tuple[str, Callable[[], Any]]] = []
    for _ in range(3):
        calls += [(f"reference: {q[:24]}...", chat(q, temperature=0)) for q in QUESTIONS]
    calls += [("time-sensitive (never cached)", chat("What's the weather in Paris today?", temperature=0))] * 2
    calls += [("temperature 0.9 (bypassed)", chat("Write a haiku about caches.", temperature=0.9))] * 2
    calls += [("streamed answer", streamed("Explain how HTTP keep-alive works."))] * 3
    calls += [("embeddings", lambda: client.embeddings.create(model=embedding_model, input=QUESTIONS))] * 2
    return calls


def _client(live: bool, server_url: str | None) -> tuple[Any, str, str, str]:
    import openai

    if not live:
        assert server_url is not None
        return openai.OpenAI(api_key="demo-key", base_url=server_url), "gpt-4o-mini", "text-embedding-3-small", \
            "local server"
    if os.environ.get("OPENROUTER_API_KEY"):
        return (openai.OpenAI(api_key=os.environ["OPENROUTER_API_KEY"], base_url="https://openrouter.ai/api/v1"),
                "openai/gpt-4o-mini", "openai/text-embedding-3-small", "OpenRouter")
    if os.environ.get("OPENAI_API_KEY"):
        return openai.OpenAI(), "gpt-4o-mini", "text-embedding-3-small", "OpenAI"
    raise SystemExit("llm-memo demo --live needs OPENROUTER_API_KEY or OPENAI_API_KEY in the environment")


def _server(latency: float) -> Any:
    """The local server on the first free port of a fixed range: the endpoint is part of every
    key, so a second run must find the same address to be served from the disk tier."""
    from ._server import LocalServer

    for port in range(DEMO_PORT, DEMO_PORT + 20):
        try:
            return LocalServer(port=port, latency=latency).start()
        except OSError:
            continue
    return LocalServer(latency=latency).start()


def run(directory: str | None, live: bool = False, latency: float = 0.4, out: Callable[[str], Any] = print) -> int:
    """Run the workload and print what the cache did."""
    server = None if live else _server(latency)
    raw, model, embedding_model, where = _client(live, server.url if server else None)
    cache = Cache(directory) if directory else Cache(default_directory() / "demo")
    try:
        client = wrap(raw, cache=cache)
        rows: dict[str, list[float]] = {}
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonDeterministicCallWarning)  # the demo bypasses on purpose
            for label, call in _workload(client, model, embedding_model):
                t0 = time.perf_counter()
                call()
                rows.setdefault(label, []).append(time.perf_counter() - t0)
        total = time.perf_counter() - started
        _report(out, where, cache, rows, total)
    finally:
        raw.close()
        cache.close()
        if server is not None:
            server.stop()
    return 0


def _report(out: Callable[[str], Any], where: str, cache: Cache, rows: dict[str, list[float]], total: float) -> None:
    stats = cache.counters.snapshot()
    out(f"llm_memo demo against the {where} - cache in {cache.directory}")
    out("")
    out(f"{'call':40} {'calls':>5} {'first':>9} {'repeats':>9}")
    for label, times in rows.items():
        repeats = sum(times[1:]) / max(1, len(times) - 1)
        out(f"{label:40} {len(times):>5} {times[0] * 1000:>7.0f}ms {repeats * 1000:>7.1f}ms")
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
