#!/usr/bin/env python
"""pydantic-ai agents cached by llm_memo's CachedModel and by pyai-caching, side by side.

    python benchmarks/bench_pydantic_ai.py          # about 10 s
    python benchmarks/bench_pydantic_ai.py --quick

Needs pydantic-ai-slim[openai] and pyai-caching (install pyai-caching with --no-deps: its
unpinned `pydantic-ai` requirement resolves to the 0.0.5 package, which overwrites
pydantic-ai-slim's modules), and redis-server on PATH: pyai-caching stores in Redis only, so
the run starts its own on a free port. Both cache the same agents (the same OpenAIChatModel
talking HTTP to llm_memo's local server, temperature 0) on the same prompts.

The feature table is measured, not declared: a feature is "yes" when the second identical
call sent no request to the provider (and, for structured output, returned the output type).
Then the hit latency of one `agent.run` each, served from the cache: llm_memo from its
memory tier and, with no memory tier, from Redis; pyai-caching from Redis (GET and
unpickle). llm_memo caches inside the run, so its hit still pays pydantic-ai's own run (the
floor row: an agent on a FunctionModel that answers at once); pyai-caching skips the run and
its tools altogether and returns its own pickled `CachedResult`. The uncached run against
the local server is the reference. This file only measures: it asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2
from _provenance import git_state
from bench_redis import redis_server
from pydantic import BaseModel
from pydantic_ai import Agent, RunContext
from pydantic_ai.messages import ModelResponse, TextPart, ToolReturnPart
from pydantic_ai.models.function import FunctionModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.tools import ToolDefinition

import llm_memo
from llm_memo.integrations.pydantic_ai import CachedModel
from llm_memo.testing import LocalServer

try:
    import pyai_caching
except ImportError:
    sys.exit("pyai-caching is not installed: pip install --no-deps pyai-caching")

SETTINGS = {"temperature": 0}


class City(BaseModel):
    name: str
    population: int


async def _once(ctx: RunContext[Any], tool: ToolDefinition) -> ToolDefinition | None:
    """Offer the tool until it was called (the local server calls the first tool it is offered)."""
    returned = any(isinstance(p, ToolReturnPart) for m in ctx.messages for p in getattr(m, "parts", ()))
    return None if returned else tool


def agents(model: Any) -> dict[str, Agent[None, Any]]:
    """The same agents for both contenders: plain text, structured output, and a tool call.
    They are named: pydantic-ai names an unnamed agent after its first run, which changes
    pyai-caching's key (the "unnamed agent" row shows it)."""
    tooled = Agent(model, name="tools", output_type=City, model_settings=SETTINGS)

    @tooled.tool_plain(prepare=_once)
    def population_of(city: str) -> int:
        return len(city) * 1000

    return {"text": Agent(model, name="text", model_settings=SETTINGS),
            "structured": Agent(model, name="structured", output_type=City, model_settings=SETTINGS),
            "tools": tooled, "unnamed": Agent(model, model_settings=SETTINGS)}


class Contender:
    """One cache: how it runs an agent (async, sync, streamed) and what it reports."""

    name: str

    def __init__(self, server: LocalServer) -> None:
        self.server = server

    def sent(self) -> int:
        return sum(1 for r in self.server.requests if r.path.endswith("/chat/completions"))

    async def twice(self, call: Callable[[], Awaitable[Any]], check: Callable[[Any], bool] = bool) -> str:
        """'yes' when a second identical call sends nothing and gives what the first gave."""
        try:
            first = await call()
            before = self.sent()
            second = await call()
        except NotImplementedError:
            return "no (no such API)"
        except Exception as exc:  # the contender does not do it: say how it fails
            return f"no ({type(exc).__name__})"
        same = check(second) and _output(second) == _output(first)
        return "yes" if self.sent() == before and same else f"no ({self.sent() - before} request(s))"


def _output(result: Any) -> Any:
    return result if isinstance(result, str) else getattr(result, "output", result)


def openai_model(server: LocalServer, http: Any = None) -> OpenAIChatModel:
    provider = OpenAIProvider(base_url=server.url, api_key="bench", http_client=http)
    return OpenAIChatModel("gpt-4o-mini", provider=provider)


