"""What comes back is the answer to this call: entries are bound to their key, and signed with a secret.

A damaged index, a row copied under another key or an entry planted in a shared Redis must
never serve another call's answer: each is a counted miss, and the bad entry is deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing
import pickle
import random
import re
import shutil
import sqlite3
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import orjson
import pytest
import redis
from conftest import Server, fresh_prefix
from hypothesis import given

from llm_memo import Cache, llm_cache
from llm_memo._logic.codec import CorruptEntry, Header, pack, unpack

LOGGER = "llm_memo"
SECRET = "team-secret-7f3a9c1e5b"


def key_of(label: object) -> str:
    return hashlib.sha256(repr(label).encode()).hexdigest()


def disk_rows(directory: Path) -> dict[str, bytes]:
    """{key: stored bytes} of the disk tier's database, read with sqlite3 as an attacker would."""
    with contextlib.closing(sqlite3.connect(directory / "cache.db")) as con:
        return {key: bytes(value) for key, value in con.execute("SELECT key, value FROM Cache")}


def make_ask(cache: Cache, calls: list[str]) -> Any:
    @llm_cache(cache=cache, ttl=3600)
    def ask(question: str) -> str:
        calls.append(question)
        return f"answer to {question}"

    return ask


# ---- the key binding -------------------------------------------------------------------

ENTRIES, TRIALS, DAMAGED_BYTES = 300, 100, 20


def damage(path: Path, rng: random.Random, count: int) -> None:
    data = bytearray(path.read_bytes())
    for _ in range(count):
        data[rng.randrange(len(data))] = rng.randrange(256)
    path.write_bytes(bytes(data))


def test_random_damage_to_the_disk_cache_never_serves_another_keys_value(tmp_path: Path) -> None:
    # Today's attack: 20 random bytes of cache.db overwritten. Most damage is a checksum
    # mismatch or a database set aside; a damaged index, though, maps one key to another
    # key's row, which quick_check at open does not see.
    keys = [key_of(i) for i in range(ENTRIES)]
    source = tmp_path / "source"
    with Cache(source, memory_maxsize=0) as cache:
        for i, key in enumerate(keys):
            assert cache.set(key, i, lifetime=None)
    rng = random.Random(20240909)
    wrong, kept = [], 0
    for trial in range(TRIALS):
        directory = tmp_path / f"trial-{trial}"
        shutil.copytree(source, directory)
        damage(directory / "cache.db", rng, DAMAGED_BYTES)
        with Cache(directory, memory_maxsize=0) as cache:
            served = 0
            for i, key in enumerate(keys):
                for found in (cache.get_entry(key), cache.get(key)):
                    if found is not None:
                        served += 1
                        if found.value != i:
                            wrong.append((trial, i, found.value))
            kept += served > ENTRIES  # the database survived the damage (most did not)
        shutil.rmtree(directory)
    assert wrong == []
    assert kept >= TRIALS // 10  # the damaged databases kept serving: no check refused everything


