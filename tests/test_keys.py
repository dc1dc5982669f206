"""Cache keys: binding to the signature, what is left out, source fingerprints, golden vectors."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import importlib.util
import inspect
import json
import math
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_memo import UnkeyableArgumentError, llm_cache
from llm_memo._logic.keys import (
    KEY_FORMAT,
    Binder,
    KeyMaker,
    compute_key,
    is_sdk_client,
    source_fingerprint,
)

# -- binding -------------------------------------------------------------------------------------


@llm_cache(track_source=False)
def complete(prompt: str, model: str = "gpt-4o-mini", temperature: float = 0.0, *, max_tokens: int = 256,
             **options: Any) -> str:
    raise AssertionError("cache_key never calls the function")


def test_spellings_of_one_call_share_a_key() -> None:
    key = complete.cache_key("x")
    assert len(key) == 64 and int(key, 16) >= 0
    assert complete.cache_key(prompt="x") == key
    assert complete.cache_key("x", "gpt-4o-mini") == key
    assert complete.cache_key("x", model="gpt-4o-mini") == key
    assert complete.cache_key(model="gpt-4o-mini", prompt="x") == key
    assert complete.cache_key("x", "gpt-4o-mini", 0.0, max_tokens=256) == key
    assert complete.cache_key(temperature=0.0, max_tokens=256, prompt="x") == key


@pytest.mark.parametrize(("args", "kwargs"), [
    (("y",), {}),
    (("x", "gpt-4o"), {}),
    (("x",), {"model": "gpt-4o"}),
    (("x",), {"temperature": 0.5}),
    (("x",), {"temperature": 1e-9}),  # (0 and 0.0 mean one temperature: tests/test_collisions.py)
    (("x",), {"max_tokens": 255}),
    (("x",), {"seed": 1}),
    (("x",), {"seed": None}),
    (("X",), {}),
    (("x ",), {}),
])
def test_a_different_value_of_any_argument_changes_the_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    assert complete.cache_key(*args, **kwargs) != complete.cache_key("x")


def test_keyword_order_never_matters() -> None:
    a = complete.cache_key("x", seed=1, user="u", tools=["a"], max_tokens=5)
    b = complete.cache_key(max_tokens=5, tools=["a"], user="u", seed=1, prompt="x")
    assert a == b
    assert complete.cache_key("x", seed=1, user="u") != complete.cache_key("x", seed="u", user=1)


def test_bad_calls_raise_type_error_before_anything_is_keyed() -> None:
    with pytest.raises(TypeError):
        complete.cache_key()
    with pytest.raises(TypeError):
        complete.cache_key("x", prompt="y")
    with pytest.raises(TypeError):
        complete.cache_key("x", "m", 0.0, 256)


def f_plain(a, b=2, c="c"):  # type: ignore[no-untyped-def]
    pass


def f_kwonly(a, *, b, c=3):  # type: ignore[no-untyped-def]
    pass


def f_varkw(a, b=None, *, c=1, **kw):  # type: ignore[no-untyped-def]
    pass


def f_varargs(a, *rest, b=0, **kw):  # type: ignore[no-untyped-def]
    pass


def f_posonly(a, /, b=1, *, c=2, **kw):  # type: ignore[no-untyped-def]
    pass


def f_empty():  # type: ignore[no-untyped-def]
    pass


def f_only_kw(**kw):  # type: ignore[no-untyped-def]
    pass


FUNCTIONS = [f_plain, f_kwonly, f_varkw, f_varargs, f_posonly, f_empty, f_only_kw]
NAMES = ["a", "b", "c", "kw", "rest", "d", "self", "prompt"]


def python_binds(signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return TypeError
    bound.apply_defaults()
    return dict(bound.arguments)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(FUNCTIONS), st.lists(st.integers(0, 9), max_size=5).map(tuple),
       st.dictionaries(st.sampled_from(NAMES), st.integers(0, 9), max_size=4))
def test_binder_binds_like_python(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    signature = inspect.signature(func)
    expected = python_binds(signature, args, kwargs)
    binder = Binder(signature)
    if expected is TypeError:
        with pytest.raises(TypeError):
            binder.bind(args, kwargs)
    else:
        assert binder.bind(args, kwargs) == expected
        assert binder.bind(args, dict(reversed(list(kwargs.items())))) == expected


# -- what is left out of the key -----------------------------------------------------------------


def test_ignore_removes_a_parameter() -> None:
    def ask(prompt: str, client: Any = None, trace: str = "") -> str:
        return prompt

    cached = llm_cache(ignore=["client", "trace"], track_source=False)(ask)
    assert cached.cache_key("x", object(), "t1") == cached.cache_key("x", client=object(), trace="t2")
    assert cached.cache_key("x", lambda: 0) == cached.cache_key("x")  # not even encoded
    assert cached.cache_key("x") != cached.cache_key("y")
    single = llm_cache(ignore="client", track_source=False)(ask)
    assert single.cache_key("x", object()) == single.cache_key("x", client=None)


def test_ignore_of_an_unknown_name_raises_value_error_naming_it() -> None:
    def ask(prompt: str, model: str = "m") -> str:
        return prompt

    with pytest.raises(ValueError, match="clinet") as raised:
        llm_cache(ignore=["clinet"])(ask)
    assert "prompt" in str(raised.value) and "model" in str(raised.value)


def test_ignore_of_an_unknown_name_drops_that_kwargs_entry_when_the_function_takes_kwargs() -> None:
    def ask(prompt: str, **options: Any) -> str:
        return prompt

    cached = llm_cache(ignore=["request_id"], track_source=False)(ask)
    assert cached.cache_key("x", request_id=1) == cached.cache_key("x", request_id=2) == cached.cache_key("x")
    assert cached.cache_key("x", request_id=1, seed=1) != cached.cache_key("x", request_id=1, seed=2)


@pytest.fixture
def clients() -> Any:
    http = httpx.Client()
    http2 = httpx.Client(base_url="http://127.0.0.1:9")
    sdk = openai.OpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1")
    try:
        yield [http, http2, sdk]
    finally:
        sdk.close()
        http2.close()
        http.close()


def test_sdk_clients_are_never_part_of_the_key(clients: list[Any]) -> None:
    assert all(is_sdk_client(c) for c in clients)
    assert not any(is_sdk_client(v) for v in ("x", 1, None, [clients[0]], object()))

    @llm_cache(track_source=False)
    def ask(prompt: str, client: Any = None, model: str = "m") -> str:
        return prompt

    keys = {ask.cache_key("x", c) for c in clients} | {ask.cache_key("x", client=c, model="m") for c in clients}
    assert len(keys) == 1
    assert ask.cache_key("x", clients[0], "m2") != ask.cache_key("x", clients[0], "m")


def test_sdk_clients_passed_through_kwargs_are_left_out_too(clients: list[Any]) -> None:
    @llm_cache(track_source=False)
    def ask(prompt: str, **options: Any) -> str:
        return prompt

    keys = {ask.cache_key("x", client=c, seed=1) for c in clients}
    assert keys == {ask.cache_key("x", seed=1)}


def test_key_function_replaces_the_argument_part() -> None:
    def ask(prompt: str, client: Any = None, model: str = "m") -> str:
        return prompt

    cached = llm_cache(key=lambda prompt, client=None, model="m": [prompt.strip().lower(), model],
                       track_source=False)(ask)
    assert cached.cache_key("Hi ", lambda: 0) == cached.cache_key("hi", client=object())
    assert cached.cache_key("hi") != cached.cache_key("hi", model="m2")
    assert cached.cache_key("hi") != cached.cache_key("ho")
    assert cached.cache_key("hi") != llm_cache(track_source=False)(ask).cache_key("hi")

    unkeyable = llm_cache(key=lambda prompt, **_: object(), track_source=False)(ask)
    with pytest.raises(UnkeyableArgumentError):
        unkeyable.cache_key("hi")


def test_version_and_namespace_change_the_key() -> None:
    def ask(prompt: str) -> str:
        return prompt

    variants = [
        {}, {"version": "1"}, {"version": "2"}, {"version": 1}, {"version": ("1",)},
        {"namespace": "tenant-a"}, {"namespace": "tenant-b"}, {"namespace": ""},
        {"version": "1", "namespace": "tenant-a"},
    ]
    keys = [llm_cache(track_source=False, **options)(ask).cache_key("x") for options in variants]
    assert len(set(keys)) == len(variants)
    again = [llm_cache(track_source=False, **options)(ask).cache_key("x") for options in variants]
    assert again == keys


def test_options_outside_the_key_leave_it_alone() -> None:
    def ask(prompt: str) -> str:
        return prompt

    base = llm_cache(track_source=False)(ask).cache_key("x")
    assert llm_cache(track_source=False, ttl=60, tags=["a"], policy="long")(ask).cache_key("x") == base


# -- methods -------------------------------------------------------------------------------------


class Assistant:
    calls = 0

    def __init__(self, name: str) -> None:
        self.name = name

    @llm_cache(track_source=False, ttl=3600)
    def ask(self, prompt: str, model: str = "m") -> str:
        Assistant.calls += 1
        return f"{prompt}!"


class Persona:
    def __init__(self, system: str) -> None:
        self.system = system

    def __llm_memo_key__(self) -> Any:
        return {"system": self.system}

    @llm_cache(track_source=False)
    def ask(self, prompt: str) -> str:
        return prompt


def test_self_is_not_keyed() -> None:
    a, b = Assistant("a"), Assistant("b")
    assert a.ask.cache_key("x") == b.ask.cache_key("x") == Assistant("a").ask.cache_key("x")
    assert a.ask.cache_key("x") != a.ask.cache_key("y")
    assert a.ask.cache_key("x") == a.ask.cache_key(prompt="x", model="m")


def test_two_instances_share_entries() -> None:
    Assistant.calls = 0
    assert Assistant("a").ask("shared prompt") == "shared prompt!"
    assert Assistant("b").ask("shared prompt") == "shared prompt!"
    assert Assistant.ask(Assistant("c"), "shared prompt") == "shared prompt!"
    assert Assistant.calls == 1


def test_the_key_of_a_call_through_the_class_is_the_key_of_the_call() -> None:
    a = Assistant("a")
    assert Assistant.ask.cache_key(a, "x") == a.ask.cache_key("x")


def test_llm_memo_key_keys_by_state_not_identity() -> None:
    assert Persona("terse").ask.cache_key("x") == Persona("terse").ask.cache_key("x")
    assert Persona("terse").ask.cache_key("x") != Persona("verbose").ask.cache_key("x")
    p = Persona("terse")
    before = p.ask.cache_key("x")
    p.system = "verbose"
    assert p.ask.cache_key("x") == Persona("verbose").ask.cache_key("x") != before


def test_the_key_never_depends_on_object_identity() -> None:
    @dataclasses.dataclass
    class Message:
        role: str
        content: str

    @llm_cache(track_source=False)
    def chat(messages: list[Message]) -> str:
        return ""

    first = chat.cache_key([Message("user", "hi")])
    assert chat.cache_key([Message("user", "hi")]) == first
    assert chat.cache_key([Message("user", "ho")]) != first
    with pytest.raises(UnkeyableArgumentError, match="messages"):
        chat.cache_key([object()])


# -- source fingerprint --------------------------------------------------------------------------

MODULE_NAME = "llm_memo_fingerprint_probe"
BASE = '''
from llm_memo import llm_cache


@llm_cache(ttl=60)
def ask(prompt, model="m"):
    text = "Answer briefly: " + prompt
    return text
'''


def load(tmp_path: Path, label: str, source: str) -> ModuleType:
    """Import `source` as MODULE_NAME from its own directory (no stale linecache or .pyc)."""
    path = tmp_path / label / f"{MODULE_NAME}.py"
    path.parent.mkdir()
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def key_of(tmp_path: Path, label: str, source: str) -> str:
    return load(tmp_path, label, source).ask.cache_key("x")


def test_source_fingerprint_is_a_sha256_when_source_exists(tmp_path: Path) -> None:
    module = load(tmp_path, "base", BASE)
    fingerprint = source_fingerprint(module.ask)
    assert len(fingerprint) == 64 and fingerprint == source_fingerprint(module.ask.__wrapped__)
    assert source_fingerprint(len) == ""
    assert module.ask.cache_function_name == f"{MODULE_NAME}.ask"


def test_editing_the_body_changes_the_key(tmp_path: Path) -> None:
    base = key_of(tmp_path, "base", BASE)
    assert key_of(tmp_path, "again", BASE) == base
    assert key_of(tmp_path, "edited", BASE.replace("briefly", "in one word")) != base
    assert key_of(tmp_path, "renamed", BASE.replace("text", "answer")) != base
    assert key_of(tmp_path, "default", BASE.replace('model="m"', 'model="n"')) != base


def test_comments_blank_lines_and_decorator_options_keep_the_key(tmp_path: Path) -> None:
    base = key_of(tmp_path, "base", BASE)
    commented = BASE.replace(
        '    text = "Answer briefly: " + prompt\n',
        '    # build the prompt\n\n    text = "Answer briefly: " + prompt\n\n        # indented note\n',
    )
    assert key_of(tmp_path, "commented", commented) == base
    redecorated = BASE.replace("@llm_cache(ttl=60)", '@llm_cache(\n    ttl=3600,\n    tags=["docs"],\n)')
    assert key_of(tmp_path, "redecorated", redecorated) == base
    moved = "\n\n\n# a header comment\nimport os\n" + BASE
    assert key_of(tmp_path, "moved", moved) == base


def test_editing_a_line_of_a_prompt_template_that_looks_like_a_comment_changes_the_key(tmp_path: Path) -> None:
    # Prompt templates are multi-line strings, and Markdown headings start with "#". Those
    # lines are the prompt, not comments: editing one must give fresh results.
    template = '''
    from llm_memo import llm_cache


    @llm_cache(ttl=60)
    def ask(prompt):
        return f"""
    # Task
    Summarise the text below.

    {prompt}
    """
    '''
    base = key_of(tmp_path, "base", template)
    assert key_of(tmp_path, "heading", template.replace("# Task", "# Task: answer in French")) != base
    assert key_of(tmp_path, "blank", template.replace("below.\n\n", "below.\n\n\n")) != base


def test_track_source_false_ignores_body_edits(tmp_path: Path) -> None:
    source = BASE.replace("@llm_cache(ttl=60)", "@llm_cache(ttl=60, track_source=False)")
    base = key_of(tmp_path, "base", source)
    assert key_of(tmp_path, "edited", source.replace("briefly", "in one word")) == base
    assert base != key_of(tmp_path, "tracked", BASE)


# -- golden vectors ------------------------------------------------------------------------------
#
# These keys were computed once, by running compute_key (and cache_key) of llm_memo 0.1.0, key
# format "llm_memo/key/1", on CPython 3.11 with orjson 3.13 (the same at commits 0379e29 and
# a9df1d2), and pasted here as literals. Every persisted cache entry is found by
# such a key: if one of these tests fails, the change has orphaned every user's cache (each
# call misses, recomputes and pays again). Do not edit the vectors. If the change is wanted,
# bump KEY_FORMAT (llm_memo._logic.keys) so old and new keys never meet, and re-pin the vectors
# together with that bump. (After joblib's test_hashes_stay_the_same.)


class Role(enum.Enum):
    USER = "user"
    ASSISTANT = "assistant"


Role.__module__ = "golden"  # pin the class name the key carries, whatever pytest calls this module


GOLDEN_PARTS = ("golden.prompts", "Prompts.ask", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")

GOLDEN: list[tuple[str, Any, str | None, dict[str, Any], str]] = [
    ("string", None, None, {"prompt": "Hello, world"},
     "1b4e65866e2a8167b713090a4e5ee46cde5ffc545a5cd7e48d067ec9276b579b"),
    ("unicode", None, None, {"prompt": "Grüße, 世界 👋", "model": "gpt-4o-mini"},
     "5d48e225886805652e8ddde3a90aa9f823235b6746dc8477f7cbf449a2ef35ef"),
    ("scalars", None, None, {"n": 3, "temperature": 0.0, "top_p": 1.0, "stream": False, "seed": None, "neg": -0.0},
     "52947abbdaf5782f214f4ab18c6fa4d8f472cd87a13413b782a9d7478c9662c2"),
    ("messages", "2", None, {"messages": [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "Hi"}], "model": "m"},
     "53e7b8bf49f06b07532df64c8c71e6b92185069d595a168580dca121f3a6d90d"),
    ("set", None, "tenant-a", {"stop": {"\n\n", "END", "###"}, "ids": frozenset({3, 1, 2})},
     "2b4ddc0964b6033ed109efca31934be75b960e5d9a5dab5bf4cfaa1d7c6b4cd2"),
    ("bytes", None, None, {"payload": b"\x00\xffbytes", "buffer": bytearray(b"ab")},
     "ff9c7416e36b79837d64bda181b39215dec0ad523c3d46264a67501e48e282ac"),
    ("datetimes", None, None, {"when": dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone.utc),
                               "day": dt.date(2024, 5, 6), "naive": dt.datetime(2024, 5, 6, 7, 8)},
     "8bae65b98c1ea2979bd10e60c41519756b6097b4ef26190eb48a56a057b01640"),
    ("decimal-uuid", ("v", 3), None, {"price": decimal.Decimal("12.50"), "id": uuid.UUID(int=42)},
     "de7edf17370baed70e556158fab87e53e47d06c6173afb8cc5b17b2c09e4c456"),
    ("enum", None, None, {"role": Role.USER, "history": [Role.ASSISTANT, "assistant"]},
     "35019add1bc085a1ab2a7c34128e6bcd1d7eddc43b44e84294b6eaf3bcb4b7ec"),
    ("nan-inf", None, None, {"x": math.nan, "y": math.inf, "z": -math.inf},
     "018fc6da83cb127a0978ac1e92888a7f004a868085756f8c390e718c85cac602"),
    ("big-int", None, None, {"big": 2**100, "neg": -(2**70), "edge": 2**64 - 1},
     "579e55090f24254b1440091a29d7ebb77c124c7b0a8b2b91a669357e415a0118"),
    ("non-str-keys", None, None, {"opts": {1: "one", (2, 3): "pair", None: "none", "1": "str"}},
     "470454a6ae42e6cf2c312143f42ac278b9e50afcca62ea47dcd5520627564e83"),
    ("nul-surrogate", None, None, {"text": "a\x00b", "odd": "\ud800x"},
     "1e4402f8d1b2e2cf51dc55156e62fceb500ddd8445624206eca4d0cabdafae1f"),
    ("no-arguments", None, None, {},
     "e8a16c64857dabc93bff55740caf49f3b50e7ddec86f6c05c76815445480b0a1"),
]


@pytest.mark.parametrize(("version", "namespace", "arguments", "expected"),
                         [g[1:] for g in GOLDEN], ids=[g[0] for g in GOLDEN])
def test_golden_keys(version: Any, namespace: str | None, arguments: dict[str, Any], expected: str) -> None:
    assert KEY_FORMAT == "llm_memo/key/1"
    assert compute_key(*GOLDEN_PARTS, version, namespace, arguments) == expected


@llm_cache(track_source=False, version="golden")
def golden_prompt(prompt: str, model: str = "gpt-4o-mini", *, temperature: float = 0.0, **options: Any) -> str:
    raise AssertionError("cache_key never calls the function")


# The module name is part of the key, and pytest names this module by its import mode.
GOLDEN_DECORATED = {
    "test_keys": "12d2e1acd1e5c41dadb94ad982abb31562c972ebd43910698feac1a5cd24c929",
    "tests.test_keys": "b8362a0dbe315b5c96d5aeffa27f0a218b4c9543b6f3d044792f54e68ec3a586",
}


def test_golden_key_of_a_decorated_function() -> None:
    module = golden_prompt.cache_function_name.rpartition(".")[0]
    assert module in GOLDEN_DECORATED
    expected = GOLDEN_DECORATED[module]
    assert golden_prompt.cache_key("Say hi", seed=7, stop=["\n"]) == expected
    assert golden_prompt.cache_key(prompt="Say hi", model="gpt-4o-mini", temperature=0.0,
                                   stop=["\n"], seed=7) == expected
    arguments = {"prompt": "Say hi", "model": "gpt-4o-mini", "temperature": 0.0,
                 "options": {"seed": 7, "stop": ["\n"]}}
    assert compute_key(module, "golden_prompt", "", "golden", None, arguments) == expected


FSTRING_SOURCE = '''
from llm_memo import llm_cache


@llm_cache(ttl=60)  # the decorator line is left out
def ask(prompt, model="m"):
    # a comment-only line
    template = f"""You are terse.
