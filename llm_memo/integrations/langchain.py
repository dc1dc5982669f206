"""LangChain: llm_memo as LangChain's LLM cache, and ChatOpenAI on llm_memo's transport cache.

``set_llm_cache(LLMMemoCache())`` caches every LangChain chat model and LLM (not their streams:
LangChain's cache interface never sees a stream). ``cached_chat_openai(ChatOpenAI(...))`` puts a
ChatOpenAI's own openai clients through ``llm_memo.wrap``, so ``invoke``, ``ainvoke``, ``stream``
and ``astream`` are cached at the HTTP transport and answer with LangChain's native objects.

Keys: LangChain hands a cache two strings, the prompt (for a chat model, its messages as LangChain
JSON; for an LLM, the text) and the llm_string (the model's serialised constructor JSON, then
``---``, then the Python repr of the call's keyword arguments; or that repr alone). Both are parsed
back to data, so the key is llm_memo's canonical key of the messages, the model's settings and the
call's settings (key order, 0 versus 0.0, and settings set to None do not change it). A repr that
is not plain literals (a pydantic class passed as ``response_format``) is keyed as the text it is.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import json
import threading
from collections.abc import Sequence
from typing import Any

try:
    from langchain_core.caches import BaseCache
    from langchain_core.messages import message_to_dict, messages_from_dict
    from langchain_core.outputs import (
        ChatGeneration,
        ChatGenerationChunk,
        Generation,
        GenerationChunk,
    )
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError("llm_memo.integrations.langchain needs LangChain: pip install 'llm_memo[langchain]'") from exc

from .._adapters.openai import wrap
from .._engine.engine import Engine
from .._engine.options import CallOptions
from .._storage.cache import Cache

__all__ = ["LLMMemoCache", "cached_chat_openai"]

_STORE = CallOptions(read=False)  # an update stores the answer it is handed: nothing to read first
_KINDS = {cls.__name__: cls for cls in (ChatGenerationChunk, ChatGeneration, GenerationChunk, Generation)}
_PENDING_LIMIT = 1024  # bypassed lookups remembered until their update (a failed call never updates)


def cached_chat_openai(llm: Any, **options: Any) -> Any:
    """A copy of a langchain-openai ``ChatOpenAI`` (or a subclass: ``AzureChatOpenAI``...) whose
    requests go through ``llm_memo.wrap``; `options` are wrap's (cache=, policy=, ttl=, namespace=...).

    Its sync and async openai clients are replaced by wrapped copies of themselves, so every call
    the model makes (chat completions, the Responses API, structured output, streams) is cached as
    llm_memo caches the openai SDK. The model you pass in is left as it was.
    """
    root, root_async = getattr(llm, "root_client", None), getattr(llm, "root_async_client", None)
    if root is None and root_async is None:
        raise TypeError(f"cached_chat_openai() takes a langchain-openai ChatOpenAI with its openai clients "
                        f"built (an API key set); got {llm!r:.80}")
    update: dict[str, Any] = {}
    if root is not None:
        update["root_client"] = wrapped = wrap(root, **options)
        update["client"] = wrapped.chat.completions
    if root_async is not None:
        update["root_async_client"] = wrapped = wrap(root_async, **options)
        update["async_client"] = wrapped.chat.completions
    return llm.model_copy(update=update)


def _generate(prompt: str | None = None, messages: Any = None, model: str | None = None,
              temperature: Any = None, llm: Any = None, params: Any = None) -> Any:
    raise NotImplementedError  # identity and signature only: LangChain makes the call


_generate.__module__ = "langchain"
_generate.__qualname__ = _generate.__name__ = "llm_cache"


class LLMMemoCache(BaseCache):
    """LangChain's LLM cache (``set_llm_cache(LLMMemoCache())``, or a model's ``cache=``) kept by llm_memo.

    Entries live in `cache` (default: llm_memo's default cache, so its tiers, TTL policy,
    invalidation, stats and savings ledger apply) and keep LangChain's generations and message
    types (tool calls, usage metadata, response metadata) across processes; nothing is pickled.
    An explicit temperature > 0 follows `on_nondeterministic` as it does for ``llm_memo.wrap``.
    """

    def __init__(self, cache: Cache | None = None, *, policy: Any = None, ttl: Any = None,
                 on_nondeterministic: str = "bypass", namespace: str | None = None, version: Any = None) -> None:
        self.engine = Engine(_generate, cache=cache, policy=policy, ttl=ttl, on_nondeterministic=on_nondeterministic,
                             namespace=namespace, version=version, track_source=False)
        self._bypassed: dict[tuple[str, str], None] = {}  # so a bypassed call is counted once, not twice
        self._lock = threading.Lock()

    def lookup(self, prompt: str, llm_string: str) -> list[Generation] | None:
        look = self.engine.lookup((), request_of(prompt, llm_string))
        return self._found(look, prompt, llm_string)

    async def alookup(self, prompt: str, llm_string: str) -> list[Generation] | None:
        look = await self.engine.alookup((), request_of(prompt, llm_string))
        return self._found(look, prompt, llm_string)

    def update(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        if self._was_bypassed(prompt, llm_string):
            return
        look = self.engine.lookup((), request_of(prompt, llm_string), options=_STORE)
        if look.plan is not None:
            stored = stored_form(return_val)
            self.engine.run(look, lambda: stored)

    async def aupdate(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        if self._was_bypassed(prompt, llm_string):
            return
        look = await self.engine.alookup((), request_of(prompt, llm_string), options=_STORE)
        if look.plan is not None:
            stored = stored_form(return_val)

            async def compute() -> Any:
                return stored

            await self.engine.arun(look, compute)

    def clear(self, **kwargs: Any) -> None:
        """Remove this cache's LangChain entries (only those: the cache may hold other functions')."""
        cache = self.engine.current_cache()
        if cache is not None:
            cache.invalidate(tag=self.engine.tag)

    async def aclear(self, **kwargs: Any) -> None:
        await asyncio.to_thread(self.clear)

    def stats(self) -> Any:
        """This cache's hits, misses, bypasses and savings (an llm_memo.Stats)."""
        return self.engine.stats()

    def _found(self, look: Any, prompt: str, llm_string: str) -> list[Generation] | None:
        if look.plan is None:
            if look.cache is not None:
                self._remember_bypass(prompt, llm_string)
            return None
        if look.hit is None:
            return None
        return generations_of(self.engine.serve(look))

    def _remember_bypass(self, prompt: str, llm_string: str) -> None:
        with self._lock:
            self._bypassed[prompt, llm_string] = None
            while len(self._bypassed) > _PENDING_LIMIT:
                del self._bypassed[next(iter(self._bypassed))]

    def _was_bypassed(self, prompt: str, llm_string: str) -> bool:
        with self._lock:
            if (prompt, llm_string) not in self._bypassed:
                return False
            del self._bypassed[prompt, llm_string]
            return True