def sync_agent(model: Any) -> Agent[None, str]:
    """An agent for run_sync, which runs in its own event loop: its own HTTP client."""
    return Agent(model, name="sync", model_settings=SETTINGS)


class LLMMemo(Contender):
    name = "llm_memo CachedModel"

    def __init__(self, server: LocalServer, cache: llm_memo.Cache) -> None:
        super().__init__(server)
        self.model = CachedModel(openai_model(server), cache=cache)
        self.agents = agents(self.model)

    async def run(self, kind: str, prompt: str) -> Any:
        return await self.agents[kind].run(prompt)

    async def run_sync(self, kind: str, prompt: str) -> Any:
        model = CachedModel(openai_model(self.server, httpx2.AsyncClient()), cache=self.model.engine.cache)
        return await asyncio.to_thread(sync_agent(model).run_sync, prompt)

    async def stream(self, kind: str, prompt: str) -> Any:
        async with self.agents[kind].run_stream(prompt) as result:
            if kind == "text":
                return "".join([c async for c in result.stream_text(delta=True, debounce_by=None)])
            return await result.get_output()

    def cost_saved(self) -> str:
        info = self.model.cache_info()
        return f"yes (${info.cost_saved:.6f}, {info.tokens_saved} tokens)" if info.cost_saved > 0 else "no"


class PyaiCaching(Contender):
    name = f"pyai-caching {pyai_caching.__version__}"

    def __init__(self, server: LocalServer, redis_url: str) -> None:
        super().__init__(server)
        self.url = redis_url
        self.agents = agents(openai_model(server))
        self.recorded: list[float] = []

    async def _record(self, model: str, task: str, cost: float) -> None:
        self.recorded.append(cost)

    async def run(self, kind: str, prompt: str) -> Any:
        return await pyai_caching.cached_agent_run(self.agents[kind], prompt, "bench", redis_url=self.url,
                                                   expense_recorder=self._record)

    async def run_sync(self, kind: str, prompt: str) -> Any:
        agent = sync_agent(openai_model(self.server, httpx2.AsyncClient()))
        return await asyncio.to_thread(pyai_caching.cached_agent_run_sync, agent, prompt, "bench", redis_url=self.url)

    async def stream(self, kind: str, prompt: str) -> Any:
        raise NotImplementedError("pyai-caching has no run_stream")

    def cost_saved(self) -> str:
        return "no (a hit is recorded as $0 spent)" if self.recorded[-1:] == [0] else "no"


async def features(contender: LLMMemo | PyaiCaching, tag: str) -> dict[str, str]:
    """Each feature tried twice on fresh prompts."""
    def city(result: Any) -> bool:
        return isinstance(_output(result), City)

    done = {
        "run": await contender.twice(lambda: contender.run("text", f"{tag} run")),
        "run (unnamed agent)": await contender.twice(lambda: contender.run("unnamed", f"{tag} unnamed")),
        "run_sync": await contender.twice(lambda: contender.run_sync("text", f"{tag} run_sync")),
        "run_stream (text)": await contender.twice(lambda: contender.stream("text", f"{tag} stream")),
        "run_stream (structured)": await contender.twice(lambda: contender.stream("structured", f"{tag} sstream"),
                                                         city),
        "tools": await contender.twice(lambda: contender.run("tools", f"{tag} tools"), city),
        "structured output": await contender.twice(lambda: contender.run("structured", f"{tag} city"), city),
    }
    done["cost saved reported"] = contender.cost_saved()
    hit = await contender.run("text", f"{tag} run")
    done["hit is pydantic-ai's result"] = "yes" if type(hit).__module__.startswith("pydantic_ai") else \
        f"no ({type(hit).__name__})"
    return done


