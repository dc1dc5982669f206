"""The determinism guard: find a call's temperature and decide whether to cache it (pure)."""

from __future__ import annotations

import enum
from collections.abc import Mapping


class Verdict(enum.Enum):
    """What the engine does with a call."""

    CACHE = "cache"
    BYPASS = "bypass"
    RAISE = "raise"


MODES = ("bypass", "raise", "cache")


def validate_mode(on_nondeterministic: object) -> str:
    """Check `on_nondeterministic=` at decoration time and return it in lower case."""
    if isinstance(on_nondeterministic, str) and on_nondeterministic.strip().lower() in MODES:
        return on_nondeterministic.strip().lower()
    raise ValueError(
        f"on_nondeterministic={on_nondeterministic!r} is not a mode; use one of "
        "'bypass' (call through uncached), 'raise' (refuse the call) or 'cache' (record one sample)"
    )


def find_temperature(arguments: Mapping[str, object]) -> object | None:
    """The call's temperature: a `temperature` argument, else that key of a top-level dict argument."""
    temperature = arguments.get("temperature")
    if temperature is not None:
        return temperature
    # One level only: this runs on every call, and message lists can be long.
    for value in arguments.values():
        if isinstance(value, dict):
            temperature = value.get("temperature")
            if temperature is not None:
                return temperature
    return None


def is_nondeterministic(temperature: object, *, default: float | None = None) -> bool:
    """Whether a call at `temperature` samples (None means `default`, None means deterministic)."""
    if temperature is None:
        return default is not None and is_nondeterministic(default)
    # bool is an int, but temperature=True says nothing about sampling, so it is not trusted.
    if isinstance(temperature, bool):
        return True
    if isinstance(temperature, int):
        return temperature > 0
    try:
        value = float(temperature)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return True  # an unreadable temperature is not proof of determinism
    return not value <= 0.0  # NaN fails every comparison, so it counts as sampling


def decide(mode: str, nondeterministic: bool) -> Verdict:
    """CACHE for deterministic calls, else the verdict named by `mode`."""
    return Verdict(mode) if nondeterministic else Verdict.CACHE
