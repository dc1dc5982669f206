"""Redaction: what an entry's metadata and the logs may show of a call's arguments.

Two rules, each enough on its own:

- **Secret names.** An argument or dict key named like a credential hides its whole value,
  whatever its type (``password``, ``accessToken``, ``OPENAI_API_KEY``, ``x-api-key``,
  ``auth=(user, pw)``). Names are split into words in any case and style; a name is secret
  when a word is always a credential (password, secret, auth, cookie...) or when its last
  word says what the value is (``*_key``, ``*_token``, ``*_signature``), unless the words
  before it say it is an ordinary key (``sort_key``, ``primary_key``; ``max_tokens`` ends
  in "tokens", a count).
- **Secret values.** Inside any string, whatever its name, a credential-shaped piece is
  replaced by ``***`` and the rest kept: provider keys by prefix (``sk-``, ``gsk_``,
  ``hf_``, ``ghp_``, ``AKIA``...) followed by a random-looking run, ``Bearer``/``Basic``
  credentials, JWTs, the password of a URL, and ``name=value`` (a query string, an env
  line) under a secret name. "Random-looking" (a digit and a letter, or both cases over 20
  characters) keeps ordinary words safe: "the token budget", "sk-learn" and "a bearer
  instrument" stay as written.

Redaction applies to what is shown; keys still hash the arguments in full.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "preview", "public_url", "scrub", "secret_name"]

REDACTED = "***"

# ---- names ------------------------------------------------------------------------------

_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_ALWAYS = frozenset({
    "password", "passwd", "pwd", "passphrase", "secret", "secrets", "credential", "credentials", "auth",
    "authorization", "authentication", "cookie", "cookies", "bearer", "apikey", "apikeys",
})
_LAST = frozenset({"key", "keys", "token", "sig", "signature"})
_ORDINARY = frozenset({  # "<word> key": a key in the data-structure sense
    "sort", "cache", "primary", "foreign", "partition", "dict", "lookup", "group", "row", "hash", "index",
    "shard", "routing", "idempotency", "unique", "composite", "object", "map", "order", "join", "public",
    "dedup", "dedupe", "cluster", "bucket", "entry", "item", "column", "field",
})
_GLUED = ("apikey", "accesstoken", "authtoken", "refreshtoken", "privatekey", "accesskey", "secretkey",
          "sessionid", "password", "passwd", "secret", "credential")


def secret_name(name: str) -> bool:
    """Whether a parameter, dict key or header named `name` holds a credential."""
    words = [w.lower() for w in _WORDS.findall(name)]
    while words and words[-1].isdigit():  # api_key_2 is an api_key
        words.pop()
    if not words:
        return False
    if _ALWAYS.intersection(words) or words[-2:] == ["session", "id"]:
        return True
    if words[-1] in _LAST and not (len(words) > 1 and words[-2] in _ORDINARY):
        return True
    glued = "".join(words)
    return any(part in glued for part in _GLUED)


# ---- values -----------------------------------------------------------------------------

_PREFIXED = re.compile(
    r"(?<![A-Za-z0-9])(?:sk-|sk_|rk_|gsk_|hf_|ghp_|gho_|ghu_|ghs_|ghr_|github_pat_|glpat-|xox[abposr]-|pplx-|r8_"
    r"|xai-|nvapi-|lsv2_|tvly-|AIza)([A-Za-z0-9_\-]{16,})"
)
_AWS_KEY_ID = re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[A-Z0-9]{16}(?![A-Z0-9])")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*")
_BEARER = re.compile(r"(?i:\b(bearer|token)\s+)([A-Za-z0-9._~+/\-]{8,}=*)")
_BASIC = re.compile(r"(?i:\bbasic\s+)([A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])")
_URL_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.\-]*://)[^\s/?#@:]*:[^\s/?#@]*@")
_NAMED = re.compile(r"(?<![\w\-])([A-Za-z_][\w\-]*)(['\"]?\s*[:=](?!//)\s*['\"]?)")  # name= / "name": / name:
_VALUE = re.compile(r"(?:[^\s'\",;&#}\]:]|:(?!\s))+")


def _looks_random(text: str, minimum: int) -> bool:
    if len(text) < minimum:
        return False
    digits, letters = any(c.isdigit() for c in text), any(c.isalpha() for c in text)
    mixed_case = any(c.islower() for c in text) and any(c.isupper() for c in text)
    return (digits and letters) or (mixed_case and len(text) >= 20)


def _prefixed(match: re.Match[str]) -> str:
    return REDACTED if _looks_random(match.group(1), 16) else match.group(0)


def _bearer(match: re.Match[str]) -> str:
    whole, token = match.group(0), match.group(2)
    return whole[: -len(token)] + REDACTED if _looks_random(token, 8) else whole


def _basic(match: re.Match[str]) -> str:
    whole, token = match.group(0), match.group(1)
    try:
        decoded = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        return whole
    return whole[: -len(token)] + REDACTED if b":" in decoded else whole  # base64 of "user:password"


def _assignments(text: str) -> str:
    """`text` with the value after each secret name (``key=...``, ``"password": "..."``) redacted."""
    pieces, done = [], 0
    for named in _NAMED.finditer(text):
        name, separator = named.groups()
        if named.start() < done or not secret_name(name):
            continue
        value = _VALUE.match(text, named.end())
        if value is None or value.group() == REDACTED:
            continue
        words = _WORDS.findall(name)
        plain_word = len(words) == 1 and words[0].lower() not in ("password", "passwd", "pwd", "passphrase")
        if "=" not in separator and plain_word and not _looks_random(value.group(), 8):
            continue  # "Token: the smallest unit of text" is prose, not a credential
        pieces += [text[done:named.end()], REDACTED]
        done = value.end()
    return "".join(pieces) + text[done:] if pieces else text


def scrub(text: str) -> str:
    """`text` with every credential-shaped piece replaced by ``***`` (the rest kept)."""
    for _ in range(4):  # a redaction can expose a neighbour's boundary: repeat until nothing changes
        before = text
        text = _URL_USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", text)
        text = _JWT.sub(REDACTED, text)
        text = _BEARER.sub(_bearer, text)
        text = _BASIC.sub(_basic, text)
        text = _PREFIXED.sub(_prefixed, text)
        text = _AWS_KEY_ID.sub(REDACTED, text)
        text = _assignments(text)
        if text == before:
            break
    return text


def public_url(url: str) -> str:
    """`url` without user name, password, query string or fragment (what may be stored of an endpoint)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return scrub(url)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