def test_disk_rows_with_swapped_values_are_misses_deleted_and_counted(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    calls: list[str] = []
    with Cache(directory) as cache:
        ask = make_ask(cache, calls)
        ask("a"), ask("b")
        a, b = ask.cache_key("a"), ask.cache_key("b")
    rows = disk_rows(directory)
    with contextlib.closing(sqlite3.connect(directory / "cache.db")) as con, con:
        con.execute("UPDATE Cache SET value = ? WHERE key = ?", (rows[b], a))
        con.execute("UPDATE Cache SET value = ? WHERE key = ?", (rows[a], b))
    with Cache(directory) as cache:
        assert cache.get(a) is None and cache.get(b) is None
        assert cache.counters.snapshot().errors == 2
        assert a not in disk_rows(directory) and b not in disk_rows(directory)  # deleted
        ask = make_ask(cache, calls)
        assert (ask("a"), ask("b")) == ("answer to a", "answer to b")
        assert calls == ["a", "b", "a", "b"]  # computed again, and stored again
    with Cache(directory) as cache:
        assert cache.get(a).value == "answer to a"  # type: ignore[union-attr]


def misdirect_index(directory: Path, key: str, to: str) -> None:
    """Damage the disk index as a flipped byte can: its entry for `key` now names the row of `to`.

    An entry of the index Cache(key, raw) is the key's 64 characters then the rowid (one byte
    for rowids 2 to 127; raw = 1 takes no byte), and nothing checks it against the table.
    """
    path = directory / "cache.db"
    with contextlib.closing(sqlite3.connect(path)) as con:
        rowids = dict(con.execute("SELECT key, rowid FROM Cache"))
    assert 2 <= rowids[key] < 128 and 2 <= rowids[to] < 128
    data = bytearray(path.read_bytes())
    needle = key.encode()
    found = [match.end() for match in re.finditer(re.escape(needle), data)]
    [at] = [at for at in found if data[at] == rowids[key]]  # elsewhere: a float or text follows
    data[at] = rowids[to]
    path.write_bytes(bytes(data))


def test_a_damaged_index_that_leads_to_another_keys_row_is_a_counted_miss(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    with Cache(directory) as cache:
        for label in "zabc":  # rowids 1 to 4
            cache.set(key_of(label), label.upper(), lifetime=None)
    misdirect_index(directory, key_of("a"), key_of("b"))
    with Cache(directory) as cache:
        assert cache.get(key_of("a")) is None
        assert cache.get_entry(key_of("a")) is None
        assert cache.counters.snapshot().errors >= 1
        assert cache.get(key_of("c")).value == "C"  # type: ignore[union-attr]


def test_get_entry_refuses_and_deletes_a_row_of_another_key(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    with Cache(directory) as cache:
        cache.set(key_of("a"), "A", lifetime=None)
        cache.set(key_of("b"), "B", lifetime=None)
    rows = disk_rows(directory)
    with contextlib.closing(sqlite3.connect(directory / "cache.db")) as con, con:
        con.execute("UPDATE Cache SET value = ? WHERE key = ?", (rows[key_of("a")], key_of("b")))
    with Cache(directory) as cache:
        assert cache.get_entry(key_of("b")) is None
        assert cache.counters.snapshot().errors == 1
        assert key_of("b") not in disk_rows(directory)
        assert cache.get_entry(key_of("a")).value == "A"  # type: ignore[union-attr]


def test_a_memory_entry_under_another_key_is_a_counted_miss(tmp_path: Path) -> None:
    with Cache(tmp_path, disk=False) as cache:
        cache.set(key_of("a"), "A", lifetime=None)
        cache.set(key_of("b"), "B", lifetime=None)
        cache.memory.set(key_of("b"), cache.memory.get(key_of("a")), None)  # type: ignore[arg-type]
        assert cache.get(key_of("b")) is None
        assert cache.counters.snapshot().errors == 1
        assert cache.memory.get(key_of("b")) is None
        assert cache.get(key_of("a")).value == "A"  # type: ignore[union-attr]


@pytest.fixture
def raw(redis_server: Server) -> Iterator[redis.Redis]:
    with contextlib.closing(redis_server.client()) as client:
        yield client


def on_redis(server: Server, directory: Path, prefix: str, **options: Any) -> Cache:
    return Cache(directory, redis_url=server.url, redis_prefix=prefix, **options)


def test_a_redis_value_copied_under_another_key_is_a_counted_miss(redis_server: Server,
                                                                  raw: redis.Redis, tmp_path: Path) -> None:
    prefix = fresh_prefix()
    a, b = key_of("a"), key_of("b")
    with on_redis(redis_server, tmp_path / "writer", prefix) as writer:
        writer.set(a, "A", lifetime=600)
        writer.set(b, "B", lifetime=600)
    raw.set(f"{prefix}:v:{b}", raw.get(f"{prefix}:v:{a}"))  # type: ignore[arg-type]
    with on_redis(redis_server, tmp_path / "reader", prefix) as reader:  # empty memory and disk
        assert reader.get(b) is None
        assert reader.counters.snapshot().errors == 1
        assert raw.get(f"{prefix}:v:{b}") is None  # deleted
        assert reader.get(a).value == "A"  # type: ignore[union-attr]


# ---- the envelope format ----------------------------------------------------------------

GOLDEN_HEADER = Header(1_700_003_600.0, 1_700_000_000.0, 1.25, 42, 0.001, 2)
GOLDEN_KEY = "0" * 63 + "1"


def test_the_envelope_bytes_are_pinned() -> None:
    # Never edit these: a change means every stored entry changes meaning. Bump FORMAT instead.
    plain = pack(GOLDEN_KEY, b'"hi"', {"tags": ["fn:app.ask"]}, GOLDEN_HEADER)
    assert plain.hex() == (
        "4c4d02ffbddfeb"  # magic, format 2, crc32
        "c386d8e8d07342f2e39e189c8e6c57bb"  # SHA-256 over the key, first 16 bytes
        "41d954ffc4000000" "41d954fc40000000" "3ff4000000000000"  # expires_at, created_at, latency
        "0000002a" "3f50624dd2f1a9fc" "02" "00000017"  # tokens, cost, flags, metadata length
        "7b2274616773223a5b22666e3a6170702e61736b225d7d" "22686922"  # metadata, value
    )
    signed = pack(GOLDEN_KEY, b'"hi"', {"tags": ["fn:app.ask"]}, GOLDEN_HEADER, secret=b"k")
    assert signed.hex() == (
        "4c4d02595bdf8a" "c386d8e8d07342f2e39e189c8e6c57bb"
        "41d954ffc4000000" "41d954fc40000000" "3ff4000000000000"
        "0000002a" "3f50624dd2f1a9fc" "06" "00000017"  # flags: FLAG_SIGNED | FLAG_PLAIN
        "7b2274616773223a5b22666e3a6170702e61736b225d7d" "22686922"
        "eba2b0ccffe71737283b5dc4ef76416f670f1eecb729a8522a379da387a8b4e4"  # HMAC-SHA256
    )


@given(key=st.text(min_size=1), other=st.text(min_size=1), value=st.binary(max_size=64),
       tags=st.lists(st.text(max_size=8), max_size=3), secret=st.one_of(st.none(), st.binary(min_size=1)))
def test_an_envelope_opens_for_its_own_key_only(key: str, other: str, value: bytes, tags: list[str],
                                                secret: bytes | None) -> None:
    header = Header(None, 1.0, 0.5, 7, 0.25, 0)
    data = pack(key, value, {"tags": tags}, header, secret=secret)
    got_header, meta, value_json = unpack(data, key, secret=secret)
    assert value_json == value and orjson.loads(meta) == {"tags": tags}
    assert got_header._replace(flags=0) == header
    if other != key:
        with pytest.raises(CorruptEntry):
            unpack(data, other, secret=secret)


# ---- signatures ---------------------------------------------------------------------------

@pytest.mark.parametrize(("secret", "error"), [(123, TypeError), (["x"], TypeError), ("", ValueError),
                                               (b"", ValueError)])
def test_a_bad_secret_is_refused_by_name(tmp_path: Path, secret: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="secret"):
        Cache(tmp_path, secret=secret)


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


def test_entries_planted_in_a_shared_redis_without_the_secret_are_refused(
        redis_server: Server, raw: redis.Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    prefix = fresh_prefix()
    calls: list[str] = []
    with on_redis(redis_server, tmp_path / "team", prefix, secret=SECRET) as team:
        ask = make_ask(team, calls)
        key_a, key_b, key_c = (ask.cache_key(q) for q in "abc")
    with on_redis(redis_server, tmp_path / "intruder", prefix) as intruder:  # can write, has no secret
        intruder.set(key_a, "planted a", lifetime=600)
    with on_redis(redis_server, tmp_path / "other-team", prefix, secret="another secret") as other:
        other.set(key_b, "planted b", lifetime=600)
    with caplog.at_level(logging.DEBUG, LOGGER), \
            on_redis(redis_server, tmp_path / "reader", prefix, secret=SECRET) as reader:
        ask = make_ask(reader, calls)
        assert ask("a") == "answer to a" and ask("b") == "answer to b"
        assert calls == ["a", "b"]
        assert ask.cache_info().errors == 2
        warned = [m for m in refusals(caplog) if "secret" in m]
        assert len(warned) == 1, refusals(caplog)  # logged once
        with on_redis(redis_server, tmp_path / "intruder", prefix) as intruder:
            intruder.set(key_c, "planted c", lifetime=600)
        assert raw.get(f"{prefix}:v:{key_c}") is not None
        assert reader.get(key_c) is None
        assert raw.get(f"{prefix}:v:{key_c}") is None  # deleted
    with on_redis(redis_server, tmp_path / "later", prefix, secret=SECRET) as later:
        ask = make_ask(later, calls)
        assert ask("a") == "answer to a" and calls == ["a", "b"]  # the refused entries were replaced


def test_a_signed_entry_altered_without_the_secret_is_refused(redis_server: Server,
                                                              raw: redis.Redis, tmp_path: Path) -> None:
    # The intruder keeps the binding and fixes the checksum: only the signature can tell.
    prefix = fresh_prefix()
    key = key_of("q")
    with on_redis(redis_server, tmp_path / "team", prefix, secret=SECRET) as team:
        team.set(key, "yes", lifetime=600)
    stored = raw.get(f"{prefix}:v:{key}")
    assert stored is not None and stored.count(b'"yes"') == 1
    forged = stored.replace(b'"yes"', b'"no!"')
    envelope_at = forged.index(b"LM\x02")
    body = forged[envelope_at + 7:]
    forged = forged[:envelope_at + 3] + zlib.crc32(body).to_bytes(4, "big") + body
    raw.set(f"{prefix}:v:{key}", forged, keepttl=True)
    with on_redis(redis_server, tmp_path / "reader", prefix, secret=SECRET) as reader:
        assert reader.get(key) is None
        assert reader.counters.snapshot().errors == 1
    with on_redis(redis_server, tmp_path / "plain", prefix) as plain:
        raw.set(f"{prefix}:v:{key}", forged, keepttl=True)
        assert plain.get(key).value == "no!"  # type: ignore[union-attr]  # no secret, no check


def test_caches_with_the_same_secret_share_signed_entries(redis_server: Server, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = fresh_prefix()
    calls: list[str] = []
    monkeypatch.setenv("LLM_MEMO_SECRET", SECRET)
    with on_redis(redis_server, tmp_path / "one", prefix) as one:  # the secret from the environment
        make_ask(one, calls)("q")
    monkeypatch.delenv("LLM_MEMO_SECRET")
    with on_redis(redis_server, tmp_path / "two", prefix, secret=SECRET.encode()) as two:
        ask = make_ask(two, calls)
        assert ask("q") == "answer to q" and calls == ["q"]
        assert dict(ask.cache_info().hits_by_tier) == {"redis": 1}
    with on_redis(redis_server, tmp_path / "two", prefix, secret=SECRET) as again:
        ask = make_ask(again, calls)
        assert ask("q") == "answer to q" and calls == ["q"]  # the disk copy is signed too
        assert dict(ask.cache_info().hits_by_tier) == {"disk": 1}


def test_an_unsigned_entry_in_the_directory_is_refused_by_a_cache_with_a_secret(tmp_path: Path) -> None:
    calls: list[str] = []
    with Cache(tmp_path) as plain:
        make_ask(plain, calls)("q")
    with Cache(tmp_path, secret=SECRET) as signed:
        ask = make_ask(signed, calls)
        key = ask.cache_key("q")
        assert signed.get(key) is None
        assert signed.counters.snapshot().errors == 1
        assert key not in disk_rows(tmp_path)
        assert ask("q") == "answer to q" and calls == ["q", "q"]
    with Cache(tmp_path, secret=SECRET) as signed:
        assert make_ask(signed, calls)("q") == "answer to q" and calls == ["q", "q"]


def test_a_cache_without_the_secret_serves_signed_entries_unverified(tmp_path: Path) -> None:
    # Documented: a cache without a secret trusts its store, as before; it still checks the
    # binding and the checksum. So `llm-memo ls` and a process missing the variable keep working.
    calls: list[str] = []
    with Cache(tmp_path, secret=SECRET) as signed:
        make_ask(signed, calls)("q")
    with Cache(tmp_path) as plain:
        ask = make_ask(plain, calls)
        assert ask("q") == "answer to q" and calls == ["q"]
        assert ask.cache_info().errors == 0


def read_entry(cache: Cache, key: str) -> Any:
    return None if (entry := cache.get_entry(key)) is None else entry.value


@pytest.mark.slow
def test_a_cache_pickled_for_a_spawn_worker_reads_signed_entries(tmp_path: Path) -> None:
    with Cache(tmp_path, secret=SECRET) as cache:
        cache.set(key_of("q"), "signed answer", lifetime=None)
        copy = pickle.loads(pickle.dumps(cache))  # the secret travels in the pickle, by design
        assert read_entry(copy, key_of("q")) == "signed answer"
        copy.close()
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            assert pool.apply(read_entry, (cache, key_of("q"))) == "signed answer"
        assert cache.counters.snapshot().errors == 0


def every_redis_byte(client: redis.Redis, prefix: str) -> bytes:
    """Key names and contents of everything under ``prefix``."""
    out = []
    for name in client.scan_iter(match=f"{prefix}*"):
        out.append(name)
        kind = client.type(name)
        if kind == b"string":
            out.append(client.get(name) or b"")
        elif kind == b"zset":
            out.extend(member for member, _ in client.zrange(name, 0, -1, withscores=True))
        elif kind == b"stream":
            out.append(repr(client.xrange(name)).encode())
        else:
            out.append(client.dump(name) or b"")
    return b"".join(out)


def test_the_secret_is_never_stored_logged_or_shown(redis_server: Server, raw: redis.Redis,
                                                    tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    prefix = fresh_prefix()
    directory = tmp_path / "cache"
    calls: list[str] = []
    with caplog.at_level(logging.DEBUG, LOGGER), \
            on_redis(redis_server, directory, prefix, secret=SECRET) as cache:
        ask = make_ask(cache, calls)
        ask("q"), ask("q"), ask("r")
        with on_redis(redis_server, tmp_path / "intruder", prefix) as intruder:
            intruder.set(ask.cache_key("s"), "planted", lifetime=600)
        ask("s")  # a refusal is logged: without the secret
        ask.invalidate("r")
        shown = [repr(cache), str(cache), cache._repr_html_(), repr(cache.tiers), repr(cache.get_entry(ask.cache_key("q")))]
    needles = [SECRET.encode(), SECRET.encode().hex().encode()]
    stored = b"".join(p.read_bytes() for p in directory.rglob("*") if p.is_file())
    stored += every_redis_byte(raw, prefix)
    logged = "\n".join(r.getMessage() for r in caplog.records).encode()
    for needle in needles:
        assert needle not in stored
        assert needle not in logged
        assert all(needle.decode() not in text for text in shown)
    assert calls == ["q", "r", "s"]
