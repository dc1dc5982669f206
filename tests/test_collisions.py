"""What comes back is the answer to this call (issue 9, item 2), through the public API.

Different arguments never share a key (pydantic extras, subclasses of str/int/float/bytes),
the guard finds a temperature in settings objects, a cached generator replays what it
yielded, and spellings of one generation setting (temperature=0 and 0.0) share a key.
"""

from __future__ import annotations

import asyncio
import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_memo import (
    Cache,
    NonDeterministicCallError,
    NonDeterministicCallWarning,
    llm_cache,
)
from llm_memo._logic.canonical import encode
from llm_memo._logic.keys import GENERATION_SETTINGS

# ---- pydantic models key all their data --------------------------------------------------------


class Persona(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    name: str


def test_two_system_prompts_in_pydantic_extras_get_their_own_answers(cache: Cache) -> None:
    calls: list[str] = []

    @llm_cache(cache=cache)
    def ask(prompt: str, persona: Persona) -> str:
        calls.append(persona.system)  # type: ignore[attr-defined]
        return f"{prompt} as told: {persona.system}"  # type: ignore[attr-defined]

    terse, verbose = Persona(name="bot", system="Be terse."), Persona(name="bot", system="Be verbose.")
    assert ask("hi", terse) == "hi as told: Be terse."
    assert ask("hi", verbose) == "hi as told: Be verbose."
    assert ask("hi", Persona(name="bot", system="Be terse.")) == "hi as told: Be terse."
    assert calls == ["Be terse.", "Be verbose."]
    assert ask.cache_key("hi", terse) != ask.cache_key("hi", Persona(name="bot"))


def test_pydantic_extras_key_by_value_in_any_order() -> None:
    assert encode(Persona(name="a", x=1, y=[1])) == encode(Persona(name="a", y=[1], x=1))
    variants = [Persona(name="a"), Persona(name="a", x=1), Persona(name="a", x=2), Persona(name="a", y=1),
                Persona(name="a", x="1"), Persona(name="a", x=1.0), Persona(name="b", x=1)]
    assert len({encode(v) for v in variants}) == len(variants)


class Aliased(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(populate_by_name=True)
    system_prompt: str = pydantic.Field(alias="systemPrompt")


class Derived(pydantic.BaseModel):
    text: str
    _client: Any = pydantic.PrivateAttr(default=None)
    reads: int = 0

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def shout(self) -> str:
        raise AssertionError("a computed field is never evaluated for a key")


def test_pydantic_fields_key_by_name_whatever_alias_filled_them() -> None:
    assert encode(Aliased(systemPrompt="a")) == encode(Aliased(system_prompt="a"))
    assert encode(Aliased(systemPrompt="a")) != encode(Aliased(systemPrompt="b"))


def test_private_attributes_and_computed_fields_are_not_keyed() -> None:
    # Private attributes hold clients and caches (often unkeyable); computed fields derive from
    # the fields, which are keyed. Both are documented in llm_memo._logic.canonical.
    first, second = Derived(text="t"), Derived(text="t")
    first._client, second._client = object(), "another"
    assert encode(first) == encode(second)
    assert encode(first) != encode(Derived(text="u"))


# ---- subclasses of str/int/float/bytes key by value and class ----------------------------------


class Constant(str):
    """A str whose every overridable view says the same thing."""

    def __str__(self) -> str:
        return "same"

    def __repr__(self) -> str:
        return "same"

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0


class Text(str):
    pass


class Count(int):
    def __int__(self) -> int:
        return 0

    def __index__(self) -> int:
        return 0


class Ratio(float):
    def __float__(self) -> float:
        return 0.0


class Blob(bytes):
    def __bytes__(self) -> bytes:
        return b""


def test_a_str_subclass_with_a_constant_str_gets_one_answer_per_value(cache: Cache) -> None:
    calls: list[str] = []

    @llm_cache(cache=cache)
    def ask(prompt: str) -> str:
        text = str.__str__(prompt)
        calls.append(text)
        return f"answer to {text}"

    assert ask(Constant("What is 2+2?")) == "answer to What is 2+2?"
    assert ask(Constant("Who are you?")) == "answer to Who are you?"
    assert calls == ["What is 2+2?", "Who are you?"]


@pytest.mark.parametrize(("a", "b"), [
    (Constant("a"), Constant("b")), (Constant("a"), "a"), (Constant("same"), "same"), (Text("a"), "a"),
    (Text("a"), Constant("a")), (Count(1), Count(2)), (Count(1), 1), (Count(0), 0), (Ratio(0.5), Ratio(0.7)),
    (Ratio(0.5), 0.5), (Blob(b"x"), Blob(b"y")), (Blob(b"x"), b"x"), (Blob(b""), b""),
    ({Constant("k1"): 1}, {Constant("k2"): 1}), ({Text("k"): 1}, {"k": 1}), ([Text("a")], ["a"]),
    ({Constant("a")}, {Constant("b")}),
])
def test_subclasses_of_builtins_never_share_a_key_with_other_values(a: Any, b: Any) -> None:
    assert encode(a) != encode(b)

    def ask(prompt: Any) -> str:
        return ""

    cached = llm_cache(track_source=False)(ask)
    assert cached.cache_key(a) != cached.cache_key(b)


def test_a_subclass_keys_alike_for_equal_values() -> None:
    assert encode(Constant("a")) == encode(Constant("a"))
    assert encode({Text("k"): Count(3)}) == encode({Text("k"): Count(3)})
    assert encode(Blob(b"x")) == encode(Blob(b"x"))


def test_numpy_scalars_keep_keying_as_their_plain_values() -> None:
    np = pytest.importorskip("numpy")
    assert encode(np.float64(0.5)) == encode(0.5)
    assert encode(np.str_("a")) == encode("a")
    assert encode({np.str_("k"): 1}) == encode({"k": 1})
    assert encode(np.bytes_(b"x")) == encode(b"x")


base_values = st.one_of(
    st.text(max_size=8).map(lambda s: ("str", s)),
    st.integers().map(lambda i: ("int", i)),
    st.floats(allow_nan=False).map(lambda f: ("float", f)),
    st.binary(max_size=8).map(lambda b: ("bytes", b)),
)
SUBCLASS = {"str": Constant, "int": Count, "float": Ratio, "bytes": Blob}


@settings(max_examples=200, deadline=None)
@given(base_values, base_values)
def test_a_subclass_never_keys_like_its_plain_value_and_keys_by_value(a: tuple[str, Any], b: tuple[str, Any]) -> None:
    (kind_a, va), (kind_b, vb) = a, b
    sub_a, sub_b = SUBCLASS[kind_a](va), SUBCLASS[kind_b](vb)
    assert encode(sub_a) != encode(va)
    assert encode([sub_a]) != encode([va])
    same = kind_a == kind_b and repr(va) == repr(vb)  # repr tells 0.0 from -0.0
    assert (encode(sub_a) == encode(sub_b)) == same
    assert (encode({"k": sub_a}) == encode({"k": sub_b})) == same


# ---- the guard finds temperature in settings objects ---------------------------------------------


@dataclasses.dataclass
class GenerationSettings:
    temperature: float = 0.0
    max_tokens: int = 256


class ModelSettings(pydantic.BaseModel):
    temperature: float = 0.0
    top_p: float = 1.0


class Job(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    name: str = "job"


def _settings_function(shape: str, cache: Cache, calls: list[int],
                       **options: Any) -> tuple[Any, Callable[[float], str]]:
    """A cached function and a call of it at a temperature, the temperature passed as `shape`."""
    if shape == "dataclass":

        @llm_cache(cache=cache, **options)
        def by_dataclass(prompt: str, settings: GenerationSettings) -> str:
            calls.append(1)
            return "sampled"

        return by_dataclass, lambda t: by_dataclass("hi", GenerationSettings(temperature=t))
    if shape == "pydantic":

        @llm_cache(cache=cache, **options)
        def by_model(prompt: str, settings: ModelSettings | None = None) -> str:
            calls.append(1)
            return "sampled"

        return by_model, lambda t: by_model("hi", settings=ModelSettings(temperature=t))
    if shape == "kwargs-dict":

        @llm_cache(cache=cache, **options)
        def by_kwargs(prompt: str, **kwargs: Any) -> str:
            calls.append(1)
            return "sampled"

        return by_kwargs, lambda t: by_kwargs("hi", generation={"temperature": t}, max_tokens=5)
    if shape == "kwargs-model":

        @llm_cache(cache=cache, **options)
        def by_kwargs_model(prompt: str, **kwargs: Any) -> str:
            calls.append(1)
            return "sampled"

        return by_kwargs_model, lambda t: by_kwargs_model("hi", model_settings=ModelSettings(temperature=t))
    if shape == "nested":

        @llm_cache(cache=cache, **options)
        def by_nested(prompt: str, request: dict[str, Any]) -> str:
            calls.append(1)
            return "sampled"

        return by_nested, lambda t: by_nested(
            "hi", {"config": {"params": {"sampling": {"temperature": t}}}, "messages": []})

    @llm_cache(cache=cache, **options)
    def by_extra(prompt: str, job: Job) -> str:
        calls.append(1)
        return "sampled"

    return by_extra, lambda t: by_extra("hi", Job(options={"generation": GenerationSettings(temperature=t)}))


SHAPES = ["dataclass", "pydantic", "kwargs-dict", "kwargs-model", "nested", "pydantic-extra"]


@pytest.mark.parametrize("shape", SHAPES)
def test_a_temperature_in_settings_bypasses_and_warns_once(shape: str, cache: Cache) -> None:
    calls: list[int] = []
    fn, call = _settings_function(shape, cache, calls)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = [call(0.7) for _ in range(3)]
    assert results == ["sampled"] * 3
    assert len(calls) == 3
    assert [w.category for w in caught] == [NonDeterministicCallWarning]
    assert "temperature=0.7" in str(caught[0].message)
    info = fn.cache_info()
    assert (info.bypassed, info.hits, info.misses) == (3, 0, 0)
    assert list(cache.keys()) == []


@pytest.mark.parametrize("shape", SHAPES)
def test_a_temperature_in_settings_raises_in_raise_mode(shape: str, cache: Cache) -> None:
    calls: list[int] = []
    _, call = _settings_function(shape, cache, calls, on_nondeterministic="raise")
    with pytest.raises(NonDeterministicCallError) as raised:
        call(0.7)
    assert raised.value.temperature == 0.7
    assert calls == []


@pytest.mark.parametrize("shape", SHAPES)
def test_a_temperature_in_settings_records_one_sample_in_cache_mode(shape: str, cache: Cache) -> None:
    calls: list[int] = []
    _, call = _settings_function(shape, cache, calls, on_nondeterministic="cache")
    assert [call(0.7), call(0.7), call(0.7)] == ["sampled"] * 3
    assert len(calls) == 1


@pytest.mark.parametrize("shape", SHAPES)
def test_a_zero_temperature_in_settings_is_cached(shape: str, cache: Cache) -> None:
    calls: list[int] = []
    fn, call = _settings_function(shape, cache, calls, on_nondeterministic="raise")
    assert [call(0.0), call(0.0)] == ["sampled"] * 2
    assert len(calls) == 1
    assert (fn.cache_info().hits, fn.cache_info().misses) == (1, 1)


@dataclasses.dataclass
class Reading:
    city: str
    details: dict[str, Any]


UNRELATED = [
    ("a JSON schema's property", {"schema": {"temperature": {"type": "number", "minimum": -50}}}),
    ("a message", {"messages": [{"role": "user", "content": "hot", "temperature": 35.5}]}),
    ("data below a field not named like settings", {"record": {"sensor": {"temperature": 22.5}}}),
    ("a dataclass's data field", {"record": Reading("Paris", {"temperature": 22.5})}),
]


@pytest.mark.parametrize(("label", "kwargs"), UNRELATED, ids=[u[0] for u in UNRELATED])
def test_temperature_fields_that_are_data_do_not_bypass(label: str, kwargs: dict[str, Any], cache: Cache) -> None:
    calls: list[int] = []

    @llm_cache(cache=cache, on_nondeterministic="raise")
    def summarise(prompt: str, **data: Any) -> str:
        calls.append(1)
        return "summary"

    @llm_cache(cache=cache, on_nondeterministic="raise")
    def direct(prompt: str, payload: Any) -> str:
        calls.append(2)
        return "summary"

    (payload,) = kwargs.values()
    assert summarise("describe", **kwargs) == summarise("describe", **kwargs) == "summary"
    assert direct("describe", payload) == direct("describe", payload) == "summary"
    assert calls == [1, 2]


# ---- a cached generator replays what it yielded ---------------------------------------------------


def test_a_consumer_mutating_yielded_chunks_does_not_change_the_replay(cache: Cache) -> None:
    runs: list[str] = []

    @llm_cache(cache=cache)
    def stream(prompt: str):  # type: ignore[no-untyped-def]
        runs.append(prompt)
        yield {"delta": "Hel", "tokens": ["Hel"]}
        yield ["lo"]

    for chunk in stream("p"):
        if isinstance(chunk, dict):
            chunk["delta"] += "!"
            chunk["tokens"].append("injected")
        else:
            chunk.append("injected")
    assert list(stream("p")) == [{"delta": "Hel", "tokens": ["Hel"]}, ["lo"]]
    assert list(stream("p")) == [{"delta": "Hel", "tokens": ["Hel"]}, ["lo"]]
    assert runs == ["p"]


class Chunk(pydantic.BaseModel):
    delta: str
    index: int


def test_a_generator_reusing_one_buffer_is_replayed_as_each_chunk_was_yielded(cache: Cache) -> None:
    @llm_cache(cache=cache)
    def stream(prompt: str):  # type: ignore[no-untyped-def]
        buffer: list[str] = []
        chunk = Chunk(delta="", index=0)
        for i, word in enumerate(prompt.split()):
            buffer.append(word)
            chunk.delta, chunk.index = word, i
            yield list(buffer), buffer, chunk

    live = list(stream("a b c"))
    assert live[0][1] is live[2][1] and live[0][1] == ["a", "b", "c"]  # the live consumer holds one buffer
    replayed = [(copy, shared, chunk.model_dump()) for copy, shared, chunk in stream("a b c")]
    assert replayed == [
        (["a"], ["a"], {"delta": "a", "index": 0}),
        (["a", "b"], ["a", "b"], {"delta": "b", "index": 1}),
        (["a", "b", "c"], ["a", "b", "c"], {"delta": "c", "index": 2}),
    ]


def test_an_async_consumer_mutating_yielded_chunks_does_not_change_the_replay(cache: Cache) -> None:
    runs: list[str] = []

    @llm_cache(cache=cache)
    async def stream(prompt: str):  # type: ignore[no-untyped-def]
        runs.append(prompt)
        buffer: list[str] = []
        for word in ("Hel", "lo"):
            await asyncio.sleep(0)
            buffer.append(word)
            yield {"text": word, "tokens": [word]}, buffer

    async def main() -> list[Any]:
        async for chunk, _ in stream("p"):
            chunk["text"] = chunk["text"].upper()
            chunk["tokens"].append("injected")
        return [chunk async for chunk in stream("p")]

    assert asyncio.run(main()) == [({"text": "Hel", "tokens": ["Hel"]}, ["Hel"]),
                                   ({"text": "lo", "tokens": ["lo"]}, ["Hel", "lo"])]
    assert runs == ["p"]


def test_a_chunk_that_cannot_be_copied_streams_as_before(cache: Cache) -> None:
    import threading

    lock = threading.Lock()

    @llm_cache(cache=cache)
    def stream(prompt: str):  # type: ignore[no-untyped-def]
        yield "text"
        yield lock  # no copy and no safe encoding: streamed live, not stored

    assert list(stream("p")) == ["text", lock]
    assert cache.get_entry(stream.cache_key("p")) is None
    assert list(stream("p")) == ["text", lock]


# ---- spellings of one generation setting share a key --------------------------------------------


@llm_cache(track_source=False)
def complete(prompt: str, temperature: float = 0.0, top_p: float = 1.0, max_tokens: int = 256,
             seed: int | None = None, **options: Any) -> str:
    raise AssertionError("cache_key never calls the function")


@llm_cache(track_source=False)
def legacy(prompt: str, temperature: float = 0, presence_penalty: float | None = None) -> str:
    raise AssertionError("cache_key never calls the function")


@pytest.mark.parametrize(("a", "b"), [
    ({"temperature": 0}, {"temperature": 0.0}),
    ({"temperature": 0}, {}),
    ({"temperature": -0.0}, {}),
    ({"top_p": 1}, {"top_p": 1.0}),
    ({"temperature": 1}, {"temperature": 1.0}),
    ({"max_tokens": 256.0}, {}),
    ({"seed": 7.0}, {"seed": 7}),
    ({"frequency_penalty": 0.0}, {"frequency_penalty": 0}),  # a **kwargs entry
    ({"max_completion_tokens": 100.0}, {"max_completion_tokens": 100}),
])
def test_numeric_spellings_of_a_generation_setting_share_a_key(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert complete.cache_key("x", **a) == complete.cache_key("x", **b)


def test_the_setting_is_spelled_as_its_parameter_declares_it() -> None:
    assert legacy.cache_key("x", temperature=0.0) == legacy.cache_key("x")
    assert legacy.cache_key("x", presence_penalty=0) == legacy.cache_key("x", presence_penalty=0.0)


@pytest.mark.parametrize(("a", "b"), [
    ({"temperature": 0.5}, {"temperature": 0}),
    ({"temperature": 1e-9}, {}),
    ({"temperature": True}, {"temperature": 1}),
    ({"temperature": "0"}, {"temperature": 0}),
    ({"max_tokens": 256.5}, {}),
    ({"seed": 1}, {"seed": 2}),
    ({"n_items": 1}, {"n_items": 1.0}),  # not a generation setting: 1 and 1.0 stay distinct
    ({"options": {"temperature": 0}}, {"options": {"temperature": 0.0}}),  # nested: not a parameter
])
def test_different_settings_and_other_numbers_keep_distinct_keys(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert complete.cache_key("x", **a) != complete.cache_key("x", **b)


def test_temperature_0_and_0_0_share_one_stored_answer(cache: Cache) -> None:
    calls: list[float] = []

    @llm_cache(cache=cache)
    def ask(prompt: str, temperature: float = 0.0) -> str:
        calls.append(temperature)
        return "answer"

    assert ask("hi", temperature=0) == ask("hi", temperature=0.0) == ask("hi") == "answer"
    assert calls == [0]
    info = ask.cache_info()
    assert (info.hits, info.misses) == (2, 1)


numbers_ = st.one_of(st.integers(-(2**60), 2**60), st.floats(allow_nan=False, allow_infinity=False),
                     st.integers(-1000, 1000).map(float))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(GENERATION_SETTINGS)), numbers_, numbers_)
def test_a_setting_keys_by_the_number_it_means(name: str, a: float, b: float) -> None:
    key_a, key_b = complete.cache_key("x", **{name: a}), complete.cache_key("x", **{name: b})
    assert (key_a == key_b) == (a == b)  # 0 == 0.0 == -0.0, 1 == 1.0; 0.1 != 0
    other_a, other_b = complete.cache_key("x", n_items=a), complete.cache_key("x", n_items=b)
    assert (other_a == other_b) == (repr(a) == repr(b))  # not a setting: typed as ever
