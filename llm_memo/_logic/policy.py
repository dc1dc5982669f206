"""Cache policies, intent rules, prompt extraction and lifetime resolution (pure: no I/O, no clock)."""

from __future__ import annotations

import contextlib
import datetime
import enum
import math
import numbers
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias


class CachePolicy(enum.Enum):
    """How long an answer stays cached; each member carries its lifetime in seconds."""

    NEVER = "never"
    SHORT = "short"
    MEDIUM = "medium"
    LONG = "long"
    FOREVER = "forever"

    @property
    def ttl(self) -> float | None:
        """Lifetime in seconds: 0.0 stores nothing, None never expires."""
        return _LIFETIMES[self]

    @classmethod
    def coerce(cls, value: CachePolicy | str, *, argument: str = "policy") -> CachePolicy:
        """Return the member named by `value` (a member, or its name in any case and spacing)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        raise ValueError(f"{argument}={value!r} is not a cache policy; use one of {_choices()}")


_LIFETIMES: dict[CachePolicy, float | None] = {
    CachePolicy.NEVER: 0.0,
    CachePolicy.SHORT: 300.0,
    CachePolicy.MEDIUM: 3600.0,
    CachePolicy.LONG: 86400.0,
    CachePolicy.FOREVER: None,
}

PolicyCallable: TypeAlias = Callable[[str], CachePolicy | str]
PolicySpec: TypeAlias = CachePolicy | str | PolicyCallable  # "auto" means classify_intent


def _choices(*extra: str) -> str:
    """The valid policy names, quoted, for error messages."""
    names = [repr(member.value) for member in CachePolicy] + [repr(name) for name in extra]
    return ", ".join(names)


@dataclass(frozen=True)
class IntentRule:
    """Words or phrases that, found as whole words in a prompt, select a policy."""

    policy: CachePolicy
    words: tuple[str, ...]
    _pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        # A bare string would be iterated letter by letter and match almost everything.
        words = () if isinstance(self.words, str) else tuple(self.words)
        if not words or not all(isinstance(word, str) and word.split() for word in words):
            raise ValueError(
                "IntentRule words must be a non-empty tuple of words or phrases, such as "
                f"('now', 'right now'); got words={self.words!r}"
            )
        object.__setattr__(self, "policy", CachePolicy.coerce(self.policy))
        object.__setattr__(self, "words", words)

    def matches(self, text: str) -> bool:
        """Whether any of the rule's words occurs in `text` as a whole word."""
        if self._pattern is None:  # compiled on first use: `import llm_memo` stays quick
            # Phrases match across any run of whitespace; the lookarounds stand in for \b so that
            # words beginning or ending in punctuation still need a non-word neighbour.
            phrases = (r"\s+".join(map(re.escape, word.split())) for word in self.words)
            pattern = r"(?<!\w)(?:" + "|".join(phrases) + r")(?!\w)"
            object.__setattr__(self, "_pattern", re.compile(pattern, re.IGNORECASE))
        return self._pattern.search(text) is not None  # type: ignore[union-attr]


def _listing(words: str) -> tuple[str, ...]:
    """Split a comma-separated listing of words and phrases."""
    return tuple(word.strip() for word in words.split(","))


DEFAULT_RULES: tuple[IntentRule, ...] = (
    # Answers that go stale within minutes are not worth keeping.
    IntentRule(
        CachePolicy.NEVER,
        _listing(
            "current, currently, today, tonight, tomorrow, yesterday, now, right now, nowadays, "
            "at the moment, as of, up to date, up-to-date, latest, recent, recently, news, "
            "headline, headlines, breaking, price, prices, stock, stocks, exchange rate, "
            "exchange rates, weather, forecast, score, scores, live, trending, this morning, "
            "this week, this month, this year"
        ),
    ),
    # Definitions and explanations hold for a long time.
    IntentRule(
        CachePolicy.LONG,
        _listing(
            "what is, what's, what are, what was, what were, who is, who was, who were, define, "
            "definition, meaning of, explain, explanation, describe, history of, "
            "difference between, tell me about, how does, how do, why does, why do, why is, why are"
        ),
    ),
    # Generated code is reused while a task is in progress.
    IntentRule(
        CachePolicy.MEDIUM,
        _listing(
            "write, code, function, functions, implement, implementation, refactor, script, "
            "program, regex, sql, class, debug, fix, bug, unit test, unit tests, algorithm, "
            "snippet, python, javascript, typescript"
        ),
    ),
)


def classify_intent(
    text: str,
    rules: Sequence[IntentRule] = DEFAULT_RULES,
    default: CachePolicy = CachePolicy.SHORT,
) -> CachePolicy:
    """The policy of the first rule matching `text`, else `default`."""
    for rule in rules:
        if rule.matches(text):
            return rule.policy
    return default