# ---- keys: LangChain's two strings as data ------------------------------------------------------

def request_of(prompt: str, llm_string: str) -> dict[str, Any]:
    """The call as key data: messages (or prompt text), model, temperature, model and call settings."""
    messages = _messages(prompt)
    llm, params = _llm_settings(llm_string)
    constructed = llm.get("kwargs") if isinstance(llm, dict) and isinstance(llm.get("kwargs"), dict) else {}
    given = params if isinstance(params, dict) else {}
    model = next((v for source in (given, constructed) for name in ("model", "model_name")
                  if isinstance(v := source.get(name), str)), None)
    temperature = given.get("temperature", constructed.get("temperature"))
    request = {"prompt": prompt if messages is None else None, "messages": messages, "model": model,
               "temperature": temperature, "llm": llm, "params": params}
    return {k: v for k, v in request.items() if v is not None}


def _messages(prompt: str) -> list[Any] | None:
    """A chat model's prompt (LangChain JSON of its messages) as data; None for an LLM's text."""
    if not prompt.startswith("[{"):
        return None
    try:
        parsed = json.loads(prompt)
    except ValueError:
        return None
    if isinstance(parsed, list) and all(isinstance(m, dict) and "lc" in m for m in parsed):
        return _normal(parsed)
    return None


@functools.lru_cache(maxsize=256)
def _llm_settings(llm_string: str) -> tuple[Any, Any]:
    """(the model's serialised constructor, the call's settings) of an llm_string, as data where it is.
    Remembered: a model sends the same llm_string with every call (callers never change the result)."""
    llm, rest = None, llm_string
    if llm_string.startswith("{"):
        try:
            parsed, end = json.JSONDecoder().raw_decode(llm_string)
        except ValueError:
            parsed, end = None, 0
        if isinstance(parsed, dict) and llm_string.startswith("---", end):
            llm, rest = _normal(parsed), llm_string[end + 3:]
    return llm, _pairs(rest)


def _pairs(text: str) -> Any:
    """``str(sorted(params.items()))`` back as a dict (None values dropped), or the text itself."""
    try:
        pairs = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    if not isinstance(pairs, list) or not all(isinstance(p, tuple) and len(p) == 2 for p in pairs):
        return text
    return {str(k): _normal(v) for k, v in pairs if v is not None}


def _normal(value: Any) -> Any:
    """Settings as the key sees them: 0 and 0.0 alike, tuples as lists, None-valued settings gone."""
    if type(value) is float and value.is_integer():
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items() if v is not None}
    return value


# ---- values: generations as data and back ------------------------------------------------------

def stored_form(generations: Sequence[Generation]) -> dict[str, Any]:
    """Generations as plain data (messages in LangChain's message dict form), with the usage and
    model the savings ledger reads."""
    items, usage, model = [], {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}, None
    for generation in generations:
        kind = next(c.__name__ for c in type(generation).__mro__ if c.__name__ in _KINDS)
        item: dict[str, Any] = {"kind": kind, "generation_info": generation.generation_info}
        message = getattr(generation, "message", None)
        if message is not None:
            item["message"] = message_to_dict(message)
            for name, count in (getattr(message, "usage_metadata", None) or {}).items():
                if name in usage and isinstance(count, int):
                    usage[name] += count
            model = model or (getattr(message, "response_metadata", None) or {}).get("model_name")
        else:
            item["text"] = generation.text
        items.append(item)
    return {"generations": items, "usage": usage, "model": model}


def generations_of(stored: dict[str, Any]) -> list[Generation]:
    """The generations `stored_form` kept, as LangChain's own classes."""
    generations: list[Generation] = []
    for item in stored["generations"]:
        cls = _KINDS[item["kind"]]
        if "message" in item:
            message = messages_from_dict([item["message"]])[0]
            generations.append(cls(message=message, generation_info=item["generation_info"]))
        else:
            generations.append(cls(text=item["text"], generation_info=item["generation_info"]))
    return generations
