"""The determinism guard: temperature lookup, the sampling test and the verdict table."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llm_memo._guard import (
    MODES,
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


def test_temperature_is_looked_up_one_level_deep_only() -> None:
    assert find_temperature({}) is None
    assert find_temperature({"prompt": "temperature"}) is None
    assert find_temperature({"outer": {"inner": {"temperature": 1.0}}}) is None
    assert find_temperature({"messages": [{"temperature": 1.0}]}) is None


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
