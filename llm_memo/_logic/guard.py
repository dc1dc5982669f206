"""The determinism guard: find a call's temperature and decide whether to cache it (pure).

Where the temperature of a call is looked for (the README's determinism note says the same):

1. A parameter named ``temperature``, or a ``**kwargs`` entry of that name. Its value decides
   whatever it is (one that is not a number counts as sampling), and it wins over rule 2.
2. Otherwise, the ``temperature`` of a settings object: a dict (any Mapping), a dataclass
   instance or a pydantic model (its extra fields included) that is an argument, a
   ``**kwargs`` entry, or sits under a key or field named like generation settings
   (``SETTINGS_NAMES``: generation, config, params, sampling, options, model_settings ...)
   of one, at most ``MAX_DEPTH`` objects down. Here only a number or a string is a
   temperature: a dict or a list under that name is data (a JSON schema's "temperature"
   property), and so is anything below a name that is not a settings name
   (``record={"sensor": {"temperature": 22.5}}``). Lists (messages, documents) are never
   searched. When several temperatures are found, the call samples if any of them does.

An argument that is data with a top-level ``temperature`` field (``reading=Reading(temperature=22.5)``)
cannot be told from settings, so it is taken as one: the call bypasses with a warning naming
the temperature, and ``on_nondeterministic="cache"`` caches such a function.
"""

from __future__ import annotations

import dataclasses
import enum
import numbers
import sys
from collections.abc import Mapping


class Verdict(enum.Enum):
    """What the engine does with a call."""

    CACHE = "cache"
    BYPASS = "bypass"
    RAISE = "raise"


MODES = ("bypass", "raise", "cache")
MAX_DEPTH = 5  # settings objects below an argument, the argument included
SETTINGS_NAMES = frozenset({
    "config", "configuration", "extra_body", "gen_kwargs", "generation", "generation_config",
    "generation_kwargs", "generation_settings", "inference_config", "inference_params", "kwargs",
    "llm_config", "llm_kwargs", "model_kwargs", "model_params", "model_settings", "options",
    "parameters", "params", "sampling", "sampling_params", "settings",
})
_WANTED = SETTINGS_NAMES | {"temperature"}
_NOT_SETTINGS = frozenset({str, int, float, bool, type(None), bytes, list, tuple})
_fields: dict[type, tuple[str, ...] | None] = {}  # class -> its fields worth reading, None: not settings


def validate_mode(on_nondeterministic: object) -> str:
    """Check `on_nondeterministic=` at decoration time and return it in lower case."""
    if isinstance(on_nondeterministic, str) and on_nondeterministic.strip().lower() in MODES:
        return on_nondeterministic.strip().lower()
    raise ValueError(
        f"on_nondeterministic={on_nondeterministic!r} is not a mode; use one of "
        "'bypass' (call through uncached), 'raise' (refuse the call) or 'cache' (record one sample)"
    )


def find_temperature(arguments: Mapping[str, object], spread: str | None = None) -> object | None:
    """The call's temperature by the rule in the module docstring, or None when it names none.

    `spread` names the ``**kwargs`` parameter, whose entries count as arguments.
    """
    temperature = arguments.get("temperature")
    if temperature is not None:
        return temperature
    extra = arguments.get(spread) if spread is not None else None
    if type(extra) is not dict:  # the binder gives **kwargs as a dict
        extra = None
    elif extra.get("temperature") is not None:
        return extra["temperature"]
    level = [v for v in arguments.values() if type(v) not in _NOT_SETTINGS and v is not extra]
    if extra:
        level += [v for v in extra.values() if type(v) not in _NOT_SETTINGS]
    return _search(level) if level else None


def _search(level: list[object]) -> object | None:
    """Breadth-first through settings objects: the first sampling temperature, else the first found."""
    found = None
    for _ in range(MAX_DEPTH):
        below: list[object] = []
        for value in level:
            view = value if type(value) is dict else _settings_view(value)
            if view is None:
                continue
            candidate = view.get("temperature")
            if candidate is not None and isinstance(candidate, (str, numbers.Number)):
                if is_nondeterministic(candidate):
                    return candidate
                found = candidate if found is None else found
            if len(view) < len(SETTINGS_NAMES):  # look up from the smaller side
                for k, v in view.items():
                    if k in SETTINGS_NAMES:
                        below.append(v)
            else:
                for k in SETTINGS_NAMES:
                    if k in view:
                        below.append(view[k])
        if not below:
            break
        level = below
    return found


def _settings_view(value: object) -> Mapping[object, object] | None:
    """`value` as a mapping of its settings-like entries, or None when it is no settings object."""
    if isinstance(value, Mapping):
        return value
    cls = type(value)
    names = _fields[cls] if cls in _fields else _fields.setdefault(cls, _settings_fields(cls))
    if names is None:
        return None
    view = {name: getattr(value, name, None) for name in names}
    extra = getattr(value, "__pydantic_extra__", None)  # pydantic 2, extra="allow"
    if isinstance(extra, dict):
        view.update((k, v) for k, v in extra.items() if k in _WANTED)
    return view


def _settings_fields(cls: type) -> tuple[str, ...] | None:
    """The fields of a dataclass or pydantic model class that the search reads, or None."""
    if dataclasses.is_dataclass(cls):
        names = [f.name for f in dataclasses.fields(cls)]
    else:
        pydantic = sys.modules.get("pydantic")  # never import it: only its models need it
        if pydantic is None or not issubclass(cls, pydantic.BaseModel):
            return None
        names = list(getattr(cls, "model_fields", None) or getattr(cls, "__fields__", {}))
    return tuple(name for name in names if name in _WANTED)


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
