"""Redaction: secret names and secret values, each rule tested alone, and ordinary prompts left alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llm_memo import Cache, llm_cache
from llm_memo._logic.redact import REDACTED, preview, public_url, scrub, secret_name

# Shaped like the real thing: random-looking runs behind each provider's prefix.
SECRET_VALUES = [
    "sk-proj-Qm7xT2vLk9RzW4nB8cYd1HfJ",
    "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",
    "sk-ant-api03-Zx8Vb2Nm4Lk6Jh8Gf0Ds2Aq4We6Rt8Yu0",
    "gsk_Pq2Wr4Et6Yu8Io0Pa2Sd4Fg6Hj8Kl0Zx",
    "hf_QwErTyUiOpAsDfGhJkLzXcVbNmQwErTy12",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
    "xoxb-2048163510-4096327020-Ab1Cd2Ef3Gh4",
    "Bearer a1B2c3D4e5F6g7H8",
    "Basic Ym9iOmh1bnRlcjI=",  # bob:hunter2
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
]
SECRET_NAMES = [
    "accessToken", "openaiApiKey", "OPENAI_API_KEY", "hf_key", "auth", "Authorization", "api-key", "x-api-key",
    "X-Api-Key", "client_secret", "clientSecret", "password", "PASSWORD", "passwd", "private_key", "session_id",
    "sessionId", "APIKey", "apikey", "openaiapikey", "token", "refresh_token", "credentials", "cookie",
    "proxy-authorization", "aws_secret_access_key", "api_key_2", "X-Amz-Signature",
]
ORDINARY_NAMES = [
    "prompt", "messages", "model", "temperature", "max_tokens", "maxTokens", "tokens", "token_count",
    "tokenizer", "author", "authority", "user", "seed", "top_p", "sort_key", "primary_key", "public_key",
    "api_version", "base_url", "keyword", "key_function", "monkey", "system", "stop",
]
ORDINARY_TEXT = [
    "Count the tokens in this text and report the token budget.",
    "Token: the smallest unit of text a model reads.",
    "Is sk-learn the same as scikit-learn?",
    "Explain what a bearer instrument is, and why basic questions matter.",
    "Why does my password reset email not arrive?",
    "Use hf_hub_download to fetch the model, then call it with max_tokens=100.",
    "See https://example.com/search?q=cats&page=2 and http://localhost:8080/v1.",
    "The API key rotation policy says keys expire after 90 days.",
    "Set temperature=0 and seed=42; the primary key is user_id.",
]
VOCABULARY = ["the", "token", "tokens", "key", "keys", "secret", "password", "bearer", "basic", "auth", "api",
              "Bearer", "Basic", "sk-learn", "hf_hub", "model", "prompt", "answer", "2024", "v1", "of", "a",
              "OpenAI", "Authorization", "credentials", "session", "id", "cookie", "x-api-key", "ghp", "AKIA"]


# ---- one test per rule, alone --------------------------------------------------------------------

def _stored_arguments(tmp_path: Path, **kwargs: Any) -> dict[str, Any]:
    with Cache(tmp_path / "cache") as cache:

        @llm_cache(cache=cache, ttl=60)
        def ask(prompt: str, **settings: Any) -> str:
            return "an answer"

        ask("hello", **kwargs)
        entry = cache.get_entry(ask.cache_key("hello", **kwargs))
        assert entry is not None
        return entry.metadata["args"]


def test_a_secret_name_hides_a_plain_value(tmp_path: Path) -> None:
    """The name rule alone: nothing about "hunter2" looks like a secret."""
    assert scrub("hunter2") == "hunter2"
    stored = _stored_arguments(tmp_path, password="hunter2", mode="hunter2")
    assert stored["settings"] == {"password": REDACTED, "mode": "hunter2"}


def test_a_secret_value_is_hidden_under_a_plain_name(tmp_path: Path) -> None:
    """The value rule alone: "note" is no secret's name."""
    assert not secret_name("note")
    stored = _stored_arguments(tmp_path, note="Bearer a1B2c3D4e5F6g7H8", other="Bearer of bad news")
    assert stored["settings"] == {"note": "Bearer ***", "other": "Bearer of bad news"}


# ---- names ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names_in_any_case_and_style(name: str) -> None:
    assert secret_name(name)
    assert preview({"x": {"headers": {name: "plain"}}}) == {"x": {"headers": {name: REDACTED}}}


@pytest.mark.parametrize("name", ORDINARY_NAMES)
def test_ordinary_names_are_shown(name: str) -> None:
    assert not secret_name(name)
    assert preview("plain", name=name) == "plain"


@st.composite
def _styled(draw: st.DrawFn, words: list[str]) -> str:
    style = draw(st.sampled_from(["snake", "kebab", "camel", "pascal", "screaming", "train"]))
    if style == "snake":
        return "_".join(words)
    if style == "kebab":
        return "-".join(words)
    if style == "screaming":
        return "_".join(w.upper() for w in words)
    if style == "train":
        return "-".join(w.capitalize() for w in words)
    first = words[0] if style == "camel" else words[0].capitalize()
    return first + "".join(w.capitalize() for w in words[1:])


@given(st.data(), st.sampled_from([["api", "key"], ["access", "token"], ["openai", "api", "key"], ["hf", "key"],
                                   ["client", "secret"], ["private", "key"], ["session", "id"], ["x", "api", "key"],
                                   ["db", "password"], ["auth", "header"], ["refresh", "token"]]))
def test_secret_names_whatever_the_style(data: st.DataObject, words: list[str]) -> None:
    assert secret_name(data.draw(_styled(words)))


@given(st.data(), st.sampled_from([["max", "tokens"], ["sort", "key"], ["api", "version"], ["base", "url"],
                                   ["token", "count"], ["user", "id"], ["top", "p"], ["primary", "key"]]))