# ---- previews ---------------------------------------------------------------------------

_SCRUB_MARGIN = 4096  # characters past the preview's limit that are scrubbed before cutting


def preview(value: Any, *, name: str = "", limit: int = 200, depth: int = 0) -> Any:
    """A short, JSON-native, secret-free picture of an argument for metadata and logs."""
    if name and secret_name(name):
        return REDACTED
    if isinstance(value, str):
        text = scrub(value[: limit + _SCRUB_MARGIN].encode("utf-8", "replace").decode("utf-8"))
        return text if len(text) <= limit and len(value) <= limit + _SCRUB_MARGIN else text[:limit] + "…"
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else f"<int of {value.bit_length()} bits>"  # JSON's range
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if depth >= 6:
        return "…"
    if isinstance(value, Mapping):
        items = list(value.items())[:50]
        return {scrub(str(k)[:limit]): preview(v, name=str(k), limit=limit, depth=depth + 1) for k, v in items}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_pair(v, limit, depth + 1) for v in list(value)[:50]]
    return f"<{type(value).__qualname__}>"


def _pair(value: Any, limit: int, depth: int) -> Any:
    """An item of a sequence; a ("name", value) pair (a header list) hides a secret name's value."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and secret_name(value[0]):
        return [scrub(value[0]), REDACTED]
    return preview(value, limit=limit, depth=depth)
