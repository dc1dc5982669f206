"""Cache policies, intent classification, prompt extraction and lifetime resolution."""

from __future__ import annotations

import datetime
import math
import re
from types import SimpleNamespace

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from llm_memo._logic.policy import (
    DEFAULT_RULES,
    PROMPT_ARGUMENTS,
    CachePolicy,
    IntentRule,
    classify_intent,
    extract_prompt,
    resolve_lifetime,
    validate_policy,
    validate_ttl,
)

# Rank of each default outcome: a lower rank is a higher-priority rule.
RANK = {rule.policy: index for index, rule in enumerate(DEFAULT_RULES)}
RANK[CachePolicy.SHORT] = len(DEFAULT_RULES)
NEVER_WORDS = DEFAULT_RULES[0].words
RULE_WORDS = [(index, word) for index, rule in enumerate(DEFAULT_RULES) for word in rule.words]


def flip_case(text: str, flips: list[bool]) -> str:
    """`text` with the case of each character swapped where `flips` says so."""
    return "".join(c.swapcase() if flips[i : i + 1] == [True] else c for i, c in enumerate(text))


# -- CachePolicy -------------------------------------------------------------------------------


def test_lifetimes() -> None:
    assert CachePolicy.NEVER.ttl == 0.0
    assert CachePolicy.SHORT.ttl == 300.0
    assert CachePolicy.MEDIUM.ttl == 3600.0
    assert CachePolicy.LONG.ttl == 86400.0
    assert CachePolicy.FOREVER.ttl is None


@pytest.mark.parametrize("value", ["long", "LONG", " Long ", "\tlOnG\n", CachePolicy.LONG])
def test_coerce_examples(value: object) -> None:
    assert CachePolicy.coerce(value) is CachePolicy.LONG  # type: ignore[arg-type]


@given(st.sampled_from(CachePolicy), st.lists(st.booleans()), st.text(" \t\n"), st.text(" \t\n"))
def test_coerce_accepts_any_casing_and_spacing(
    member: CachePolicy, flips: list[bool], left: str, right: str
) -> None:
    assert CachePolicy.coerce(left + flip_case(member.value, flips) + right) is member
    assert CachePolicy.coerce(left + member.name.lower() + right) is member


@given(st.text().filter(lambda s: s.strip().lower() not in {m.value for m in CachePolicy}))
def test_coerce_rejects_other_strings(value: str) -> None:
    with pytest.raises(ValueError) as raised:
        CachePolicy.coerce(value)
    assert f"policy={value!r}" in str(raised.value)


def test_coerce_message_names_argument_value_and_choices() -> None:
    with pytest.raises(ValueError, match=re.escape("policy='lng' is not a cache policy")) as raised:
        CachePolicy.coerce("lng")
    assert "'never', 'short', 'medium', 'long', 'forever'" in str(raised.value)
    with pytest.raises(ValueError, match=re.escape("default=3 is not a cache policy")):
        CachePolicy.coerce(3, argument="default")  # type: ignore[arg-type]


# -- IntentRule and classify_intent ------------------------------------------------------------


def test_rule_words_are_checked() -> None:
    with pytest.raises(ValueError, match=re.escape("got words='now'")):
        IntentRule(CachePolicy.NEVER, "now")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape("got words=()")):
        IntentRule(CachePolicy.NEVER, ())
    with pytest.raises(ValueError, match=re.escape("got words=('now', '  ')")):
        IntentRule(CachePolicy.NEVER, ("now", "  "))
    with pytest.raises(ValueError, match=re.escape("policy='sometimes'")):
        IntentRule("sometimes", ("now",))  # type: ignore[arg-type]


