"""Cache keys: bind a call to its signature, then hash identity, source and arguments.

key = sha256(prefix + "\\n" + canonical arguments), where the prefix is the canonical
JSON of [key format, module, qualified name, source fingerprint, version, namespace].
Everything that is fixed per function is computed once, when it is decorated.

A generation setting (a parameter or ``**kwargs`` entry named in ``GENERATION_SETTINGS``)
is keyed by the number it means, so ``temperature=0`` and ``temperature=0.0`` share a key,
as they do under ``wrap``. Its spelling is the one its parameter declares - a float
default, else a float annotation, makes it a float - and otherwise the wire's: an integral
float is keyed as the int (``_openai`` keys request bodies the same way). So a call that
spells a setting as declared keeps the key it always had. Everywhere else 1 and 1.0 differ.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import math
import re
import textwrap
import tokenize
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from .canonical import encode_arguments, to_tree

__all__ = ["GENERATION_SETTINGS", "KEY_FORMAT", "Binder", "KeyMaker", "compute_key", "is_sdk_client",
           "source_fingerprint"]

KEY_FORMAT = "llm_memo/key/1"
GENERATION_SETTINGS = frozenset({
    "temperature", "top_p", "top_k", "min_p", "frequency_penalty", "presence_penalty", "repetition_penalty",
    "max_tokens", "max_completion_tokens", "max_output_tokens", "max_new_tokens", "seed",
})
_FLOAT_WORD = re.compile(r"\bfloat\b")
_INT_WORD = re.compile(r"\bint\b")
_DEF_LINE = re.compile(r"^\s*(async\s+def|def|class)\s")
_SDK_MODULES = frozenset({"openai", "anthropic", "httpx", "httpx2", "groq", "mistralai", "cohere"})
_SDK_CLASS = re.compile(r"(Client|^(Async)?(OpenAI|AzureOpenAI|Anthropic\w*))$")
_FSTRING_START = getattr(tokenize, "FSTRING_START", -1)  # f-strings are tokens of their own from 3.12
_FSTRING_END = getattr(tokenize, "FSTRING_END", -1)
_seen_types: set[type] = set()
_client_types: set[type] = set()


def is_sdk_client(value: Any) -> bool:
    """True for SDK and HTTP client objects, which never belong in a key."""
    return _holds_client([value])


def _holds_client(values: Iterable[Any]) -> bool:
    types = set(map(type, values))
    for cls in types - _seen_types:  # each type is classified once per process
        if cls.__module__.partition(".")[0] in _SDK_MODULES and _SDK_CLASS.search(cls.__name__):
            _client_types.add(cls)
        _seen_types.add(cls)
    return not _client_types.isdisjoint(types)


def source_fingerprint(func: Callable[..., Any]) -> str:
    """SHA-256 of the function's normalised source, or "" when no source is available.

    Decorator lines, comments, blank lines and trailing spaces are left out - outside
    string literals only, so every edit of a prompt template changes the fingerprint -
    and moving or re-indenting the function keeps its entries.
    """
    try:
        source = inspect.getsource(inspect.unwrap(func))
    except (OSError, TypeError):
        return ""
    lines = textwrap.dedent(source).splitlines()
    start = next((i for i, line in enumerate(lines) if _DEF_LINE.match(line)), 0)
    body = _strip_comments(lines[start:])
    return hashlib.sha256("\n".join(body).encode("utf-8", "surrogatepass")).hexdigest()


def _strip_comments(lines: list[str]) -> list[str]:
    """Lines without comments, trailing spaces and blank lines, string literals untouched."""
    comments: dict[int, int] = {}  # row -> column where its comment starts
    literal_rows: set[int] = set()
    try:
        opened = 0
        for tok in tokenize.generate_tokens(io.StringIO("\n".join(lines) + "\n").readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.start[1]
            elif tok.type == tokenize.STRING or tok.type == _FSTRING_END:
                literal_rows.update(range(opened or tok.start[0], tok.end[0] + 1))
                opened = 0
            elif tok.type == _FSTRING_START and not opened:
                opened = tok.start[0]
    except (tokenize.TokenError, SyntaxError):
        pass  # lambdas and fragments: keep what tokenized
    kept = []
    for row, line in enumerate(lines, start=1):
        if row in literal_rows and row not in comments:
            kept.append(line)
            continue
        text = line[: comments.get(row, len(line))].rstrip()
        if text:
            kept.append(text)
    return kept


def compute_key(module: str, qualname: str, fingerprint: str, version: Any, namespace: str | None,
                arguments: Mapping[str, Any]) -> str:
    """The key of one call, from its parts (the reference the golden vectors pin)."""
    prefix = _prefix(module, qualname, fingerprint, version, namespace)
    return hashlib.sha256(prefix + encode_arguments(arguments)).hexdigest()


def _prefix(module: str, qualname: str, fingerprint: str, version: Any, namespace: str | None) -> bytes:
    parts = [KEY_FORMAT, module, qualname, fingerprint, to_tree(version, "version"), namespace]
    return orjson.dumps(parts) + b"\n"


class Binder:
    """Binds positional and keyword arguments to parameter names, defaults applied.

    The common shapes (no ``*args``, no positional-only parameters) bind without
    ``inspect.Signature.bind``, which costs microseconds the hit path cannot spare.
    """

    def __init__(self, signature: inspect.Signature) -> None:
        kinds = inspect.Parameter
        params = [p for p in signature.parameters.values() if p.kind is not kinds.VAR_KEYWORD]
        self.signature = signature
        self.var_keyword = next((p.name for p in signature.parameters.values() if p.kind is kinds.VAR_KEYWORD), None)
        self.simple = all(p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY) for p in params)
        self.positional = tuple(p.name for p in params if p.kind is kinds.POSITIONAL_OR_KEYWORD)
        self.index = {name: i for i, name in enumerate(self.positional)}
        self.names = frozenset(p.name for p in params)
        self.defaults = {p.name: p.default for p in params if p.default is not p.empty}
        self.count = len(params)

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Parameter name -> value; raises TypeError as Python would for a bad call."""
        n = len(args)
        if not self.simple or n > len(self.positional):
            return self._slow(args, kwargs)
        bound = self.defaults.copy()
        if n:
            bound.update(zip(self.positional, args, strict=False))
        extra: dict[str, Any] = {}
        for k, v in kwargs.items():
            if k in self.names:
                if self.index.get(k, n) < n:
                    return self._slow(args, kwargs)  # given twice: let Python word the error
                bound[k] = v
            elif self.var_keyword is None:
                return self._slow(args, kwargs)
            else:
                extra[k] = v
        if len(bound) != self.count:
            return self._slow(args, kwargs)
        if self.var_keyword is not None:
            bound[self.var_keyword] = extra
        return bound

    def _slow(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)


