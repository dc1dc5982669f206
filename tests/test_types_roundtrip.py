"""Stored answers come back in a new process (issue 9, item 1).

A decorated function's module is written to a temporary directory and imported by two real
child interpreters in turn: the first computes and stores, the second must be served from
disk, as the function's own classes, without paying again, and say why when it cannot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from llm_memo._logic.codec import UntrustedClass, decode_value
from tests.conftest import run_python

pytestmark = pytest.mark.timeout(120)

_CHILD = """
import json, logging, sys
sys.path.insert(0, {where!r})
import llm_memo
llm_memo.configure({directory!r})
logs = []

class Keep(logging.Handler):
    def emit(self, record):
        logs.append([record.levelname, record.getMessage()])

logging.getLogger("llm_memo").addHandler(Keep())
logging.getLogger("llm_memo").setLevel(logging.INFO)
import {module}
{body}
info = {function}.cache_info()
print(json.dumps({{"out": out, "hits": info.hits, "misses": info.misses, "errors": info.errors,
                  "tiers": dict(info.hits_by_tier), "tokens": info.tokens_saved, "cost": info.cost_saved,
                  "logs": logs, "loaded": sorted(m for m in sys.modules if m.startswith("planted"))}}))
"""


def child(tmp_path: Path, module: str, body: str, function: str | None = None) -> dict[str, Any]:
    """Run `body` (which sets `out`) in a new interpreter that imports `module` from tmp_path/src."""
    code = _CHILD.format(where=str(tmp_path / "src"), directory=str(tmp_path / "cache"), module=module,
                         body=textwrap.dedent(body), function=function or f"{module}.ask")
    return json.loads(run_python(code).splitlines()[-1])


def write_module(tmp_path: Path, name: str, source: str) -> None:
    folder = tmp_path / "src"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(source))


# ---- bullet 1: nested models and dataclasses ------------------------------------------------

NESTED_PYDANTIC = """
from __future__ import annotations

from pydantic import BaseModel

import llm_memo

CALLS = []


@llm_memo.llm_cache(policy="forever")
def ask(question: str) -> Answer:
    CALLS.append(question)
    return Answer(text=question.upper(), citations=[Citation(url="https://a.example", quote=Quote(text="q"))])


class Answer(BaseModel):  # each class names the next, defined below it: forward references all along
    text: str
    citations: list[Citation]


class Citation(BaseModel):
    url: str
    quote: Quote | None = None


class Quote(BaseModel):
    text: str
"""


def test_a_nested_pydantic_return_is_served_from_disk_in_a_new_process(tmp_path: Path) -> None:
    write_module(tmp_path, "answers", NESTED_PYDANTIC)
    body = """
        got = answers.ask("why")
        out = [type(got).__name__, type(got.citations[0]).__name__, type(got.citations[0].quote).__name__,
               got.model_dump(), len(answers.CALLS)]
    """
    first = child(tmp_path, "answers", body)
    second = child(tmp_path, "answers", body)
    assert first["misses"] == 1
    assert second["out"] == [*first["out"][:4], 0]  # the same classes and data, and the body did not run
    assert (second["hits"], second["misses"], second["errors"]) == (1, 0, 0)
    assert second["tiers"] == {"disk": 1}
    assert not [line for line in second["logs"] if line[0] == "WARNING"]


SHAPES = """
from __future__ import annotations

import dataclasses
import enum
from typing import Generic, Optional, TypeVar, Union

from pydantic import BaseModel

import llm_memo

T = TypeVar("T")
CALLS = []


class Kind(enum.Enum):
    NOTE = "note"
    CLAIM = "claim"


@dataclasses.dataclass
class Item:
    name: str
    kind: Kind


@dataclasses.dataclass
class Box(Generic[T]):
    item: T


@dataclasses.dataclass
class Note:
    text: str


@dataclasses.dataclass
class Report:
    items: dict[str, Item]
    pairs: tuple[Item, ...]
    note: Optional[Note] = None


class Node(BaseModel):
    label: str
    children: list[Node] = []


class Page(BaseModel, Generic[T]):
    items: list[T]


@llm_memo.llm_cache(policy="forever")
def ask(shape: str) -> Union[Node, Page[Item], Box[Item], Report, None]:
    CALLS.append(shape)
    item = Item("a", Kind.CLAIM)
    if shape == "tree":
        return Node(label="root", children=[Node(label="leaf", children=[Node(label="deep")])])
    if shape == "page":
        return Page[Item](items=[item, Item("b", Kind.NOTE)])
    if shape == "box":
        return Box(item)
    return Report(items={"a": item}, pairs=(item, item), note=Note("n"))