def test_rules_compare_and_hash_by_policy_and_words() -> None:
    rule = IntentRule(CachePolicy.LONG, ["define"])  # type: ignore[arg-type]
    assert rule.words == ("define",)
    assert rule == IntentRule(CachePolicy.LONG, ("define",))
    assert hash(rule) == hash(IntentRule(CachePolicy.LONG, ("define",)))
    assert "_pattern" not in repr(rule)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What's the weather like today?", CachePolicy.NEVER),
        ("Explain the latest news about Rust", CachePolicy.NEVER),
        ("Show me the stock price of ACME right  now", CachePolicy.NEVER),
        ("What is the capital of France?", CachePolicy.LONG),
        ("what\nis a monad", CachePolicy.LONG),
        ("Why do cats purr?", CachePolicy.LONG),
        ("Write a Python function that reverses a list", CachePolicy.MEDIUM),
        ("fix: my SQL query is slow", CachePolicy.MEDIUM),
        ("Tell a joke", CachePolicy.SHORT),
        ("", CachePolicy.SHORT),
        # Substrings of time words are not time words.
        ("Do you know a poem about snow?", CachePolicy.SHORT),
        ("I acknowledge the snowfall", CachePolicy.SHORT),
        ("Knowledge is nowhere to be found", CachePolicy.SHORT),
        ("Call get_current_price in a loop", CachePolicy.SHORT),
        ("Is this up-to-date?", CachePolicy.NEVER),
    ],
)
def test_classify_examples(text: str, expected: CachePolicy) -> None:
    assert classify_intent(text) is expected


def test_classify_custom_rules_and_default() -> None:
    rules = [IntentRule(CachePolicy.FOREVER, ("c++",)), IntentRule(CachePolicy.NEVER, ("c",))]
    assert classify_intent("I like C++ a lot", rules) is CachePolicy.FOREVER
    assert classify_intent("I like C a lot", rules) is CachePolicy.NEVER
    assert classify_intent("I like Cobol", rules, CachePolicy.MEDIUM) is CachePolicy.MEDIUM
    assert classify_intent("anything", []) is CachePolicy.SHORT


@given(st.text(alphabet=st.characters(codec="ascii")), st.lists(st.booleans()))
def test_classification_is_case_insensitive(text: str, flips: list[bool]) -> None:
    expected = classify_intent(text)
    assert classify_intent(flip_case(text, flips)) is expected
    assert classify_intent(text.upper()) is expected
    assert classify_intent(text.lower()) is expected


@given(st.text(), st.text(), st.sampled_from(RULE_WORDS), st.lists(st.booleans()))
def test_a_rule_word_yields_at_least_its_rule(
    before: str, after: str, rule_word: tuple[int, str], flips: list[bool]
) -> None:
    index, word = rule_word
    text = f"{before} {flip_case(word, flips)} {after}"
    assert RANK[classify_intent(text)] <= index


alphanumeric = st.text(st.characters(categories=("L", "N")).filter(str.isalnum), max_size=5)


@given(alphanumeric, alphanumeric, st.sampled_from([w for w in NEVER_WORDS if w.isalpha()]))
def test_time_words_inside_larger_words_are_not_time_sensitive(
    prefix: str, suffix: str, word: str
) -> None:
    token = prefix + word + suffix
    assume(prefix or suffix)
    # The larger word may itself be listed ("now" + "adays"); that is a match, not an accident.
    assume(not any(re.fullmatch(re.escape(w), token, re.IGNORECASE) for w in NEVER_WORDS))
    assert classify_intent(token) is not CachePolicy.NEVER
    assert classify_intent(f"A poem about {token}.") is not CachePolicy.NEVER


# -- extract_prompt ----------------------------------------------------------------------------


def test_prompt_arguments_in_priority_order() -> None:
    assert extract_prompt({"text": "t", "prompt": "p"}) == "p"
    assert extract_prompt({"input": "i", "question": "q"}) == "q"
    assert extract_prompt({"model": "gpt", "query": "hello", "n": 3}) == "hello"
    assert extract_prompt({"prompt": 42, "text": "fallback"}) == "fallback"
    assert extract_prompt({}) is None
    assert extract_prompt({"model": "gpt"}) is None


def test_kwargs_entries_are_searched_after_top_level_arguments() -> None:
    assert extract_prompt({"model": "m", "kwargs": {"prompt": "from kwargs"}}) == "from kwargs"
    messages = [{"role": "user", "content": "top"}]
    assert extract_prompt({"messages": messages, "metadata": {"text": "tag"}}) == "top"
    assert extract_prompt({"kwargs": {"messages": messages}}) == "top"