Question: {prompt!r}  # not a comment: inside the string
"""
    return template.format()  # a trailing comment
'''

# Source fingerprints enter every default key (track_source=True), so they are pinned too:
# computed once by llm_memo 0.1.0 and checked to be the same under CPython 3.10, 3.11, 3.12
# (f-strings tokenized apart) and 3.13. Same rule as above: never edit, bump KEY_FORMAT.
GOLDEN_FINGERPRINTS = {
    "plain": (BASE, "de30f528453c44882903e45d92131aafa8e9cd97e795e7d0769b406bf62699d4"),
    "f-string, comments": (FSTRING_SOURCE, "db71337ce0e9516e525036cebdc6ab7b5203e51c6301485df8bb66d1fe8e5d28"),
}


@pytest.mark.parametrize("label", list(GOLDEN_FINGERPRINTS))
def test_golden_source_fingerprints(tmp_path: Path, label: str) -> None:
    source, expected = GOLDEN_FINGERPRINTS[label]
    assert source_fingerprint(load(tmp_path, "golden", source).ask) == expected


def test_key_maker_agrees_with_compute_key() -> None:
    def ask(prompt: str, n: int = 1) -> str:
        return prompt

    maker = KeyMaker(ask, version="v", namespace="ns", track_source=True)
    arguments = maker.binder.bind(("x",), {})
    assert maker.key(maker.keyed_arguments(arguments)) == compute_key(
        ask.__module__, ask.__qualname__, source_fingerprint(ask), "v", "ns", {"prompt": "x", "n": 1})


# -- stability across processes and hash seeds ---------------------------------------------------

STABILITY_SCRIPT = r"""
import datetime, json, math
from llm_memo._logic.keys import compute_key