"""


def test_unions_generics_containers_and_recursion_come_back_as_their_classes(tmp_path: Path) -> None:
    write_module(tmp_path, "shapes", SHAPES)
    body = """
        out = [repr(shapes.ask(shape)) for shape in ("tree", "page", "box", "report")] + [len(shapes.CALLS)]
    """
    first = child(tmp_path, "shapes", body)
    second = child(tmp_path, "shapes", body)
    assert first["out"][4] == 4
    assert second["out"] == [*first["out"][:4], 0]  # the same reprs: the same classes, all the way down
    assert (second["hits"], second["errors"]) == (4, 0)
    assert not [line for line in second["logs"] if line[0] == "WARNING"]


UNANNOTATED = """
from pydantic import BaseModel

import llm_memo

CALLS = []


class Citation(BaseModel):
    url: str


class Answer(BaseModel):
    text: str
    citations: list[Citation]


@llm_memo.llm_cache(policy="forever")
def ask(question):
    CALLS.append(question)
    return Answer(text=question, citations=[Citation(url="https://a.example")])


class Reply(BaseModel):
    text: str


@llm_memo.llm_cache(policy="forever")
def other(question):
    CALLS.append(question)
    return Reply(text=question)
"""


def test_allow_type_allows_what_the_class_reaches(tmp_path: Path) -> None:
    write_module(tmp_path, "loose", UNANNOTATED)
    body = """
        llm_memo.allow_type(loose.Answer)  # Citation is reached through Answer.citations
        got = loose.ask("why")
        out = [repr(got), len(loose.CALLS)]
    """
    first = child(tmp_path, "loose", body)
    second = child(tmp_path, "loose", body)
    assert second["out"] == [first["out"][0], 0]
    assert (second["hits"], second["errors"]) == (1, 0)


def test_a_refused_class_says_which_why_and_the_fix_for_each_function(tmp_path: Path) -> None:
    write_module(tmp_path, "loose", UNANNOTATED)
    body = """
        out = [repr(loose.ask("why")), repr(loose.other("why")), len(loose.CALLS)]
        more = loose.other.cache_info()
        out.append([more.hits, more.misses, more.errors])
    """
    first = child(tmp_path, "loose", body)
    second = child(tmp_path, "loose", body)  # nothing allows Answer or Reply in a new process
    assert second["out"][:2] == first["out"][:2]  # the right answers, computed again
    assert second["out"][2] == 2
    assert (second["hits"], second["misses"], second["errors"]) == (0, 1, 1)
    assert second["out"][3] == [0, 1, 1]
    warnings = [message for level, message in second["logs"] if level == "WARNING"]
    assert len(warnings) == 2, warnings  # one for each function, not one per process
    for message, function, cls in zip(warnings, ("ask", "other"), ("Answer", "Reply"), strict=True):
        assert f"loose.{function}" in message
        assert f"loose:{cls}" in message  # which class
        assert "not allowed" in message and "return annotation" in message  # why
        assert f"llm_memo.allow_type(loose.{cls})" in message  # the one line that fixes it
        assert "corrupt" not in message.lower()


VICTIM = """
import llm_memo

PRODUCE = []


@llm_memo.llm_cache(policy="forever")
def ask(question):
    return PRODUCE[0](question) if PRODUCE else "computed"
"""

PLANTED = """
import dataclasses
import pathlib

pathlib.Path({sentinel!r}).write_text("the planted module ran")


@dataclasses.dataclass
class Evil:
    payload: str