def test_messages_keep_only_user_turns() -> None:
    messages = [
        {"role": "system", "content": "Today you are a pirate."},
        {"role": "developer", "content": "now"},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Arr"},
        {"role": "tool", "content": "latest"},
        {"role": "user", "content": [{"type": "text", "text": "Define"}, {"type": "image_url"}]},
    ]
    assert extract_prompt({"messages": messages}) == "Hello\nDefine"


def test_messages_as_objects_and_responses_input() -> None:
    part = SimpleNamespace(type="text", text="second")
    messages = [
        SimpleNamespace(role="user", content="first"),
        SimpleNamespace(role="user", content=[part]),
    ]
    assert extract_prompt({"messages": messages}) == "first\nsecond"
    items = [
        {"role": "system", "content": "sys"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
    ]
    assert extract_prompt({"input": items}) == "hi"


def test_odd_message_shapes_are_skipped() -> None:
    messages = [
        None,
        "user",
        42,
        {"content": "no role"},
        {"role": "user"},
        {"role": "user", "content": None},
        {"role": "user", "content": [None, "x", {"type": "text"}, {"type": "text", "text": 5}]},
        {"role": "user", "content": "kept"},
    ]
    assert extract_prompt({"messages": messages}) == "kept"
    assert extract_prompt({"messages": [{"role": "system", "content": "only"}]}) is None
    assert extract_prompt({"messages": "not a list"}) is None


def test_intent_arg_selects_the_prompt() -> None:
    arguments = {"prompt": "ignored", "topic": "chosen", "chat": [{"role": "user", "content": "c"}]}
    assert extract_prompt(arguments, "topic") == "chosen"
    assert extract_prompt(arguments, "chat") == "c"
    assert extract_prompt(arguments, "missing") is None
    assert extract_prompt({"n": 3}, "n") is None
    assert extract_prompt({"kwargs": {"topic": "deep"}}, "topic") == "deep"


roles = st.sampled_from(["system", "developer", "user", "assistant", "tool"])
turns = st.lists(st.fixed_dictionaries({"role": roles, "content": st.text()}))


@given(turns)
def test_classification_depends_only_on_user_turns(messages: list[dict[str, str]]) -> None:
    def policy_of(turns: list[dict[str, str]]) -> CachePolicy:
        return classify_intent(extract_prompt({"messages": turns}) or "")

    user_turns = [m for m in messages if m["role"] == "user"]
    system = [{"role": "system", "content": "Answer with today's latest news right now."}]
    assert extract_prompt({"messages": messages}) == extract_prompt({"messages": user_turns})
    assert policy_of(messages) is policy_of(user_turns) is policy_of(system + messages)


keys = st.sampled_from(["role", "content", "type", "text", *PROMPT_ARGUMENTS, "messages"])
anything = st.recursive(
    st.none() | st.integers() | st.sampled_from(["user", "text", "input_text", "system"]),
    lambda inner: st.lists(inner) | st.dictionaries(keys, inner),
)


@given(st.dictionaries(keys, anything))
def test_extract_prompt_never_raises(arguments: dict[str, object]) -> None:
    prompt = extract_prompt(arguments)
    assert prompt is None or isinstance(prompt, str)


# -- validate_policy ---------------------------------------------------------------------------


def test_validate_policy_accepts_members_names_auto_and_callables() -> None:
    assert validate_policy(CachePolicy.NEVER) is CachePolicy.NEVER
    assert validate_policy(" Medium") is CachePolicy.MEDIUM
    assert validate_policy("AUTO") is classify_intent

    def rule(text: str) -> CachePolicy:
        return CachePolicy.LONG

    assert validate_policy(rule) is rule


def test_validate_policy_messages() -> None:
    with pytest.raises(ValueError) as raised:
        validate_policy("lng")
    assert str(raised.value) == (
        "policy='lng' is not a cache policy; use one of 'never', 'short', 'medium', 'long', "
        "'forever', 'auto' or a callable"
    )
    with pytest.raises(TypeError, match=re.escape("got policy=300 (int)")) as raised_type:
        validate_policy(300)
    assert "'auto'" in str(raised_type.value)
    assert "callable" in str(raised_type.value)


# -- validate_ttl ------------------------------------------------------------------------------


@given(st.floats(min_value=0.0, allow_nan=False, allow_infinity=False))
def test_validate_ttl_accepts_finite_non_negative_floats(seconds: float) -> None:
    assert validate_ttl(seconds) == seconds


@given(st.integers(min_value=0, max_value=10**12))
def test_validate_ttl_accepts_non_negative_ints(seconds: int) -> None:
    result = validate_ttl(seconds)
    assert isinstance(result, float)
    assert result == seconds


@given(st.timedeltas(min_value=datetime.timedelta(0)))
def test_validate_ttl_accepts_timedeltas(delta: datetime.timedelta) -> None:
    assert validate_ttl(delta) == delta.total_seconds()


@given(
    st.floats(max_value=-1e-300)
    | st.just(math.nan)
    | st.just(math.inf)
    | st.just(-math.inf)
    | st.integers(max_value=-1)
    | st.timedeltas(max_value=datetime.timedelta(microseconds=-1))
)
def test_validate_ttl_rejects_negative_and_non_finite_values(ttl: object) -> None:
    with pytest.raises(ValueError) as raised:
        validate_ttl(ttl)
    assert f"got ttl={ttl!r}" in str(raised.value)


@given(st.booleans() | st.text() | st.binary() | st.lists(st.integers()))
def test_validate_ttl_rejects_other_types(ttl: object) -> None:
    with pytest.raises(TypeError) as raised:
        validate_ttl(ttl)
    assert f"got ttl={ttl!r} ({type(ttl).__name__})" in str(raised.value)


def test_validate_ttl_examples() -> None:
    assert validate_ttl(None) is None
    assert validate_ttl(-0.0) == 0.0
    assert math.copysign(1.0, validate_ttl(-0.0) or 0.0) == 1.0
    assert validate_ttl(datetime.timedelta(minutes=2)) == 120.0
    with pytest.raises(ValueError) as raised:
        validate_ttl(-5)
    assert str(raised.value) == (
        "ttl must be seconds (int or float >= 0) or a datetime.timedelta; got ttl=-5"
    )
    with pytest.raises(TypeError, match=re.escape("got ttl='60' (str)")):
        validate_ttl("60")
    with pytest.raises(TypeError, match=re.escape("got ttl=True (bool)")):
        validate_ttl(True)
    with pytest.raises(ValueError, match=re.escape("got ttl=" + repr(10**400))):
        validate_ttl(10**400)


# -- resolve_lifetime --------------------------------------------------------------------------


def test_ttl_overrides_the_policy() -> None:
    assert resolve_lifetime(CachePolicy.NEVER, 60.0, "now") == (None, 60.0)
    assert resolve_lifetime(CachePolicy.FOREVER, 0.0, None) == (None, 0.0)
    assert resolve_lifetime(classify_intent, 5.0, "what is now") == (None, 5.0)


@pytest.mark.parametrize("member", list(CachePolicy))
def test_members_give_their_lifetime(member: CachePolicy) -> None:
    assert resolve_lifetime(member, None, "anything") == (member, member.ttl)


def test_callables_classify_the_prompt() -> None:
    assert resolve_lifetime(classify_intent, None, "What is DNS?") == (CachePolicy.LONG, 86400.0)
    assert resolve_lifetime(classify_intent, None, None) == (CachePolicy.SHORT, 300.0)
    seen: list[str] = []

    def by_length(text: str) -> str:
        seen.append(text)
        return " FOREVER" if len(text) > 3 else "never"

    assert resolve_lifetime(by_length, None, "long prompt") == (CachePolicy.FOREVER, None)
    assert resolve_lifetime(by_length, None, None) == (CachePolicy.NEVER, 0.0)
    assert seen == ["long prompt", ""]


def test_bad_callable_results_name_the_callable() -> None:
    def sloppy(text: str) -> object:
        return "lng"

    def broken(text: str) -> object:
        return None

    with pytest.raises(
        ValueError, match=re.escape("policy callable test_bad_callable_results")
    ) as raised:
        resolve_lifetime(sloppy, None, "x")  # type: ignore[arg-type]
    assert "sloppy returned 'lng'" in str(raised.value)
    assert "'forever'" in str(raised.value)
    with pytest.raises(TypeError, match=r"broken returned None \(NoneType\)"):
        resolve_lifetime(broken, None, "x")  # type: ignore[arg-type]