def persistence_llm_memo(server: LocalServer, directory: str) -> str:
    """A new process with no Redis, on the same cache directory: served without a request."""
    code = ("import sys, llm_memo\nfrom pydantic_ai import Agent\n"
            "from pydantic_ai.models.openai import OpenAIChatModel\n"
            "from pydantic_ai.providers.openai import OpenAIProvider\n"
            "from llm_memo.integrations.pydantic_ai import CachedModel\n"
            "m = OpenAIChatModel('gpt-4o-mini', provider=OpenAIProvider(base_url=sys.argv[1], api_key='bench'))\n"
            "model = CachedModel(m, cache=llm_memo.Cache(sys.argv[2]))\n"
            "Agent(model, model_settings={'temperature': 0}).run_sync('llm_memo run')\n"
            "print(model.cache_info().hits)\n")
    before = sum(1 for r in server.requests if r.path.endswith("/chat/completions"))
    env = {**os.environ, "LLM_MEMO_REDIS_URL": ""}
    done = subprocess.run([sys.executable, "-c", code, server.url, directory], capture_output=True, text=True,
                          env=env, timeout=120)
    after = sum(1 for r in server.requests if r.path.endswith("/chat/completions"))
    return "yes (new process, disk)" if done.stdout.strip() == "1" and after == before else f"no {done.stderr[-200:]}"


async def persistence_pyai(contender: PyaiCaching) -> str:
    os.environ.pop("LLM_CACHE_REDIS_URL", None)
    try:
        await pyai_caching.cached_agent_run(contender.agents["text"], "no redis", "bench")
    except pyai_caching.ConfigurationError:
        return "no (needs a Redis URL)"
    return "yes"


async def timed(call: Callable[[], Awaitable[Any]], count: int) -> tuple[float, float]:
    """(median, p90) of `count` calls in microseconds, after a warm-up."""
    for _ in range(max(count // 10, 3)):
        await call()
    samples = []
    for _ in range(count):
        start = time.perf_counter_ns()
        await call()
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.9)]


async def latencies(server: LocalServer, mine: LLMMemo, theirs: PyaiCaching, url: str,
                    count: int) -> list[tuple[str, float, float]]:
    prompt = "latency probe"
    await mine.run("text", prompt)
    await theirs.run("text", prompt)
    cold = llm_memo.Cache(disk=False, redis_url=url, redis_prefix="bench-pai", memory_maxsize=0)
    redis_agent = Agent(CachedModel(openai_model(server), cache=cold), model_settings=SETTINGS)
    await redis_agent.run(prompt)

    plain = Agent(openai_model(server), model_settings=SETTINGS)
    floor = Agent(FunctionModel(lambda messages, info: ModelResponse(parts=[TextPart("answer")])))
    rows = [("uncached agent.run (local server, no latency)", *await timed(lambda: plain.run(prompt), count)),
            ("floor: agent.run on FunctionModel (no HTTP, no cache)", *await timed(lambda: floor.run(prompt), count)),
            ("llm_memo hit, memory tier", *await timed(lambda: mine.run("text", prompt), count)),
            ("llm_memo hit, Redis tier (no memory tier)", *await timed(lambda: redis_agent.run(prompt), count)),
            (f"{theirs.name} hit, Redis", *await timed(lambda: theirs.run("text", prompt), count))]
    cold.close()
    return rows


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


async def main_async(count: int) -> None:
    with LocalServer() as server, redis_server() as url, tempfile.TemporaryDirectory() as directory:
        cache = llm_memo.Cache(Path(directory) / "memo")
        mine, theirs = LLMMemo(server, cache), PyaiCaching(server, url)
        ours, others = await features(mine, "llm_memo"), await features(theirs, "pyai")
        cache.close()
        ours["persistence without Redis"] = persistence_llm_memo(server, str(Path(directory) / "memo"))
        others["persistence without Redis"] = await persistence_pyai(theirs)
        print(table(["feature", mine.name, theirs.name], [[k, ours[k], others[k]] for k in ours]))
        mine = LLMMemo(server, llm_memo.Cache(Path(directory) / "hot"))
        rows = await latencies(server, mine, theirs, url, count)
        print()
        print(table(["hit latency of one agent.run", "median", "p90"],
                    [[name, f"{median:,.0f} us", f"{p90:,.0f} us"] for name, median, p90 in rows]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed calls")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # pydantic-ai's and pyai-caching's deprecation notes
    logging.disable(logging.WARNING)  # pyai-caching logs a warning per call of an agent with text output
    print(f"# {platform.python_implementation()} {platform.python_version()}, {git_state()}")
    import pydantic_ai
    print(f"# pydantic-ai {pydantic_ai.__version__}, pyai-caching {pyai_caching.__version__}\n")
    asyncio.run(main_async(50 if args.quick else 300))


if __name__ == "__main__":
    main()
