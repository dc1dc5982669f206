"""The canonical encoding: determinism, typing rules, injectivity and hostile arguments.

The rules under test are the ones `llm_memo._logic.canonical` documents: JSON (keys sorted) over a
tree in which everything JSON cannot say unambiguously is a tagged node; list and tuple
encode alike, set and frozenset alike; everything else that differs in type or value
encodes differently; what cannot be keyed raises `UnkeyableArgumentError`.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import decimal
import enum
import math
import pathlib
import socket
import subprocess
import sys
import uuid
from typing import Any

import orjson
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llm_memo
from llm_memo import UnkeyableArgumentError
from llm_memo._logic.canonical import MAX_DEPTH, encode, encode_arguments, is_plain, to_tree

SETTINGS = settings(max_examples=100, deadline=None)

# -- a domain of argument values -----------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    ONE = 1


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass(frozen=True)
class Point:
    x: Any
    y: Any


@dataclasses.dataclass(frozen=True)
class Pair:  # same fields as Point: the class name must tell them apart
    x: Any
    y: Any


class Text(str):
    """Every overridable view of it lies: only its text and class may key it."""

    def __str__(self) -> str:
        return "text"

    def __repr__(self) -> str:
        return "text"

    def encode(self, *args: Any, **kwargs: Any) -> bytes:  # type: ignore[override]
        return b"text"


class Number(int):
    def __int__(self) -> int:
        return 0

    def __index__(self) -> int:
        return 0


class Real(float):
    def __float__(self) -> float:
        return 0.0


class Blob(bytes):
    def __bytes__(self) -> bytes:
        return b""


class Persona(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow", frozen=True)
    x: Any = None


# Text includes lone surrogates (category Cs) and NUL; keys of str-keyed dicts leave lone
# surrogates out because `test_lone_surrogate_dict_keys_are_keyable` covers them on their own
# (one bug should fail one test, not every property here).
any_text = st.text(st.characters(exclude_categories=()), max_size=12)
key_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=8)
big_ints = st.one_of(st.integers(min_value=2**64, max_value=2**200), st.integers(max_value=-(2**63) - 1, min_value=-(2**200)))
ints = st.one_of(st.integers(), big_ints, st.sampled_from([0, 1, -1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63)]))
floats = st.one_of(st.floats(), st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf, 1.0]))

hashable_leaves = st.one_of(
    st.none(),
    st.booleans(),
    ints,
    floats,
    any_text,
    st.binary(max_size=12),
    st.sampled_from(list(Color) + list(Level)),
    st.decimals(allow_nan=False, places=3),
    st.uuids(),
    st.datetimes(timezones=st.none() | st.just(dt.timezone.utc)),
    st.dates(),
    st.builds(pathlib.PurePosixPath, key_text),
    st.builds(pathlib.PureWindowsPath, key_text),
    any_text.map(Text),
    ints.map(Number),
    floats.map(Real),
    st.binary(max_size=8).map(Blob),
)


def plain_key(key: Any) -> bool:
    """Not a str holding a lone surrogate (those keys have their own failing test)."""
    return not isinstance(key, str) or not any("\ud800" <= ch <= "\udfff" for ch in key)


hashables = st.recursive(
    hashable_leaves,
    lambda inner: st.one_of(
        st.tuples(inner, inner),
        st.lists(inner, max_size=3).map(tuple),
        st.frozensets(inner, max_size=3),
        st.builds(Point, inner, inner),
    ),
    max_leaves=6,
)
values = st.recursive(
    hashables,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(key_text, inner, max_size=4),
        st.dictionaries(hashables.filter(plain_key), inner, max_size=4),  # non-str keys
        st.sets(hashables, max_size=4),
        st.frozensets(hashables, max_size=4),
        st.builds(Point, inner, inner),
        st.binary(max_size=8).map(bytearray),
        st.builds(lambda x, extra: Persona(x=x, **extra), inner,
                  st.dictionaries(st.sampled_from(["system", "tone"]), inner, max_size=2)),
    ),
    max_leaves=15,
)

# JSON-native trees (plus tuples): the values the fast path is meant for.
json_values = st.recursive(
    st.none() | st.booleans() | ints | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=4)
    | st.lists(inner, max_size=4).map(tuple)
    | st.dictionaries(key_text, inner, max_size=4),
    max_leaves=20,
)


def reordered(value: Any) -> Any:
    """An equal value whose dicts have reversed insertion order and whose sets are rebuilt."""
    if isinstance(value, dict):
        return {reordered(k): reordered(v) for k, v in reversed(list(value.items()))}
    if isinstance(value, list):
        return [reordered(v) for v in value]
    if isinstance(value, tuple):
        return tuple(reordered(v) for v in value)
    if isinstance(value, (set, frozenset)):
        # Growing a set in another order changes its iteration order when hashes collide.
        return type(value)(reversed([reordered(v) for v in value]))
    if isinstance(value, Point):
        return Point(reordered(value.x), reordered(value.y))
    return value


# The plain value of a subclass, read without calling anything the subclass overrides.
PLAIN_VALUE: dict[type, Any] = {str: str.__str__, int: int.__int__, float: float.__float__,
                                bytes: lambda v: bytes(memoryview(v))}


def normal(value: Any) -> Any:
    """The documented equivalence: tuple -> list, frozenset -> set, bytearray -> bytes.

    Returns a hashable, type-tagged form compared with ==; two values encode alike
    exactly when their normal forms are equal.
    """
    if value is None or isinstance(value, bool):
        return ("const", repr(value))
    if isinstance(value, enum.Enum):
        return ("enum", type(value).__qualname__, normal(value.value))
    for base, plain in PLAIN_VALUE.items():
        if isinstance(value, base) and type(value) is not base:
            return ("subclass", type(value).__qualname__, normal(plain(value)))
    if isinstance(value, str):
        return ("str", str(value))
    if isinstance(value, int):
        return ("int", int(value))
    if isinstance(value, float):
        return ("float", repr(value))  # repr tells -0.0 from 0.0 and every NaN is 'nan'
    if isinstance(value, (bytes, bytearray)):
        return ("bytes", bytes(value))
    if isinstance(value, dt.datetime):
        return ("datetime", value.isoformat())
    if isinstance(value, dt.date):
        return ("date", value.isoformat())
    if isinstance(value, decimal.Decimal):
        return ("decimal", str(value))
    if isinstance(value, uuid.UUID):
        return ("uuid", str(value))
    if isinstance(value, pathlib.PurePath):
        return ("path", isinstance(value, pathlib.PureWindowsPath), str(value))
    if isinstance(value, (list, tuple)):
        return ("list", tuple(normal(v) for v in value))
    if isinstance(value, (set, frozenset)):
        return ("set", tuple(sorted((normal(v) for v in value), key=repr)))
    if isinstance(value, dict):
        return ("dict", tuple(sorted(((normal(k), normal(v)) for k, v in value.items()), key=repr)))
    if dataclasses.is_dataclass(value):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return ("dataclass", type(value).__qualname__, normal(fields))
    if isinstance(value, pydantic.BaseModel):
        return ("pydantic", type(value).__qualname__, normal({"x": value.x}), normal(value.model_extra or {}))
    raise AssertionError(f"normal() does not know {type(value)}")


# -- determinism and ordering --------------------------------------------------------------------


@SETTINGS
@given(values)
def test_encode_is_deterministic_and_survives_deepcopy(value: Any) -> None:
    first = encode(value)
    assert isinstance(first, bytes)
    assert encode(value) == first
    assert encode(copy.deepcopy(value)) == first


@SETTINGS
@given(values)
def test_dict_insertion_order_and_set_iteration_order_never_matter(value: Any) -> None:
    assert encode(reordered(value)) == encode(value)


@SETTINGS
@given(st.dictionaries(key_text, hashables, min_size=2, max_size=6), st.randoms(use_true_random=False))
def test_dict_key_order_never_matters(mapping: dict[str, Any], random: Any) -> None:
    items = list(mapping.items())
    random.shuffle(items)
    assert encode(dict(items)) == encode(mapping)
    assert encode_arguments(dict(items)) == encode_arguments(mapping)


def test_set_order_never_matters_for_colliding_hashes() -> None:
    # -1 and -2 share a hash in CPython, so insertion order decides their slots.
    assert encode({-1, -2}) == encode({-2, -1})
    forward = set()
    for i in range(50):
        forward.add(f"s{i}")
    backward = set()
    for i in reversed(range(50)):
        backward.add(f"s{i}")
    assert encode(forward) == encode(backward)


# -- the fast path agrees with the careful path -------------------------------------------------


@SETTINGS
@given(json_values)
def test_fast_path_agrees_with_careful_path_on_plain_values(value: Any) -> None:
    if is_plain(value):
        assert encode(value) == json_of_tree(value)
        assert encode_arguments({"p": value}) == json_of_tree({"p": value})


@SETTINGS
@given(values)
def test_encode_is_the_json_of_the_tree(value: Any) -> None:
    assert encode(value) == json_of_tree(value)


def json_of_tree(value: Any) -> bytes:
    """The documented encoding: JSON of the tree, led by "#" when the tree holds a tagged node."""
    tree = orjson.dumps(to_tree(value), option=orjson.OPT_SORT_KEYS)
    return b"#" + tree if b'{"\\u0000":"' in tree else tree


def test_plain_value_nested_beyond_max_depth_is_refused_like_any_other() -> None:
    # The module docstring: "so do cycles and nesting deeper than MAX_DEPTH". A plain list
    # nested MAX_DEPTH + 50 deep must not be keyable through the fast path when the same
    # shape holding a NaN (which takes the careful path) is refused.
    plain: Any = 1
    tagged: Any = math.nan
    for _ in range(MAX_DEPTH + 50):
        plain, tagged = [plain], [tagged]
    assert is_plain(plain)
    with pytest.raises(UnkeyableArgumentError):
        encode(tagged)
    with pytest.raises(UnkeyableArgumentError):
        to_tree(plain)
    with pytest.raises(UnkeyableArgumentError):
        encode(plain)


# -- type awareness --------------------------------------------------------------------------------

DISTINCT = [
    1, 1.0, True, "1", b"1", [1], {1}, {"1": 1}, {1: 1}, None, 0, 0.0, -0.0, False, "", b"", [], set(),
    {}, "True", "None", math.nan, math.inf, -math.inf, "nan", "inf", Color.ONE, Color.RED, "red",
    Level.LOW, 2**64, str(2**64), 2.0**64, decimal.Decimal("1"), uuid.UUID(int=1),
    str(uuid.UUID(int=1)), dt.date(2024, 1, 2), "2024-01-02", dt.datetime(2024, 1, 2),
    pathlib.PurePosixPath("a"), pathlib.PureWindowsPath("a"), Point(1, 2), Pair(1, 2), {"x": 1, "y": 2},
    [1, 2], "\x00", "\ud800", "\udfff", "\ud800\udc00", "\U00010000", "a\x00b", "ab",
    Text("a"), Text("b"), Text("text"), "text", Text("1"), Number(1), Number(0), Number(2**64), Real(1.0),
    Real(0.5), Real(math.nan), Blob(b"1"), Blob(b""), {Text("k"): 1}, {"k": 1}, {Text("j"): 1},
]


def test_distinct_values_encode_distinctly() -> None:
    encodings = [encode(v) for v in DISTINCT]
    clashes = [(DISTINCT[i], DISTINCT[j]) for i in range(len(DISTINCT)) for j in range(i)
               if encodings[i] == encodings[j]]
    assert clashes == []


@pytest.mark.parametrize(("a", "b"), [
    (1, 1.0), (1, True), (1.0, True), (1, "1"), ("1", b"1"), ([1], {1}), (1, [1]),
    (0.0, -0.0), (0, False), (None, math.nan), (None, "null"),
    (Color.RED, "red"), (Color.ONE, 1), (Level.LOW, 1),
    (uuid.UUID(int=7), str(uuid.UUID(int=7))),
    (Point(1, 2), {"x": 1, "y": 2}), (Point(1, 2), Pair(1, 2)),
    (decimal.Decimal("1.5"), 1.5), (decimal.Decimal("1.5"), "1.5"),
    (dt.datetime(2024, 1, 2, 3, 4), dt.datetime(2024, 1, 2, 3, 4).isoformat()),
    (dt.date(2024, 1, 2), dt.datetime(2024, 1, 2)),
    (pathlib.PurePosixPath("a/b"), "a/b"),
    (2**70, str(2**70)), (2**70, float(2**70)),
    ("\ud800", "\ufffd"), ("\ud800", "\udc00"), ("\ud800", ""),
])
def test_type_awareness(a: Any, b: Any) -> None:
    assert encode(a) != encode(b)
    assert encode_arguments({"p": a}) != encode_arguments({"p": b})


def test_nan_encodes_alike_and_unlike_none() -> None:
    nan_a, nan_b = float("nan"), -float("nan")
    assert nan_a is not nan_b
    assert encode(nan_a) == encode(nan_b) == encode(math.nan)
    assert encode([nan_a]) == encode([nan_b])
    assert encode({"t": nan_a}) == encode({"t": nan_b})
    assert encode(nan_a) != encode(None)
    assert encode({nan_a: 1}) == encode({nan_b: 1})


@pytest.mark.parametrize(("a", "b"), [
    ((1, "a", None), [1, "a", None]),
    ((), []),
    ({"m": ((1, 2), (3,))}, {"m": [[1, 2], [3]]}),
    (frozenset({1, "a"}), {1, "a"}),
    (frozenset(), set()),
    (bytearray(b"xy"), b"xy"),
])
def test_documented_equivalences(a: Any, b: Any) -> None:
    assert encode(a) == encode(b)


def test_subclasses_of_containers_encode_as_their_base_and_of_scalars_carry_their_class() -> None:
    class Items(list):  # type: ignore[type-arg]
        pass

    class Table(dict):  # type: ignore[type-arg]
        pass

    assert encode(Items([1, 2])) == encode([1, 2])
    assert encode(Table(a=1)) == encode({"a": 1})
    assert encode(Text("hi")) != encode("hi")
    assert encode(Text("hi")) != encode(Text("ho"))
    assert encode(Text("text")) != encode("text")
    assert encode(Number(5)) != encode(5)
    assert encode((Number(1), [Text("a")])) == encode([Number(1), [Text("a")]])
    assert encode((Number(1), [Text("a")])) != encode([1, ["a"]])


def test_subclasses_of_str_as_dict_keys_carry_their_class_too() -> None:
    # A str subclass's __str__ (or __eq__) may say anything: its key is its text and its class.
    assert encode({Text("a"): 1}) != encode({"a": 1})
    assert encode({Text("a"): 1}) == encode({Text("a"): 1})
    assert encode({Text("a"): 1}) != encode({Text("b"): 1})
    assert encode({Text("a"): 1, "a": 2}) != encode({"a": 2})
    assert encode_arguments({"headers": {Text("k"): "v"}}) != encode_arguments({"headers": {"k": "v"}})


def test_big_ints_keep_every_digit() -> None:
    assert encode(2**64 - 1) != encode(2**64)
    assert encode(2**200) != encode(2**200 + 1)
    assert encode(-(2**63)) != encode(-(2**63) - 1)
    assert encode(2**64) == encode(int(str(2**64)))


def test_strings_with_nul_and_lone_surrogates_are_keyable() -> None:
    for text in ["\x00", "a\x00", "\ud800", "x\udfffy", "\udc00\ud800"]:
        assert encode(text) == encode(text[:])
    assert encode("\ud800") != encode("\ud801")


def test_lone_surrogate_dict_keys_are_keyable() -> None:
    # A str with a lone surrogate is keyable as a value (tagged "str"); as a dict key it is
    # the same str and must be keyable too, and keep its code point.
    assert encode({"a": "\ud800"}) != encode({"a": "\ud801"})
    assert encode({"\ud800": 1}) != encode({"\ud801": 1})
    assert encode({"\ud800": 1}) != encode({"\ufffd": 1})
    assert encode_arguments({"headers": {"\udcff": "x"}})


# -- injectivity on a domain full of near-collisions ---------------------------------------------

NEAR_LEAVES = [
    None, True, False, 0, 1, -1, 0.0, -0.0, 1.0, math.nan, -math.inf, math.inf, "", "0", "1", "\x00",
    "v", "bytes", "eA==", "set", "int", "float", "nan", "inf", "str", "dict", "null", "true", b"", b"1",
    b"x", Color.ONE, Color.RED, "red", Level.LOW, 2**64, str(2**64), 2**64 - 1, -(2**63), -(2**63) - 1,
    "\ud800", "\udc00", "7aCA", (), frozenset(), "\x00\x00", decimal.Decimal("1"), uuid.UUID(int=1),
    str(uuid.UUID(int=1)), dt.date(2024, 1, 2), "2024-01-02",
    Text(""), Text("v"), Text("text"), "text", Number(0), Number(1), Real(0.0), Real(-0.0), Blob(b""), Blob(b"x"),
]
CONTEXTS = [
    lambda x: x, lambda x: [x], lambda x: [x, x], lambda x: {"k": x}, lambda x: {"\x00": x, "v": x},
    lambda x: {x: 1}, lambda x: {x}, lambda x: Point(x, 1), lambda x: (1, x),
]


def test_encoding_is_injective_on_every_near_collision_pair() -> None:
    by_encoding: dict[bytes, Any] = {}
    for wrap in CONTEXTS:
        for leaf in NEAR_LEAVES:
            value = wrap(leaf)
            if isinstance(value, dict) and not all(map(plain_key, value)):
                continue
            form = normal(value)
            seen = by_encoding.setdefault(encode(value), form)
            assert seen == form, f"{value!r} encodes like a different value"


near_leaves = st.sampled_from(NEAR_LEAVES)
near_hashables = st.recursive(
    near_leaves, lambda inner: st.lists(inner, max_size=2).map(tuple) | st.frozensets(inner, max_size=2),
    max_leaves=4,
)
near_values = st.recursive(
    near_hashables,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.sets(near_hashables, max_size=3),
        st.dictionaries(st.sampled_from(["\x00", "v", "1", "x"]), inner, max_size=3),
        st.dictionaries(near_hashables.filter(plain_key), inner, max_size=3),
        st.builds(Point, inner, inner),
        st.builds(Pair, inner, inner),
    ),
    max_leaves=8,
)


@settings(max_examples=120, deadline=None)
@given(st.lists(near_values, min_size=2, max_size=12))
def test_encoding_is_injective_up_to_the_documented_equivalence(batch: list[Any]) -> None:
    by_encoding: dict[bytes, Any] = {}
    for value in batch:
        form = normal(value)
        seen = by_encoding.setdefault(encode(value), form)
        assert seen == form, f"{value!r} encodes like a different value"
    forms = {normal(v) for v in batch}
    assert len(forms) == len(by_encoding)  # and equal forms encode alike


@SETTINGS
@given(values, values)
def test_unequal_values_never_share_an_encoding(a: Any, b: Any) -> None:
    if normal(a) != normal(b):
        assert encode(a) != encode(b)
    else:
        assert encode(a) == encode(b)


# -- reserved-marker injection ----------------------------------------------------------------------

IMITATIONS = [
    ({"\x00": "bytes", "v": "eA=="}, b"x"),
    ({"\x00": "set", "v": [1, 2]}, {1, 2}),
    ({"\x00": "int", "v": str(2**70)}, 2**70),
    ({"\x00": "float", "v": "nan"}, math.nan),
    ({"\x00": "float", "v": "-inf"}, -math.inf),
    ({"\x00": "str", "v": "7aCA"}, "\ud800"),
    ({"\x00": "enum", "v": ["test_canonical.Color", "red"]}, Color.RED),
    ({"\x00": "uuid", "v": str(uuid.UUID(int=3))}, uuid.UUID(int=3)),
    ({"\x00": "date", "v": "2024-01-02"}, dt.date(2024, 1, 2)),
    ({"\x00": "dict", "v": [[1, 2]]}, {1: 2}),
]


@pytest.mark.parametrize(("forged", "real"), IMITATIONS)
def test_a_dict_shaped_like_a_tag_never_encodes_like_the_value_it_imitates(forged: dict[str, Any], real: Any) -> None:
    # Build the forgery from the real value's own tree, so it is a byte-perfect imitation.
    imitation = to_tree(real)
    assert isinstance(imitation, dict)
    assert set(imitation) == {"\x00", "v"}
    for fake in (forged, imitation, copy.deepcopy(imitation)):
        assert encode(fake) != encode(real)
        assert encode([fake]) != encode([real])
        assert encode({"k": fake}) != encode({"k": real})
        assert encode_arguments({"p": fake}) != encode_arguments({"p": real})


def test_a_lone_tag_key_is_just_data() -> None:
    assert encode({"\x00": "x"}) != encode("x")
    assert encode({"\x00": "x"}) == encode({"\x00": "x"})
    assert encode({"\x00": "x"}) != encode({"\x00": "y"})


# -- errors ------------------------------------------------------------------------------------------


def assert_helpful(error: UnkeyableArgumentError, parameter: str, type_name: str) -> None:
    message = str(error)
    assert isinstance(error, TypeError)
    assert error.parameter.startswith(parameter)
    assert f"parameter {error.parameter!r}" in message
    assert type_name in message
    assert f"ignore=[{parameter!r}]" in message
    assert "key=" in message
    assert "register_encoder" in message


class Opaque:
    pass


def test_unknown_objects_raise_a_helpful_error(tmp_path: pathlib.Path) -> None:
    sock = socket.socket()
    try:
        with open(tmp_path / "f.txt", "w") as handle:
            cases = [(Opaque(), "Opaque"), (lambda: 0, "function"), (handle, "TextIOWrapper"),
                     (sock, "socket"), (object(), "object"), (print, "builtin_function_or_method"),
                     (Opaque, "type")]
            for obj, type_name in cases:
                with pytest.raises(UnkeyableArgumentError) as raised:
                    encode_arguments({"prompt": "hi", "tool": obj})
                assert_helpful(raised.value, "tool", type_name)
                with pytest.raises(UnkeyableArgumentError) as raised:
                    encode(obj, "tool")
                assert_helpful(raised.value, "tool", type_name)
    finally:
        sock.close()


@pytest.mark.parametrize("wrap", [
    lambda o: [o], lambda o: {"a": [1, o]}, lambda o: (1, (o,)), lambda o: Point(1, o), lambda o: {3: o},
])
def test_unknown_objects_nested_in_containers_name_the_parameter(wrap: Any) -> None:
    with pytest.raises(UnkeyableArgumentError) as raised:
        encode_arguments({"prompt": "hi", "tools": wrap(Opaque())})
    assert_helpful(raised.value, "tools", "Opaque")


@pytest.mark.parametrize("wrap", [lambda o: {o}, lambda o: {o: 1}, lambda o: frozenset({(1, o)})],
                         ids=["set-element", "dict-key", "frozenset-tuple"])
def test_the_ignore_hint_names_the_parameter_for_set_elements_and_dict_keys(wrap: Any) -> None:
    # The hint must be a fix that works: ignore=['tools'], not ignore=['tools{}'] or
    # ignore=['tools<key>'], which @llm_cache would reject as unknown parameters.
    with pytest.raises(UnkeyableArgumentError) as raised:
        encode_arguments({"prompt": "hi", "tools": wrap(Opaque())})
    assert_helpful(raised.value, "tools", "Opaque")


def test_the_error_of_a_too_deep_tagged_tree_names_the_offending_parameter() -> None:
    # Dicts with int keys become tagged nodes three JSON levels deep each, so this stays
    # within MAX_DEPTH but not within what orjson accepts; the error must still name "tree".
    deep: Any = 1
    for _ in range(95):
        deep = {1: deep}
    with pytest.raises(UnkeyableArgumentError) as raised:
        encode_arguments({"prompt": "hi", "tree": deep})
    assert_helpful(raised.value, "tree", "dict")


def test_tagged_trees_orjson_refuses_inside_sets_raise_unkeyable_not_a_bare_json_error() -> None:
    @dataclasses.dataclass(frozen=True)
    class Node:
        child: Any

    deep: Any = 1
    for _ in range(90):  # under MAX_DEPTH, but each dataclass level is three JSON levels
        deep = Node(deep)
    with pytest.raises(UnkeyableArgumentError):
        encode({deep})
    with pytest.raises(UnkeyableArgumentError):
        encode({deep: 1})


@pytest.mark.timeout(10)  # a hang guard; the one-second bound is checked in a child process below
def test_cycles_raise_unkeyable_not_recursion_error() -> None:
    items: list[Any] = ["a"]
    items.append(items)
    table: dict[str, Any] = {"a": 1}
    table["self"] = table
    indirect: list[Any] = []
    indirect.append({"x": (1, indirect)})
    for cyclic, type_name in ((items, "list"), (table, "dict"), (indirect, "list"), (Point(1, items), "list")):
        with pytest.raises(UnkeyableArgumentError) as raised:
            encode_arguments({"history": cyclic})
        assert_helpful(raised.value, "history", type_name)
        assert "contains itself" in str(raised.value)


def test_shared_references_are_not_cycles() -> None:
    shared = ["x"]
    assert encode([shared, shared, {"a": shared}]) == encode([["x"], ["x"], {"a": ["x"]}])


@pytest.mark.timeout(30)  # a hang guard; the one-second bound is checked in a child process below
def test_nesting_100_000_deep_raises_unkeyable_not_recursion_error() -> None:
    for make in (lambda v: [v], lambda v: {"k": v}):
        deep: Any = "leaf"
        for _ in range(100_000):
            deep = make(deep)
        with pytest.raises(UnkeyableArgumentError) as raised:
            encode_arguments({"prompt": "hi", "messages": deep})
        assert_helpful(raised.value, "messages", type(deep).__qualname__)
        with pytest.raises(UnkeyableArgumentError):
            encode(deep)


NESTING_SCRIPT = """
import faulthandler
from llm_memo import UnkeyableArgumentError
from llm_memo._logic.canonical import encode, encode_arguments