"""


def test_an_entry_naming_a_class_nobody_allowed_is_refused_before_its_module_is_imported(tmp_path: Path) -> None:
    sentinel = tmp_path / "sentinel"
    write_module(tmp_path, "victim", VICTIM)
    write_module(tmp_path, "planted", PLANTED.format(sentinel=str(sentinel)))
    writer = """
        import planted
        victim.PRODUCE.append(planted.Evil)  # another program stores an entry under the same key
        out = repr(victim.ask("q"))
    """
    assert child(tmp_path, "victim", writer, "victim.ask")["out"] == "Evil(payload='q')"
    sentinel.unlink()
    reader = child(tmp_path, "victim", 'out = victim.ask("q")', "victim.ask")
    assert reader["out"] == "computed"  # refused: a miss, and the function ran
    assert not sentinel.exists() and reader["loaded"] == []  # planted was never imported
    assert reader["errors"] == 1
    assert any("planted:Evil" in m and "allow_type(planted.Evil)" in m for _, m in reader["logs"])


_HOSTILE_PATHS = [
    "os:system", "subprocess:Popen", "builtins:eval", "planted_never:Thing", "pickle:loads",
    "openai._models:BaseModel", "openai:OpenAI", "openai.types.chat.chat_completion:BaseModel",
    "openai.types.chat.chat_completion:ChatCompletion.__class__",
    "openai.types.chat.chat_completion:ChatCompletion.__init__",
    "openai.types.chat.chat_completion:ChatCompletion.model_validate",
    "openai.types.no_such_module:Thing", "openai.types.chat.__init__:ChatCompletion",
    "openai.types.chat.chat_completion;import os:ChatCompletion", "openai.types..chat:ChatCompletion",
    "openai.types.chat.chat_completion:Literal", "openai.types.chat.chat_completion:Dict",
]


@pytest.mark.parametrize("sdk", ["openai imported", "openai not imported"])
def test_hostile_class_names_are_refused_without_importing_anything_outside_the_sdk_types(sdk: str) -> None:
    code = f"""
        import json, sys
        if {sdk == "openai imported"}:
            import openai
        import orjson
        from llm_memo._logic.codec import UntrustedClass, decode_value
        refused, imported = [], set()
        for path in {_HOSTILE_PATHS!r}:
            before = set(sys.modules)
            for tag in ("pydantic", "dataclass", "enum"):
                try:
                    decode_value(orjson.dumps({{"\\u0000": tag, "v": [path, {{}}]}}))
                except UntrustedClass as exc:
                    refused.append(exc.path in (path, repr(path)))  # repr when not a plain name
            imported |= set(sys.modules) - before
        print(json.dumps([refused, sorted(m for m in imported if not m.startswith("openai.types."))]))
    """
    refused, imported = json.loads(run_python(code).splitlines()[-1])
    assert refused == [True] * 3 * len(_HOSTILE_PATHS)
    assert imported == []  # at most a module of the SDK's types package, and only once openai is imported


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40), st.sampled_from(["pydantic", "dataclass", "enum"]))
def test_any_class_name_outside_the_allowed_is_refused_and_imports_nothing(module: str, name: str, tag: str) -> None:
    assume(not module.startswith("openai.types."))
    before = set(sys.modules)
    with pytest.raises(UntrustedClass) as refused:
        decode_value(orjson.dumps({"\x00": tag, "v": [f"{module}:{name}", {}]}))
    assert set(sys.modules) == before
    assert refused.value.path.isprintable()  # safe to log: a hostile name cannot forge log lines


# ---- bullet 2 and 3: the openai SDK's own objects ---------------------------------------------

PROMPTS = """
import openai
from openai.types.chat import ChatCompletion

import llm_memo

client = openai.OpenAI(base_url={url!r}, api_key="test-key", max_retries=0, timeout=10)
MESSAGES = [{{"role": "user", "content": "Name a colour."}}]


@llm_memo.llm_cache(policy="forever")
def chat(question):
    return client.chat.completions.create(model="openai/gpt-4o-mini", messages=MESSAGES, temperature=0)


@llm_memo.llm_cache(policy="forever")
def chat_typed(question) -> ChatCompletion:
    return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0)


@llm_memo.llm_cache(policy="forever")
def respond(question):
    return client.responses.create(model="gpt-4o-mini", input="Name a colour.", temperature=0)


@llm_memo.llm_cache(policy="forever")
def embed(question):
    return client.embeddings.create(model="text-embedding-3-small", input=question)