class KeyMaker:
    """Everything a decorated function needs to turn a call into its key."""

    def __init__(self, func: Callable[..., Any], *, ignore: Iterable[str] = (), version: Any = None,
                 namespace: str | None = None, track_source: bool = True) -> None:
        target = inspect.unwrap(func)
        self.module = getattr(target, "__module__", None) or "__main__"
        self.qualname = getattr(target, "__qualname__", None) or getattr(target, "__name__", "function")
        self.function = f"{self.module}.{self.qualname}"
        self.signature = inspect.signature(func)
        self.binder = Binder(self.signature)
        self.ignore, self.ignore_kwargs = _split_ignore(ignore, self.signature)
        self.var_keyword = self.binder.var_keyword
        self.fingerprint = source_fingerprint(func) if track_source else ""
        self.version = version
        self.namespace = namespace
        self._hasher = hashlib.sha256(_prefix(self.module, self.qualname, self.fingerprint, version, namespace))
        first = next(iter(self.signature.parameters), None)
        self.ignore_with_first = self.ignore | {first} if first else self.ignore
        self.settings = _declared_spellings(self.signature)

    def keyed_arguments(self, arguments: dict[str, Any], instance: Any = None) -> dict[str, Any]:
        """The arguments that enter the key: ignored names, the bound instance and clients left out.

        For a method call the instance (``self``/``cls``) is not keyed by identity or state; a
        class whose state changes answers defines ``__llm_memo_key__(self)`` returning a
        keyable value, and that value is keyed instead.
        """
        drop = self.ignore if instance is None else self.ignore_with_first
        if _holds_client(arguments.values()):
            keyed = {k: v for k, v in arguments.items() if k not in drop and type(v) not in _client_types}
        elif drop:
            keyed = {k: v for k, v in arguments.items() if k not in drop}
        else:
            keyed = arguments
        extra = keyed.get(self.var_keyword) if self.var_keyword else None
        if extra and (self.ignore_kwargs or _holds_client(extra.values())):
            keyed = dict(keyed)
            keyed[self.var_keyword] = {k: v for k, v in extra.items()
                                       if k not in self.ignore_kwargs and type(v) not in _client_types}
        if self.settings or extra:
            keyed = self._spell_settings(keyed)
        if instance is not None and not isinstance(instance, type):
            state = getattr(instance, "__llm_memo_key__", None)
            if state is not None:
                keyed = {**keyed, "\x00self": state()}
        return keyed

    def _spell_settings(self, keyed: dict[str, Any]) -> dict[str, Any]:
        """`keyed` with each generation setting spelled as declared (a copy, only if one changed)."""
        changed: dict[str, Any] = {}
        for name, as_float in self.settings.items():
            value = keyed.get(name)
            spelled = _spelled(value, as_float)
            if spelled is not value:
                changed[name] = spelled
        extra = keyed.get(self.var_keyword) if self.var_keyword else None
        if extra:
            entries = {k: _spelled(v, False) for k, v in extra.items() if k in GENERATION_SETTINGS}
            entries = {k: v for k, v in entries.items() if v is not extra[k]}
            if entries:
                changed[self.var_keyword] = {**extra, **entries}  # type: ignore[index]
        return {**keyed, **changed} if changed else keyed

    def key(self, keyed: Mapping[str, Any]) -> str:
        """The 64-hex key for already-filtered arguments."""
        h = self._hasher.copy()
        h.update(encode_arguments(keyed))
        return h.hexdigest()


