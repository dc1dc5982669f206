"""@llm_cache: a wrapt proxy whose cache methods are real methods, over one engine."""

from __future__ import annotations

import importlib
import inspect
import pickle
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from functools import cache as once
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

import wrapt

from .._engine.engine import Engine
from .._engine.warm import WarmReport, awarm, warm
from .._logic.policy import CachePolicy
from .._logic.records import Stats
from .._storage.cache import Cache

__all__ = ["CachedFunction", "llm_cache"]

P = ParamSpec("P")
R = TypeVar("R", covariant=True)


class CachedFunction(Generic[P, R]):
    """What @llm_cache returns: the function, plus methods to inspect and manage its cache.

    A wrapt proxy: it is still the function for everything else (name, signature, docstring,
    `inspect.isfunction`), and `isinstance(fn, llm_memo.CachedFunction)` tells it apart.
    """

    _self_engine: Engine

    if TYPE_CHECKING:
        def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def _split(self, args: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
        """(the instance a method is bound to, the other arguments) - as wrapt splits a call."""
        return None, args

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The 64-hex key this call would use; nothing is called or stored."""
        instance, args = self._split(args)
        return self._self_engine.key_of(args, kwargs, instance)

    def cache_info(self) -> Stats:
        """This function's hits, misses, bypasses and errors in this process."""
        return self._self_engine.stats()

    def cache_clear(self) -> int:
        """Remove every entry of this function (all versions of it) from its cache."""
        engine = self._self_engine
        cache = engine.current_cache()
        return 0 if cache is None else cache.invalidate(tag=self.__llm_memo_tag__)

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Remove the entry this call would hit; True if there was one."""
        cache = self._self_engine.current_cache()
        return False if cache is None else cache.delete(self.cache_key(*args, **kwargs))

    def warm(self, calls: Iterable[Any], *, concurrency: int = 4, progress: bool = True) -> WarmReport:
        """Run `calls` through this function, skipping the ones already stored.

        Each call is a tuple (positional arguments), a dict (keyword arguments) or anything
        else (the one argument); see llm_memo.WarmReport."""
        return warm(self, calls, concurrency=concurrency, progress=progress,
                    cache=self._self_engine.current_cache())

    async def awarm(self, calls: Iterable[Any], *, concurrency: int = 4, progress: bool = True) -> WarmReport:
        """The async twin of warm (use it inside a running event loop, e.g. a notebook cell)."""
        return await awarm(self, calls, concurrency=concurrency, progress=progress,
                           cache=self._self_engine.current_cache())

    @property
    def __llm_memo_tag__(self) -> str:
        """The tag on every entry of this function (namespace included), for Cache.invalidate."""
        return self._self_engine.tag

    @property
    def cache_function_name(self) -> str:
        """"module.qualname", as used in the function's tag and in `llm-memo ls`."""
        return self._self_engine.function

    def getdoc(self) -> str:
        """The function's docstring, then the cache methods: what help(fn) and IPython's fn? show."""
        return f"{inspect.cleandoc(self.__wrapped__.__doc__ or '')}\n\n{_help_section()}"

    def __dir__(self) -> list[str]:
        """The function's attributes and the cache methods (wrapt would list the function's only)."""
        return sorted({*dir(self.__wrapped__), *_CACHE_METHODS, "cache_function_name", "getdoc", "__wrapped__"})

    def __repr__(self) -> str:
        return f"<llm_memo cached function {self._self_engine.function}>"



def _docstring(proxy: CachedFunction[..., Any]) -> str | None:
    """The function's own docstring; for help() (pydoc), followed by the cache methods.

    Only pydoc sees the addition: tool schemas, prompt frameworks and Sphinx read `__doc__`
    as the user's own text, and some send it to a model.
    """
    doc: str | None = proxy.__wrapped__.__doc__
    return proxy.getdoc() if sys._getframe(1).f_globals.get("__name__") == "pydoc" else doc


_CACHE_METHODS = ("cache_key", "cache_info", "cache_clear", "invalidate", "warm", "awarm")  # as help() lists them


@once
def _help_section() -> str:
    """The lines help(fn) shows below the function's docstring: each cache method and its summary."""
    lines = ["Cached by llm_memo (@llm_cache); cache methods:"]
    for name in _CACHE_METHODS:
        method = getattr(CachedFunction, name)
        summary = inspect.cleandoc(method.__doc__).split("\n")[0]
        lines.append(f"    {name}{_short_signature(method)}: {summary}")
    return "\n".join(lines)


def _short_signature(method: Callable[..., Any]) -> str:
    """`(calls, *, concurrency=4, progress=True)`: the parameters after self, without annotations."""
    signature = inspect.signature(method)
    parameters = [p.replace(annotation=p.empty) for p in list(signature.parameters.values())[1:]]
    return str(signature.replace(parameters=parameters, return_annotation=signature.empty))


def _by_name(module: str, qualname: str) -> Any:
    """The object `qualname` names in `module`: how a pickled cached function is found again."""
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


class _BoundCachedFunction(CachedFunction[..., Any], wrapt.BoundFunctionWrapper):  # type: ignore[misc]
    def __reduce_ex__(self, protocol: Any) -> Any:
        if self._self_instance is None:
            return self._self_parent.__reduce_ex__(protocol)
        return getattr, (self._self_instance, self.__wrapped__.__name__)

    def _split(self, args: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
        if self._self_instance is None and self._self_binding == "function" and args:
            return args[0], args[1:]  # Class.method(instance, ...): the instance comes first
        return self._self_instance, args

    def __repr__(self) -> str:
        bound = "" if self._self_instance is None else f" of {self._self_instance!r}"
        return f"<llm_memo cached function {self._self_engine.function}{bound}>"

    @property
    def _self_engine(self) -> Engine:  # type: ignore[override]
        return self._self_parent._self_engine


def _driver(wrapped: Callable[..., Any], engine: Engine) -> Callable[..., Any]:
    """The wrapt wrapper for `wrapped`'s kind (plain, async, generator, async generator), picked
    once: each is a few lines over the engine's adapter API."""
    if inspect.isasyncgenfunction(wrapped):
        def call_async_generator(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            async def chunks() -> AsyncIterator[Any]:  # looked up on first iteration, in the consumer's loop
                look = await engine.alookup(args, kwargs, instance, stream=True)
                async for chunk in await engine.astream(look, lambda: wrapped(*args, **kwargs)):
                    yield chunk
            return chunks()
        return call_async_generator
    if inspect.iscoroutinefunction(wrapped):
        async def acall(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            look = await engine.alookup(args, kwargs, instance)
            return await engine.arun(look, lambda: wrapped(*args, **kwargs))
        return acall
    if inspect.isgeneratorfunction(wrapped):
        def call_generator(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return engine.stream(engine.lookup(args, kwargs, instance, stream=True), lambda: wrapped(*args, **kwargs))
        return call_generator

    def call(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        look = engine.lookup(args, kwargs, instance)
        if look.hit is not None and not look.refresh:
            return engine.serve(look)
        return engine.run(look, lambda: wrapped(*args, **kwargs))
    return call


class _CachedFunction(CachedFunction[..., Any], wrapt.FunctionWrapper):  # type: ignore[misc]
    __bound_function_wrapper__ = _BoundCachedFunction

    def __init__(self, wrapped: Callable[..., Any], engine: Engine) -> None:
        super().__init__(wrapped, _driver(wrapped, engine))
        self._self_engine = engine

    def __reduce_ex__(self, protocol: Any) -> Any:
        """Pickle by reference, as pickle does plain functions (multiprocessing, spawn, joblib)."""
        module, qualname = self.__wrapped__.__module__, self.__wrapped__.__qualname__
        if "<locals>" in qualname:
            raise pickle.PicklingError(f"cannot pickle {module}.{qualname}: a cached function defined inside "
                                       "another function has no importable name; define it at module level")
        return _by_name, (module, qualname)


# After the classes exist: wrapt's metaclass puts its own __doc__ (the function's) on each proxy class.
_CachedFunction.__doc__ = _BoundCachedFunction.__doc__ = property(_docstring)  # type: ignore[assignment]


@overload
def llm_cache(func: Callable[P, R]) -> CachedFunction[P, R]: ...
@overload
def llm_cache(
    func: None = None, *, policy: CachePolicy | str | Callable[[str], Any] | None = None, ttl: Any = None,
    cache: Cache | None = None, ignore: Iterable[str] = (), key: Callable[..., Any] | None = None,
    version: Any = None, tags: Sequence[str] = (), namespace: str | None = None,
    on_nondeterministic: str = "bypass", on_unset_temperature: str = "cache", intent_arg: str | None = None,
    track_source: bool = True,
    semantic: Any = None, lease: float = 10.0, early_refresh: float = 0.0,
) -> Callable[[Callable[P, R]], CachedFunction[P, R]]: ...


def llm_cache(func: Any = None, *, policy: Any = None, ttl: Any = None, cache: Cache | None = None,
              ignore: Iterable[str] = (), key: Callable[..., Any] | None = None, version: Any = None,
              tags: Sequence[str] = (), namespace: str | None = None, on_nondeterministic: str = "bypass",
              on_unset_temperature: str = "cache",
              intent_arg: str | None = None, track_source: bool = True, semantic: Any = None,
              lease: float = 10.0, early_refresh: float = 0.0) -> Any:
    """Memoize a prompt function (plain, async, generator or async generator; methods too).

    policy: "auto" (classify the prompt's intent), a CachePolicy or its name, or a callable
        taking the prompt text; default: the process default, read at each call
        (configure(policy=...), else LLM_MEMO_POLICY, else "auto").
        ttl: seconds or timedelta; overrides the policy.
    cache: the Cache to use (default: the process default, see configure()).
    ignore: parameters left out of the key. key: a callable taking the call's arguments and
        returning the value to key by instead. version / namespace: part of every key.
    tags: added to every entry. on_nondeterministic: "bypass", "raise" or "cache" for calls
        with temperature > 0. on_unset_temperature: "cache" (default: a call that sets no
        temperature keeps the provider's first sample) or "bypass" (treat it as temperature 1.0). intent_arg: the parameter holding the prompt text.
    track_source: key by a fingerprint of the function's source (edit it: fresh results).
    semantic: an llm_memo.SemanticMatch to serve paraphrases of cached prompts (off by default).
    lease: seconds a lease on a key's computation lasts unless its holder renews it (it does while
        it lives), so it bounds how long a holder on another machine that died blocks the others;
        0 turns cross-process single-flight off.
    early_refresh: for plain and async functions, recompute a hot entry shortly before it
        expires (XFetch's beta: 1.0 is the usual choice, 0 turns it off): one caller runs the
        function while every other keeps being served the stored answer.

    For methods, ``self``/``cls`` is not part of the key; define ``__llm_memo_key__(self)``
    on the class to key by the instance's state.
    """
    options = dict(policy=policy, ttl=ttl, cache=cache, ignore=ignore, key=key, version=version, tags=tags,
                   namespace=namespace, on_nondeterministic=on_nondeterministic,
                   on_unset_temperature=on_unset_temperature, intent_arg=intent_arg,
                   track_source=track_source, semantic=semantic, lease=lease, early_refresh=early_refresh)
    if func is None:
        return lambda f: llm_cache(f, **options)
    if not callable(func):
        hint = f" Did you mean @llm_cache(policy={func!r})?" if isinstance(func, str) else ""
        raise TypeError(f"llm_cache takes the function to decorate, or keyword options; got {func!r}.{hint}")
    return _CachedFunction(func, Engine(func, **options))