PROMPT_ARGUMENTS: tuple[str, ...] = ("prompt", "query", "question", "text", "input")

# Chat Completions calls text parts "text"; the Responses API calls them "input_text".
_TEXT_PARTS = ("text", "input_text")


def _field(item: object, name: str) -> object:
    """`item[name]` for mappings, `item.name` for objects (pydantic models), else None."""
    if isinstance(item, Mapping):
        return item.get(name)
    return getattr(item, name, None)


def _user_text(messages: object) -> str | None:
    """The text of the user turns of an OpenAI-style message list, joined by newlines."""
    if not isinstance(messages, (list, tuple)):
        return None
    pieces: list[str] = []
    for message in messages:
        if _field(message, "role") != "user":
            continue
        content = _field(message, "content")
        if isinstance(content, str):
            pieces.append(content)
        elif isinstance(content, (list, tuple)):
            for part in content:
                text = _field(part, "text")
                if _field(part, "type") in _TEXT_PARTS and isinstance(text, str):
                    pieces.append(text)
    return "\n".join(pieces) if pieces else None


def _layers(arguments: Mapping[str, object]) -> Iterator[Mapping[str, object]]:
    """The arguments, then the entries of their dict values (**kwargs, settings dicts)."""
    yield arguments
    entries: dict[str, object] = {}
    for value in arguments.values():
        if isinstance(value, dict):
            for key, inner in value.items():
                if isinstance(key, str):
                    entries.setdefault(key, inner)
    yield entries


def _find_prompt(values: Mapping[str, object]) -> str | None:
    """A str prompt argument, else the user turns of a message list, else None."""
    for name in PROMPT_ARGUMENTS:
        value = values.get(name)
        if isinstance(value, str):
            return value
    # `input` may be a Responses API message list, which reads like `messages`.
    for name in ("messages", "input"):
        text = _user_text(values.get(name))
        if text is not None:
            return text
    return None


def extract_prompt(arguments: Mapping[str, object], intent_arg: str | None = None) -> str | None:
    """The prompt text of a bound call, or None when no argument carries one."""
    for values in _layers(arguments):
        if intent_arg is None:
            found = _find_prompt(values)
            if found is not None:
                return found
        elif intent_arg in values:
            value = values[intent_arg]
            return value if isinstance(value, str) else _user_text(value)
    return None


def validate_policy(policy: object) -> CachePolicy | PolicyCallable:
    """Check `policy=` at decoration time: a member, a policy name, "auto" or a callable."""
    if isinstance(policy, CachePolicy):
        return policy
    if isinstance(policy, str):
        if policy.strip().lower() == "auto":
            return classify_intent
        try:
            return CachePolicy.coerce(policy)
        except ValueError:
            raise ValueError(
                f"policy={policy!r} is not a cache policy; "
                f"use one of {_choices('auto')} or a callable"
            ) from None
    if callable(policy):
        return policy
    raise TypeError(
        f"policy must be a CachePolicy, one of {_choices('auto')}, or a callable taking the "
        f"prompt text and returning a policy; got policy={policy!r} ({type(policy).__name__})"
    )


_TTL_HINT = "ttl must be seconds (int or float >= 0) or a datetime.timedelta"


def validate_ttl(ttl: object) -> float | None:
    """Check `ttl=` at decoration time and return it in seconds (None: not given)."""
    if ttl is None:
        return None
    if isinstance(ttl, datetime.timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, numbers.Real) and not isinstance(ttl, bool):
        try:
            seconds = float(ttl)
        except OverflowError:
            seconds = math.inf
    else:
        raise TypeError(f"{_TTL_HINT}; got ttl={ttl!r} ({type(ttl).__name__})")
    if not 0.0 <= seconds < math.inf:  # also rejects NaN, which fails every comparison
        raise ValueError(f"{_TTL_HINT}; got ttl={ttl!r}")
    return seconds + 0.0  # turns -0.0 into 0.0


def resolve_lifetime(
    policy: CachePolicy | PolicyCallable, ttl: float | None, prompt: str | None
) -> tuple[CachePolicy | None, float | None]:
    """The policy used and the lifetime in seconds (0.0: store nothing, None: never expires)."""
    if ttl is not None:
        return None, ttl
    chosen = policy if isinstance(policy, CachePolicy) else policy(prompt or "")
    if isinstance(chosen, CachePolicy):
        return chosen, chosen.ttl
    if isinstance(chosen, str):
        with contextlib.suppress(ValueError):
            member = CachePolicy.coerce(chosen)
            return member, member.ttl
    name = getattr(policy, "__qualname__", None) or repr(policy)
    raise (ValueError if isinstance(chosen, str) else TypeError)(
        f"policy callable {name} returned {chosen!r} ({type(chosen).__name__}), which is not "
        f"a cache policy; it must return a CachePolicy or one of {_choices()}"
    )