def _declared_spellings(signature: inspect.Signature) -> dict[str, bool]:
    """Generation-setting parameters -> whether they are keyed as floats (see the module docstring)."""
    kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return {p.name: _declares_float(p) for p in signature.parameters.values()
            if p.name in GENERATION_SETTINGS and p.kind not in kinds}


def _declares_float(parameter: inspect.Parameter) -> bool:
    """A float default, else (no numeric default) an annotation naming float and not int."""
    if type(parameter.default) in (int, float):
        return type(parameter.default) is float
    annotation = parameter.annotation
    if isinstance(annotation, str):  # from __future__ import annotations
        return bool(_FLOAT_WORD.search(annotation)) and not _INT_WORD.search(annotation)
    if annotation is float:
        return True
    args = typing.get_args(annotation)
    return float in args and int not in args


def _spelled(value: Any, as_float: bool) -> Any:
    """`value` spelled as a float or, for an integral float, as the int; `value` itself if unchanged."""
    kind = type(value)
    if kind is float:
        if as_float:
            return 0.0 if value == 0.0 and math.copysign(1.0, value) < 0 else value
        return int(value) if value.is_integer() else value
    if kind is int and as_float:
        try:
            as_number = float(value)
        except OverflowError:
            return value
        return as_number if as_number == value else value
    return value


def _split_ignore(ignore: Iterable[str], signature: inspect.Signature) -> tuple[frozenset[str], frozenset[str]]:
    """(parameter names, names of **kwargs entries) to leave out of the key."""
    names = frozenset([ignore] if isinstance(ignore, str) else ignore)
    has_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    unknown = frozenset(n for n in names if n not in signature.parameters)
    if unknown and not has_var_kw:
        raise ValueError(
            f"ignore={sorted(names)!r} names {sorted(unknown)!r}, which is not a parameter of this "
            f"function; its parameters are {list(signature.parameters)!r}"
        )
    return names - unknown, unknown
