"""The determinism guard: temperature lookup, the sampling test and the verdict table."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llm_memo._logic.guard import (
    MAX_DEPTH,
    MODES,
    SETTINGS_NAMES,
    Verdict,
    decide,
    find_temperature,
    is_nondeterministic,
    validate_mode,
)

# -- validate_mode -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_validate_mode_accepts_the_modes(mode: str) -> None:
    assert validate_mode(mode) == mode
    assert validate_mode(f" {mode.upper()} ") == mode


@pytest.mark.parametrize("bad", ["ignore", "", None, 1, ["cache"]])
def test_validate_mode_message(bad: object) -> None:
    with pytest.raises(ValueError) as raised:
        validate_mode(bad)
    message = str(raised.value)
    assert message.startswith(f"on_nondeterministic={bad!r} is not a mode")
    assert all(f"'{mode}'" in message for mode in MODES)


# -- find_temperature --------------------------------------------------------------------------


def test_temperature_parameter() -> None:
    assert find_temperature({"prompt": "hi", "temperature": 0.7}) == 0.7
    assert find_temperature({"temperature": 0}) == 0


def test_temperature_in_dict_arguments() -> None:
    assert find_temperature({"prompt": "hi", "kwargs": {"temperature": 0.2}}) == 0.2
    assert find_temperature({"params": {"top_p": 1, "temperature": 0.7}}) == 0.7
    assert find_temperature({"extra_body": {"temperature": "0.5"}}) == "0.5"
    # A parameter left at None does not hide a temperature passed in a settings dict.
    assert find_temperature({"temperature": None, "params": {"temperature": 1.0}}) == 1.0
    assert find_temperature({"temperature": 0.0, "params": {"temperature": 1.0}}) == 0.0


def test_temperature_is_not_looked_up_below_data() -> None:
    assert find_temperature({}) is None
    assert find_temperature({"prompt": "temperature"}) is None
    assert find_temperature({"outer": {"inner": {"temperature": 1.0}}}) is None
    assert find_temperature({"messages": [{"temperature": 1.0}]}) is None
    assert find_temperature({"options": [{"temperature": 1.0}]}) is None  # lists are data
    assert find_temperature({"schema": {"temperature": {"type": "number"}}}) is None
    assert find_temperature({"params": {"temperature": [0.5]}}) is None


@dataclasses.dataclass
class Generation:
    temperature: Any = None
    max_tokens: int = 16
    sampling: Any = None


class Settings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    temperature: Any = None
    config: Any = None


def test_temperature_in_dataclass_and_pydantic_settings() -> None:
    assert find_temperature({"settings": Generation(temperature=0.7)}) == 0.7
    assert find_temperature({"settings": Settings(temperature=0.2)}) == 0.2
    assert find_temperature({"s": Settings(generation={"temperature": 0.3})}) == 0.3  # an extra field
    assert find_temperature({"s": Settings(temperature=0)}) == 0
    assert find_temperature({"s": Generation()}) is None
    assert find_temperature({"s": Settings(note={"temperature": 1})}) is None  # "note" is not settings


def test_kwargs_entries_count_as_arguments() -> None:
    kwargs = {"generation": {"temperature": 0.7}}
    assert find_temperature({"prompt": "p", "kw": kwargs}, "kw") == 0.7
    assert find_temperature({"prompt": "p", "kw": {"temperature": "hot"}}, "kw") == "hot"  # as a parameter
    assert find_temperature({"prompt": "p", "kw": {"x": Generation(temperature=1)}}, "kw") == 1
    # Without `spread`, the **kwargs dict is one dict argument: its entries are a level down.
    assert find_temperature({"prompt": "p", "kw": {"x": {"temperature": 1}}}) is None


def test_settings_nested_under_settings_names_are_searched_to_max_depth() -> None:
    node: Any = {"temperature": 0.9}
    for _ in range(MAX_DEPTH - 1):
        node = {"config": node}
    assert find_temperature({"request": node}) == 0.9
    assert find_temperature({"request": {"params": node}}) is None  # one level too deep
    looped: dict[str, Any] = {"settings": None}
    looped["settings"] = looped
    assert find_temperature({"request": looped}) is None  # a cycle ends at MAX_DEPTH


def test_a_sampling_temperature_anywhere_wins_over_a_zero_elsewhere() -> None:
    arguments = {"a": {"temperature": 0}, "b": {"generation": {"temperature": 0.7}}}
    assert find_temperature(arguments) == 0.7
    assert find_temperature({"a": {"temperature": 0}, "b": {"temperature": 0.0}}) == 0
    assert find_temperature({"temperature": 0, "b": {"temperature": 0.7}}) == 0  # the parameter decides


CONTAINERS = {
    "dict": lambda name, inner: {name: inner},
    "dataclass": lambda name, inner: Generation(sampling=inner) if name == "sampling" else None,
    "pydantic": lambda name, inner: Settings(**{name: inner}),
}


def _leaf(kind: str, temperature: float) -> Any:
    return {"dict": {"temperature": temperature}, "dataclass": Generation(temperature=temperature),
            "pydantic": Settings(temperature=temperature)}[kind]


@given(st.lists(st.tuples(st.sampled_from(sorted(SETTINGS_NAMES)), st.sampled_from(sorted(CONTAINERS))),
                max_size=MAX_DEPTH - 1),
       st.sampled_from(sorted(CONTAINERS)), st.floats(0, 2), st.booleans())
def test_a_temperature_under_settings_names_is_found(path: list[tuple[str, str]], leaf: str, temperature: float,
                                                    through_kwargs: bool) -> None:
    node = _leaf(leaf, temperature)
    for name, kind in reversed(path):
        if kind == "dataclass":
            name = "sampling"  # the dataclass's settings field
        node = CONTAINERS[kind](name, node)
    arguments = {"prompt": "p", "kw": {"arg": node}} if through_kwargs else {"prompt": "p", "arg": node}
    assert find_temperature(arguments, "kw") == temperature
    noise = {**arguments, "messages": [{"temperature": 1.5}], "record": {"data": {"temperature": 22.5}}}
    assert find_temperature(noise, "kw") == temperature


@given(st.lists(st.sampled_from(sorted(SETTINGS_NAMES)), max_size=MAX_DEPTH - 2),
       st.text(min_size=1, max_size=8).filter(lambda n: n not in SETTINGS_NAMES and n != "temperature"),
       st.floats(0.1, 2))
def test_a_temperature_below_a_name_that_is_not_settings_is_data(path: list[str], name: str,
                                                                 temperature: float) -> None:
    node: Any = {name: {"temperature": temperature}}
    for outer in reversed(path):
        node = {outer: node}
    assert find_temperature({"arg": node}) is None


# -- is_nondeterministic -----------------------------------------------------------------------


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_sampling_means_positive_temperature(temperature: float) -> None:
    assert is_nondeterministic(temperature) == (temperature > 0)
    assert is_nondeterministic(repr(temperature)) == (temperature > 0)


@given(st.integers())
def test_integer_temperatures(temperature: int) -> None:
    assert is_nondeterministic(temperature) == (temperature > 0)


@given(st.none() | st.floats(), st.floats())
def test_default_applies_only_when_temperature_is_missing(
    default: float | None, temperature: float
) -> None:
    assert is_nondeterministic(temperature, default=default) == is_nondeterministic(temperature)
    expected = default is not None and is_nondeterministic(default)
    assert is_nondeterministic(None, default=default) == expected


@pytest.mark.parametrize(
    ("temperature", "expected"),
    [
        (0, False),
        (0.0, False),
        (-0.0, False),
        ("0", False),
        (" 0.0 ", False),
        ("0.7", True),
        (0.7, True),
        (2, True),
        (math.nan, True),
        ("nan", True),
        (math.inf, True),
        (True, True),
        (False, True),
        ("warm", True),
        ([0.5], True),
        ({"value": 0}, True),
        (object(), True),
    ],
)
def test_is_nondeterministic_examples(temperature: object, expected: bool) -> None:
    assert is_nondeterministic(temperature) is expected


def test_missing_temperature_uses_the_default() -> None:
    assert is_nondeterministic(None) is False
    assert is_nondeterministic(None, default=1.0) is True
    assert is_nondeterministic(None, default=0.0) is False


# -- decide ------------------------------------------------------------------------------------


@given(st.sampled_from(MODES), st.booleans())
def test_decide_truth_table(mode: str, nondeterministic: bool) -> None:
    expected = {"bypass": Verdict.BYPASS, "raise": Verdict.RAISE, "cache": Verdict.CACHE}[mode]
    assert decide(mode, nondeterministic) is (expected if nondeterministic else Verdict.CACHE)


def test_every_mode_is_a_verdict() -> None:
    assert {Verdict(mode) for mode in MODES} == set(Verdict)
    with pytest.raises(ValueError, match=re.escape("'ignore'")):
        decide("ignore", True)
