"""The one type-tag table: every tag it holds round-trips, and keys and values spell each type alike.

Keys (`canonical`) and stored values (`codec`) read the same table, `llm_memo._logic.tags`; the
golden vectors in test_keys/test_canonical and the cache directories in tests/fixtures pin the
bytes, this pins the agreement.
"""

from __future__ import annotations

import datetime as dt
import decimal
import pathlib
import uuid
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_memo._logic.canonical import to_tree
from llm_memo._logic.codec import UnencodableValue, decode_value, encode_value
from llm_memo._logic.tags import DECODERS, TAG

SETTINGS = settings(max_examples=200, deadline=None)

zones = st.none() | st.integers(-23 * 60, 23 * 60).map(lambda minutes: dt.timezone(dt.timedelta(minutes=minutes)))
path_text = st.text("ab./", max_size=12)

# A value of every tag in the table, in the exact classes a stored value may have; each draws
# only values JSON cannot say, so each comes out tagged.
BY_TAG: dict[str, st.SearchStrategy[Any]] = {
    "str": st.text(max_size=8).map(lambda text: text + "\ud800"),  # a lone surrogate
    "int": st.integers(2**64, 2**200) | st.integers(-(2**200), -(2**63) - 1),
    "float": st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    "bytes": st.binary(max_size=40),
    "datetime": st.datetimes(timezones=zones),
    "date": st.dates(),
    "time": st.times(timezones=zones),
    "timedelta": st.timedeltas(),
    "decimal": st.decimals(allow_nan=True, allow_infinity=True, places=None),
    "uuid": st.uuids(),
    "path": st.one_of(
        st.builds(pathlib.PurePosixPath, path_text), st.builds(pathlib.Path, path_text),
        # str(PureWindowsPath("//a/")) is "\\\\a\\\\", which parses as "\\a": pathlib's, not the table's
        st.builds(pathlib.PureWindowsPath, path_text.filter(lambda text: not text.startswith("//"))),
    ),
}
tagged_values = st.sampled_from(sorted(BY_TAG)).flatmap(lambda tag: st.tuples(st.just(tag), BY_TAG[tag]))


def same(a: Any, b: Any) -> bool:
    """Equal and of one class; NaNs (float and Decimal) by their spelling."""
    return type(a) is type(b) and (repr(a) == repr(b) or a == b)


def test_every_tag_of_the_table_has_values_here() -> None:
    assert set(BY_TAG) == set(DECODERS)


@SETTINGS
@given(tagged_values)
def test_every_tag_round_trips_as_its_class(case: tuple[str, Any]) -> None:
    tag, value = case
    data, flags = encode_value(value)
    assert orjson.loads(data)[TAG] == tag
    assert same(decode_value(data, flags), value)
    inside, flags = encode_value({"k": [value, (value,)]})  # nested, beside a tuple
    back = decode_value(inside, flags)
    assert same(back["k"][0], value) and same(back["k"][1][0], value)


@SETTINGS
@given(tagged_values)
def test_keys_and_values_spell_each_type_alike(case: tuple[str, Any]) -> None:
    tag, value = case
    key, stored = to_tree(value), orjson.loads(encode_value(value)[0])
    assert key[TAG] == stored[TAG] == tag
    if type(value) is pathlib.PosixPath:  # stored as `local`, to come back as a Path; one path to a key
        assert (key["v"], stored["v"]) == (["posix", str(value)], ["local", str(value)])
    else:
        assert key["v"] == stored["v"]


class Stamp(dt.datetime):
    pass


class Amount(decimal.Decimal):
    pass


class Id(uuid.UUID):
    pass


@pytest.mark.parametrize(("subclassed", "base"), [
    (Stamp(2024, 5, 6, 7, 8, 9), dt.datetime(2024, 5, 6, 7, 8, 9)),
    (Amount("1.50"), decimal.Decimal("1.50")),
    (Id(int=7), uuid.UUID(int=7)),
])
def test_a_key_takes_any_instance_and_a_stored_value_only_the_exact_class(subclassed: Any, base: Any) -> None:
    assert to_tree(subclassed) == to_tree(base)  # a key: the value it spells
    with pytest.raises(UnencodableValue):  # a value: it would come back as another class
        encode_value(subclassed)
