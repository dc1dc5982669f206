"""What one call means for the cache: its key, the guard's verdict, its lifetime and metadata.

`Planner.plan` is the one place where a call becomes a key. Front-ends hand it the call's
arguments as they have them (a function's args and kwargs, or an HTTP request's normalised body).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from .._errors import NonDeterministicCallError, NonDeterministicCallWarning
from .._logic.guard import Verdict, decide, find_temperature, is_nondeterministic, validate_mode
from .._logic.keys import KeyMaker
from .._logic.policy import (
    CachePolicy,
    PolicyCallable,
    extract_prompt,
    resolve_lifetime,
    validate_policy,
    validate_ttl,
)
from .._logic.redact import preview
from .._logic.trust import allow_returned
from .config import default_policy

__all__ = ["Plan", "Planner"]

logger = logging.getLogger("llm_memo")
_LIBRARIES = ("llm_memo", "openai", "httpx", "httpx2", "wrapt", "asyncio")  # between the user and the warning


class Plan(NamedTuple):
    """What one call means for the cache. key is None for a call that bypasses it; started is
    the perf_counter() reading when planning began (the DEBUG log reports lookup time from it)."""

    key: str | None
    arguments: dict[str, Any]
    started: float


def _stacklevel_of_caller() -> int:
    """The `stacklevel` of the first frame outside llm_memo and the libraries it sits in.

    A warning then points at the user's line, however deep the SDK, the HTTP client and the
    sync/async/generator drivers nest the call (skip_file_prefixes does this from 3.12 on).
    """
    prefixes = tuple(os.path.dirname(module.__file__) + os.sep for name in _LIBRARIES
                     if (module := sys.modules.get(name)) is not None and module.__file__)
    frame, level = sys._getframe(2), 2  # the caller of the function that calls warnings.warn
    while frame.f_back is not None and frame.f_code.co_filename.startswith(prefixes):
        frame, level = frame.f_back, level + 1
    return level


def _unset_mode(value: object) -> str:
    if value in ("cache", "bypass"):
        return value  # type: ignore[return-value]
    raise ValueError(f"on_unset_temperature={value!r} is not a mode; use 'cache' (keep the provider's first "
                     "sample of a call that sets no temperature) or 'bypass' (call it uncached)")


def _own_policy(policy: Any) -> CachePolicy | PolicyCallable | None:
    """A function's own policy=, checked; None: the process default, read at each call (so
    configure(policy=...) after decorating applies), checked now that a bad LLM_MEMO_POLICY
    fails at decoration rather than after a call was paid for."""
    if policy is None:
        default_policy()
        return None
    return validate_policy(policy)


class Planner:
    """How one function's calls are keyed, guarded, time-limited and described."""

    def __init__(self, func: Callable[..., Any], *, policy: Any = None, ttl: Any = None,
                 ignore: Iterable[str] = (), key: Callable[..., Any] | None = None, version: Any = None,
                 tags: Sequence[str] = (), namespace: str | None = None, on_nondeterministic: str = "bypass",
                 intent_arg: str | None = None, track_source: bool = True,
                 on_unset_temperature: str = "cache", deterministic: bool = False,
                 shown: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        if key is not None and not callable(key):
            raise TypeError(f"key= takes a callable returning a keyable value; got {key!r}")
        if namespace is not None and not isinstance(namespace, str):
            raise TypeError(f"namespace= takes a str; got namespace={namespace!r}")
        if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
            raise TypeError(f"tags= takes a list of str; got tags={tags!r}")
        self.policy = _own_policy(policy)
        self.ttl = validate_ttl(ttl)
        self.mode = validate_mode(on_nondeterministic)
        self.keys = KeyMaker(func, ignore=ignore, version=version, namespace=namespace, track_source=track_source)
        if intent_arg is not None and intent_arg not in self.keys.signature.parameters:
            raise ValueError(f"intent_arg={intent_arg!r} is not a parameter; its parameters are "
                             f"{list(self.keys.signature.parameters)!r}")
        self.key_function = key
        self.intent_arg = intent_arg
        unset = _unset_mode(on_unset_temperature)
        # "bypass": a call that sets no temperature samples at the provider's default (about 1.0)
        self.default_temperature = 1.0 if unset == "bypass" and not deterministic else None
        parameters = self.keys.signature.parameters
        self._tell_unset = not deterministic and ("temperature" in parameters or self.keys.var_keyword is not None)
        self.function = self.keys.function
        scope = f"{namespace}/" if namespace else ""  # invalidating one tenant's function spares the others
        self.tags = (f"fn:{scope}{self.function}", *tags)
        allow_returned(func)  # what the function is declared to return may be rebuilt from the cache
        self.shown = shown  # the arguments as an entry's metadata shows them (None: as they are)
        self._warned = False

    def plan(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Plan:
        """Bind, guard and key one call; raises before the body runs for caller mistakes."""
        started = time.perf_counter()
        full = args if instance is None else (instance, *args)  # wrapt hands methods their instance apart
        keys = self.keys
        arguments = keys.binder.bind(full, kwargs)
        temperature = find_temperature(arguments, keys.var_keyword)
        if (temperature is not None or self.default_temperature is not None or self._tell_unset) \
                and self._verdict(temperature) is Verdict.BYPASS:
            return Plan(None, arguments, started)
        if self.key_function is not None:
            return Plan(keys.key({"\x00key": self.key_function(*args, **kwargs)}), arguments, started)
        return Plan(keys.key(keys.keyed_arguments(arguments, instance)), arguments, started)

    def guard(self, arguments: dict[str, Any]) -> Verdict:
        """The guard's verdict on bound arguments; raises NonDeterministicCallError in "raise" mode."""
        return self._verdict(find_temperature(arguments, self.keys.var_keyword))

    def _verdict(self, temperature: Any) -> Verdict:
        if temperature is None and self.default_temperature is None:
            if self._tell_unset:
                self._tell_unset = False
                logger.info("llm_memo: calls of %s that set no temperature are cached (the provider's first "
                            "sample is kept); pass on_unset_temperature='bypass' to call them uncached",
                            self.function)
            return Verdict.CACHE
        verdict = decide(self.mode, is_nondeterministic(temperature, default=self.default_temperature))
        if verdict is Verdict.RAISE:
            raise NonDeterministicCallError(self.function, temperature)
        if verdict is Verdict.BYPASS:
            self._warn_bypass(temperature)
        return verdict

    def check(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise NonDeterministicCallError if the guard refuses the call; nothing is keyed."""
        if self.mode == "raise":
            self.guard(self.keys.binder.bind(args, kwargs))

    def key_of(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The key of a call whatever the guard says (fn.cache_key)."""
        arguments = self.keys.binder.bind(args if instance is None else (instance, *args), kwargs)
        return self._key(arguments, instance, args, kwargs)

    def _key(self, arguments: dict[str, Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        if self.key_function is not None:
            return self.keys.key({"\x00key": self.key_function(*args, **kwargs)})
        return self.keys.key(self.keys.keyed_arguments(arguments, instance))

    def _warn_bypass(self, temperature: Any) -> None:
        if not self._warned:
            self._warned = True
            called = (f"with temperature={temperature!r}" if temperature is not None
                      else "with temperature not set (the provider samples at its default)")
            warnings.warn(
                f"{self.function}() was called {called}: its answers vary, so llm_memo calls it "
                "uncached. Pass temperature=0 to cache it, or choose on_nondeterministic='cache' "
                "(record one sample) or 'raise'.",
                NonDeterministicCallWarning, stacklevel=_stacklevel_of_caller(),
            )

    def lifetime(self, arguments: dict[str, Any]) -> tuple[Any, float | None]:
        """(policy used, seconds to keep; 0 stores nothing, None never expires)."""
        prompt = extract_prompt(arguments, self.intent_arg)
        return resolve_lifetime(default_policy() if self.policy is None else self.policy, self.ttl, prompt)

    def metadata(self, arguments: dict[str, Any], policy: Any) -> dict[str, Any]:
        """What an entry records about the call that produced it (secrets redacted)."""
        model = arguments.get("model")
        shown = self.shown(arguments) if self.shown is not None else arguments
        return {
            "function": self.function,
            "policy": getattr(policy, "value", None),
            "model": model if isinstance(model, str) else None,
            "args": {k: preview(v, name=k) for k, v in shown.items() if k not in ("self", "cls")},
        }

    def entry_tags(self, arguments: dict[str, Any], extra: Sequence[str] = ()) -> tuple[str, ...]:
        """The function tag, a model tag when the call names a model, the user's tags and `extra`."""
        model = arguments.get("model")
        tags = (*self.tags, f"model:{model}") if isinstance(model, str) else self.tags
        return (*tags, *(t for t in extra if t not in tags)) if extra else tags