def nested(make):
    deep = "leaf"
    for _ in range(100_000):
        deep = make(deep)
    return deep

def cyclic_list():
    items = ["a"]
    items.append(items)
    return items

def cyclic_dict():
    table = {"a": 1}
    table["self"] = table
    return table

shapes = {
    "list": lambda: nested(lambda v: [v]),
    "dict": lambda: nested(lambda v: {"k": v}),
    "tuple": lambda: nested(lambda v: (v,)),
    "int-keyed": lambda: nested(lambda v: {1: v}),
    "set-in-tuple": lambda: nested(lambda v: (frozenset({v}),)),
    "cyclic-list": cyclic_list,
    "cyclic-dict": cyclic_dict,
}
for name, build in shapes.items():
    value = build()
    # Encoding (not building) must answer within a second: a watchdog, not a measurement.
    faulthandler.dump_traceback_later(1, exit=True)
    for call in (lambda: encode_arguments({"prompt": "hi", "messages": value}), lambda: encode(value)):
        try:
            call()
        except UnkeyableArgumentError as exc:
            print(name, exc.parameter, flush=True)
        else:
            print(name, "encoded", flush=True)
    faulthandler.cancel_dump_traceback_later()
"""
SHAPES = ("list", "dict", "tuple", "int-keyed", "set-in-tuple", "cyclic-list", "cyclic-dict")


@pytest.mark.slow
def test_deep_and_cyclic_arguments_fail_cleanly_within_a_second() -> None:
    # In a child process, because one failure this guards against is a segfault or an
    # abort (a C encoder recursing without a limit), which would take pytest down with it.
    done = subprocess.run([sys.executable, "-X", "faulthandler", "-c", NESTING_SCRIPT],
                          capture_output=True, text=True, timeout=120, check=False)
    expected = [f"{shape} {param}" for shape in SHAPES for param in ("messages", "argument")]
    assert (done.returncode, done.stdout.splitlines()) == (0, expected), done.stderr[-2000:]


def test_register_encoder_makes_a_class_keyable_and_distinct() -> None:
    class Money:
        def __init__(self, cents: int) -> None:
            self.cents = cents

    class Points:
        def __init__(self, cents: int) -> None:
            self.cents = cents

    with pytest.raises(UnkeyableArgumentError):
        encode(Money(5))
    llm_memo.register_encoder(Money, lambda m: m.cents)
    llm_memo.register_encoder(Points, lambda m: m.cents)
    assert encode(Money(5)) == encode(Money(5))
    assert encode(Money(5)) != encode(Money(6))
    assert encode(Money(5)) != encode(5)
    assert encode(Money(5)) != encode(Points(5))
    assert encode({"price": Money(5)}) != encode({"price": 5})

    class Cents(Money):
        pass

    assert encode(Cents(5)) == encode(Cents(5))  # found through the MRO
    assert encode(Cents(5)) != encode(Money(5))


def test_register_encoder_validates_its_arguments() -> None:
    with pytest.raises(TypeError, match="takes a class"):
        llm_memo.register_encoder(Opaque(), str)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes a callable"):
        llm_memo.register_encoder(Opaque, "str")  # type: ignore[arg-type]


def test_a_20_mb_string_encodes() -> None:
    text = "é" + "x" * 20_000_000
    out = encode(text)
    assert len(text) + 2 < len(out) <= len(text) + 8
    assert out.startswith(b'"\xc3\xa9xxx') and out.endswith(b'x"')
    assert encode_arguments({"prompt": text}) == b'{"prompt":' + out + b"}"