cases = [
    {"stop": {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"}},
    {"tags": frozenset(f"tag-{i}" for i in range(40))},
    {"nested": {"b": {"y", "x"}, "a": [{"z": 1, "y": 2}], ("t", 1): "tuple-key", 3: "int-key"}},
    {"messages": [{"role": "user", "content": "hi"}], "model": "m", "x": math.nan},
    {"mixed": {1, "1", 1.5, None, ("a", "b"), frozenset({"p", "q"})}},
    {"when": datetime.date(2024, 1, 2), "bytes": b"\x00\x01"},
]
print(json.dumps([compute_key("m", "f", "", None, "ns", c) for c in cases]))
"""


def stability_cases() -> list[dict[str, Any]]:
    namespace: dict[str, Any] = {}
    exec(STABILITY_SCRIPT.replace("print(", "result = ("), namespace)
    return json.loads(namespace["result"])


@pytest.mark.slow
def test_keys_are_the_same_in_every_process_and_hash_seed() -> None:
    in_process = stability_cases()
    assert len(set(in_process)) == len(in_process)
    for seed in ("0", "1", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", STABILITY_SCRIPT], env=env, capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == in_process, f"PYTHONHASHSEED={seed}"


# -- golden vectors pinned when issue 9 changed the encoding (key format "llm_memo/key/1") ------
#
# Computed by compute_key and cache_key on main at f08b444 (before issue 9, item 2), on CPython 3.11
# with orjson 3.x, pydantic 2 and numpy 2: encodings that the fixes for colliding keys must NOT move
# (str-mixin Enum members, numpy scalars, pydantic models that take no extras, and calls spelling
# a generation setting as its parameter declares it). Same rule as above: never edit.


class Tone(str, enum.Enum):
    TERSE = "terse"
    WARM = "warm"


Tone.__module__ = "golden"


def _golden_models() -> tuple[Any, Any]:
    import pydantic

    class Persona(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="allow")
        name: str
        style: Any = None

    class Strict(pydantic.BaseModel):
        system: str = pydantic.Field(alias="systemPrompt")
        temperature: float = 0.0

    Persona.__module__ = Strict.__module__ = "golden"
    Persona.__qualname__, Strict.__qualname__ = "Persona", "Strict"
    return Persona, Strict


def _golden_stable_cases() -> dict[str, tuple[dict[str, Any], str]]:
    np = pytest.importorskip("numpy")
    _, strict = _golden_models()
    return {
        "str-enum": ({"tone": Tone.TERSE, "tones": [Tone.WARM, "warm"], "by": {Tone.TERSE: 1}},
                     "016c837b6a3d1911e0cf51e547746b50cca7d4e4b1c80bcbea040a0d03669cb4"),
        "numpy-scalars": ({"t": np.float64(0.5), "s": np.str_("a"), "d": {np.str_("k"): np.float64(2.0)}},
                          "4ed8b5067b9b27be3e6a2fa9e25c9a7618332e6604e207801fe0476d44cddda5"),
        "pydantic-no-extras": ({"strict": strict(systemPrompt="Be brief."), "nested": [strict(systemPrompt="x")]},
                               "586b8fb586a93e9d9468eb3d6e19c26f0452be17264b56c569d9189766dab21c"),
    }


@pytest.mark.parametrize("label", ["str-enum", "numpy-scalars", "pydantic-no-extras"])
def test_golden_keys_that_issue_9_must_not_move(label: str) -> None:
    arguments, expected = _golden_stable_cases()[label]
    assert compute_key(*GOLDEN_PARTS, None, None, arguments) == expected


def _golden_function(func: Any, name: str) -> Any:
    func.__module__, func.__qualname__ = "golden", name
    return llm_cache(track_source=False)(func)


def _float_defaults(prompt: str, temperature: float = 0.0, top_p: float = 1.0, max_tokens: int = 256,
                    **options: Any) -> str:
    raise AssertionError("cache_key never calls the function")


def _int_default(prompt: str, temperature: float = 0, seed: int | None = None) -> str:
    raise AssertionError("cache_key never calls the function")


def _declared(prompt: str, temperature: float | None = None, *, top_k: int) -> str:
    raise AssertionError("cache_key never calls the function")


FLOAT_DEFAULTS = _golden_function(_float_defaults, "float_defaults")
INT_DEFAULT = _golden_function(_int_default, "int_default")
DECLARED = _golden_function(_declared, "declared")

GOLDEN_SETTINGS: list[tuple[str, Any, tuple[Any, ...], dict[str, Any], str]] = [
    ("float-defaults", FLOAT_DEFAULTS, ("x",), {},
     "21b53a62ad3224edd944434f7fffa02634b5507e10d5be4fd2be995daf7fba09"),
    ("float-defaults-kwargs", FLOAT_DEFAULTS, ("x",),
     {"temperature": 0.7, "frequency_penalty": 0, "presence_penalty": 0.5, "seed": 3},
     "1ed60dd2e53fe4429fa7b047fab504198cd060bef043ec8f3928cb939e4777a0"),
    ("int-default", INT_DEFAULT, ("x",), {},
     "70c515c27432d21b252393e7e11067c3ae5e34d39b901136c6d2d8b70df0f8a8"),
    ("int-default-seed", INT_DEFAULT, ("x",), {"temperature": 1, "seed": 42},
     "1d0bab42f06b9b1e390285aafe8d9f455c76888d08f68bae21908eb6e8c2cefb"),
    ("declared-float", DECLARED, ("x",), {"temperature": 0.0, "top_k": 40},
     "99be9acb92f5485902351b486a8b42f7cfcaa63c2e88238ce36dd32d995c5ac8"),
    ("declared-none", DECLARED, ("x",), {"top_k": 1},
     "f1b85f1c0106fcc42c3057740107479bdc552704cacd39a35dc77b30eaa1b677"),
]


@pytest.mark.parametrize(("fn", "args", "kwargs", "expected"), [g[1:] for g in GOLDEN_SETTINGS],
                         ids=[g[0] for g in GOLDEN_SETTINGS])
def test_golden_keys_of_generation_settings_spelled_as_declared(fn: Any, args: tuple[Any, ...],
                                                               kwargs: dict[str, Any], expected: str) -> None:
    assert fn.cache_key(*args, **kwargs) == expected


# Golden vectors of the encodings issue 9 added (computed once when they were introduced, key format
# still "llm_memo/key/1": the new encodings use a tag or payload shape no earlier key holds, so they
# can never meet an old key). Same rule: never edit.


class GoldenText(str):
    def __str__(self) -> str:
        return "constant"


class GoldenCount(int):
    pass


class GoldenRatio(float):
    pass


class GoldenBlob(bytes):
    pass


for _cls in (GoldenText, GoldenCount, GoldenRatio, GoldenBlob):
    _cls.__module__ = "golden"


def _golden_new_cases() -> dict[str, tuple[dict[str, Any], str]]:
    persona, _ = _golden_models()
    return {
        "pydantic-extras": ({"persona": persona(name="bot", system="Be terse.", examples=[1, 2])},
                            "3c0329d14488dc65da1aea4358247fdee269897a09e92c215e77fdf949efe765"),
        "pydantic-takes-extras": ({"persona": persona(name="bot", style={"x": 1})},
                                  "61d86be06e54c5554f43fb5736ac1114d6bd88a81f9280b0aa6155add7c40e57"),
        "scalar-subclasses": ({"text": GoldenText("hi"), "count": GoldenCount(3), "ratio": GoldenRatio(0.5),
                               "blob": GoldenBlob(b"\x00x"), "big": GoldenCount(2**70)},
                              "52389732beec15debbd8c9f6cfbddd973734b66db832b4a0289d70578de3bf28"),
        "subclass-dict-key": ({"headers": {GoldenText("k"): "v", "j": "w"}},
                              "617a6edd24f97b473bd2164f8daffced056eff99230f9b09d3a37673d6ebeb8a"),
    }


@pytest.mark.parametrize("label", ["pydantic-extras", "pydantic-takes-extras", "scalar-subclasses",
                                   "subclass-dict-key"])
def test_golden_keys_of_the_encodings_issue_9_added(label: str) -> None:
    arguments, expected = _golden_new_cases()[label]
    assert compute_key(*GOLDEN_PARTS, None, None, arguments) == expected