def test_ordinary_names_whatever_the_style(data: st.DataObject, words: list[str]) -> None:
    assert not secret_name(data.draw(_styled(words)))


def test_a_user_password_pair_passed_as_auth_or_credentials_is_hidden() -> None:
    assert preview(("bob", "hunter2"), name="auth") == REDACTED
    assert preview({"credentials": ("bob", "hunter2")}) == {"credentials": REDACTED}
    headers = [("Content-Type", "application/json"), ("X-Api-Key", "plain"), ("Authorization", "plain")]
    assert preview(headers, name="headers") == [["Content-Type", "application/json"], ["X-Api-Key", REDACTED],
                                                ["Authorization", REDACTED]]


def test_nested_dicts_at_any_depth_hide_secrets_or_drop_them() -> None:
    nested: Any = {"password": "hunter2"}
    for level in range(10):
        nested = {f"level{level}": nested, "note": "sk-proj-Qm7xT2vLk9RzW4nB8cYd1HfJ"}
    shown = orjson.dumps(preview(nested, name="settings"))
    assert b"hunter2" not in shown and b"Qm7xT2" not in shown


# ---- values ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("secret", SECRET_VALUES)
def test_secret_values_are_hidden_alone_and_inside_text(secret: str) -> None:
    hidden = secret.split()[-1]
    assert hidden not in scrub(secret)
    text = f"use key {secret} please"
    assert scrub(text).startswith("use key ") and scrub(text).endswith(" please")
    assert hidden not in scrub(text)
    assert hidden not in str(preview({"note": text, "list": [text]}))


@pytest.mark.parametrize(("text", "shown"), [
    ("https://bob:hunter2@example.com/v1", "https://***@example.com/v1"),
    ("redis://:hunter2@10.0.0.1:6379/0", "redis://***@10.0.0.1:6379/0"),
    ("https://example.com/v1?key=abc&q=cats", "https://example.com/v1?key=***&q=cats"),
    ("https://x.blob.core.windows.net/c?sv=2024&sig=abc%2Bdef", "https://x.blob.core.windows.net/c?sv=2024&sig=***"),
    ("GET /v1/models?api_key=abc HTTP/1.1", "GET /v1/models?api_key=*** HTTP/1.1"),
    ("OPENAI_API_KEY=abc\nDEBUG=1", "OPENAI_API_KEY=***\nDEBUG=1"),
    ('{"password": "hunter2", "user": "bob"}', '{"password": "***", "user": "bob"}'),
    ("x-api-key: plainvalue", "x-api-key: ***"),
    ("Authorization: Bearer a1B2c3D4e5F6", "Authorization: Bearer ***"),
])
def test_urls_and_assignments_hide_only_the_secret_part(text: str, shown: str) -> None:
    assert scrub(text) == shown


@pytest.mark.parametrize("text", ORDINARY_TEXT)
def test_ordinary_prompts_are_left_as_written(text: str) -> None:
    assert scrub(text) == text
    assert preview(text, name="prompt") == text


@given(st.lists(st.sampled_from(VOCABULARY), max_size=30))
def test_prose_made_of_trap_words_is_never_redacted(words: list[str]) -> None:
    text = " ".join(words)
    assert scrub(text) == text


_PIECES = st.sampled_from(["sk-", "Bearer ", "Basic ", "password", "=", ":", " ", "@", "//", "https://", "?", "&",
                           "key", "a1B2c3D4e5F6g7H8i9", '"', "ab", "Ym9iOmh1bnRlcjI=", REDACTED, "x-api-key",
                           "eyJabcde.eyJabcde.x", "AKIAIOSFODNN7EXAMPLE", "token", ","])


@given(st.text() | st.lists(_PIECES, max_size=14).map("".join))
def test_scrub_is_idempotent(text: str) -> None:
    once = scrub(text)
    assert scrub(once) == once


_PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(st.sampled_from("abc xyz:=_-/"), max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(["a", "b", "prompt"]),
                                                                      children, max_size=3),
    max_leaves=12,
)


@given(_PLAIN, st.sampled_from(SECRET_VALUES), st.sampled_from(SECRET_NAMES), st.data())
def test_a_planted_secret_never_shows_wherever_it_sits(plain: Any, secret: str, name: str,
                                                       data: st.DataObject) -> None:
    how = data.draw(st.sampled_from(["value", "embedded", "named", "named-plain"]))
    planted, hidden = {
        "value": (secret, secret.split()[-1]),
        "embedded": (f"my key is {secret}, thanks", secret.split()[-1]),
        "named": ({name: secret}, secret.split()[-1]),
        "named-plain": ({name: "hunter2hunter2"}, "hunter2hunter2"),
    }[how]
    depth = data.draw(st.integers(0, 4))
    for level in range(depth):
        planted = [planted] if level % 2 else {"inner": planted, "other": plain}
    shown = orjson.dumps(preview({"x": plain, "y": planted}, name="settings"))
    assert hidden.encode() not in shown


@given(_PLAIN)
def test_previews_are_json_native(value: Any) -> None:
    orjson.dumps(preview(value))


# ---- endpoints ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "public"), [
    ("http://bob:hunter2@127.0.0.1:8080/v1?key=abc#frag", "http://127.0.0.1:8080/v1"),
    ("https://api.openai.com/v1", "https://api.openai.com/v1"),
    ("https://x.openai.azure.com/openai/deployments/d?api-version=2024-06-01", "https://x.openai.azure.com/openai/deployments/d"),
    ("http://[::1]:9/v1", "http://[::1]:9/v1"),
])
def test_a_public_url_has_no_userinfo_query_or_fragment(url: str, public: str) -> None:
    assert public_url(url) == public