"""


@pytest.fixture(scope="module")
def server() -> Any:
    from llm_memo.testing.server import LocalServer

    with LocalServer() as running:
        yield running


_SDK_FUNCTIONS = ("chat", "chat_typed", "respond", "embed")


@pytest.mark.parametrize("layout", ["openrouter", "openai"])
def test_the_sdks_own_objects_come_back_as_themselves_with_provider_extras(
        tmp_path: Path, server: Any, layout: str) -> None:
    url = server.openrouter_url if layout == "openrouter" else server.url
    write_module(tmp_path, "prompts", PROMPTS.format(url=url))
    body = f"""
        out = {{}}
        for name in {_SDK_FUNCTIONS!r}:
            function = getattr(prompts, name)
            got = function("q")
            info = function.cache_info()
            out[name] = [type(got).__module__ + ":" + type(got).__qualname__, got.model_dump(), got.to_dict(),
                         getattr(got.usage, "cost", None), getattr(got, "provider", None),
                         [info.hits, info.misses, info.errors, info.tokens_saved, info.cost_saved]]
    """
    before = len(server.requests)
    first = child(tmp_path, "prompts", body, "prompts.chat")["out"]
    assert len(server.requests) == before + 4
    run = child(tmp_path, "prompts", body, "prompts.chat")
    second = run["out"]
    assert len(server.requests) == before + 4  # served from disk: the provider was not asked again
    assert not [line for line in run["logs"] if line[0] == "WARNING"]
    for name in _SDK_FUNCTIONS:
        kind, _dump, _sent, cost, provider, (hits, misses, errors, tokens, saved) = second[name]
        assert second[name][:5] == first[name][:5], name  # the SDK's class, every field, extras, what was sent
        assert kind.startswith("openai.types."), name
        assert (hits, misses, errors) == (1, 0, 0), name
        assert tokens > 0 and saved > 0, name  # what the hit saved is counted
        if layout == "openrouter":  # OpenRouter's extras survive: r.usage.cost works on a hit as on a miss
            assert isinstance(cost, float) and cost > 0 and saved == pytest.approx(cost), name
            assert provider == ("LocalProvider" if name != "respond" else None), name


# ---- bullet 3 in one process: any return that carries usage ----------------------------------

def _priced(model: str, prompt: int, completion: int) -> float:
    from llm_memo._logic.pricing import cost_of

    return cost_of(model, {"prompt_tokens": prompt, "completion_tokens": completion})


def test_a_dict_with_usage_counts_tokens_and_cost_saved(cache: Any) -> None:
    import llm_memo

    @llm_memo.llm_cache(cache=cache, policy="forever")
    def ask(q: str) -> dict[str, Any]:
        return {"model": "gpt-4o-mini", "text": q, "usage": {"prompt_tokens": 1000, "completion_tokens": 500}}

    ask("a")
    ask("a")
    info = ask.cache_info()
    assert info.hits == 1
    assert info.tokens_saved == 1500
    assert info.cost_saved == pytest.approx(_priced("gpt-4o-mini", 1000, 500)) and info.cost_saved > 0


def test_a_model_with_a_usage_attribute_counts_the_providers_cost_when_it_sent_one(cache: Any) -> None:
    from pydantic import BaseModel, ConfigDict

    import llm_memo

    class Usage(BaseModel):
        model_config = ConfigDict(extra="allow")
        input_tokens: int
        output_tokens: int

    class Reply(BaseModel):
        model: str
        usage: Usage

    @llm_memo.llm_cache(cache=cache, policy="forever")
    def priced(q: str) -> Reply:
        return Reply(model="gpt-4o", usage=Usage(input_tokens=2000, output_tokens=100))

    @llm_memo.llm_cache(cache=cache, policy="forever")
    def billed(q: str) -> Reply:
        return Reply(model="gpt-4o", usage=Usage(input_tokens=10, output_tokens=20, cost=0.125))

    for function in (priced, billed):
        function("a")
        assert function("a").usage.input_tokens in (2000, 10)
    assert priced.cache_info().tokens_saved == 2100
    assert priced.cache_info().cost_saved == pytest.approx(_priced("gpt-4o", 2000, 100))
    assert billed.cache_info().tokens_saved == 30
    assert billed.cache_info().cost_saved == pytest.approx(0.125)
    assert billed("a").usage.cost == 0.125  # the extra field is stored with its model


def test_the_cli_shows_exports_and_imports_entries_whose_classes_it_does_not_rebuild(tmp_path: Path) -> None:
    write_module(tmp_path, "loose", UNANNOTATED)
    key = child(tmp_path, "loose", 'loose.ask("why")\nout = loose.ask.cache_key("why")')["out"]
    environment = {**os.environ, "LLM_MEMO_DIR": str(tmp_path / "cache"), "NO_COLOR": "1"}

    def cli(*args: str, directory: Path = tmp_path / "cache") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "llm_memo", *args], capture_output=True, text=True,
                              env={**environment, "LLM_MEMO_DIR": str(directory)}, timeout=60)

    shown = cli("show", key)
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    assert "loose:Answer" in shown.stdout and "https://a.example" in shown.stdout
    exported = tmp_path / "entries.jsonl"
    assert cli("export", str(exported)).returncode == 0
    imported = cli("import", str(exported), directory=tmp_path / "other")
    assert (imported.returncode, imported.stdout) == (0, "imported 1, already stored 0\n"), imported.stderr
