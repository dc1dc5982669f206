"""Cache directories written by earlier builds keep serving after an upgrade: llm_memo 0.1.0
(tests/fixtures/cache-0.1.0) and the last flat-package build, envelope format 2 (cache-format2)."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest
from test_integrity import misdirect_index

import llm_memo
from llm_memo import Cache

FIXTURE = Path(__file__).parent / "fixtures" / "cache-0.1.0"
FORMAT2 = Path(__file__).parent / "fixtures" / "cache-format2"
MANIFEST = json.loads((FIXTURE / "manifest.json").read_text())


@pytest.fixture(params=[FIXTURE, FORMAT2], ids=["0.1.0", "format2"])
def written(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """(prompt functions, manifest) on a private copy of a fixture directory as the default cache."""
    yield from _open(request.param, tmp_path, monkeypatch)


@pytest.fixture
def legacy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The fixture's prompt functions, on a private copy of the 0.1.0 directory as the default cache."""
    for funcs, _ in _open(FIXTURE, tmp_path, monkeypatch):
        yield funcs


def _open(fixture: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    directory = tmp_path / "cache"
    shutil.copytree(fixture, directory)
    for path in (directory, *directory.iterdir()):  # a checkout's modes follow its umask; a cache's are private
        path.chmod(0o700 if path.is_dir() else 0o600)
    monkeypatch.syspath_prepend(str(FIXTURE.parent))
    sys.modules.pop("legacy_funcs", None)
    import legacy_funcs

    llm_memo.configure(directory)
    yield legacy_funcs, json.loads((fixture / "manifest.json").read_text())
    sys.modules.pop("legacy_funcs", None)


@pytest.mark.parametrize("index", [i for i, m in enumerate(MANIFEST) if m["function"] != "wrap"])
def test_a_decorated_function_hits_what_an_earlier_build_stored(written, index: int) -> None:
    funcs, manifest = written
    call = manifest[index]
    fn = getattr(funcs, call["function"])
    assert fn.cache_key(*call["args"], **call["kwargs"]) == call["key"]  # the key did not move
    value = fn(*call["args"], **call["kwargs"])
    assert repr(value) == call["value"]
    info = fn.cache_info()
    assert (info.hits, info.misses, info.errors) == (1, 0, 0)


def test_a_wrap_entry_written_by_an_earlier_build_is_read_back(written) -> None:
    (call,) = [m for m in written[1] if m["function"] == "wrap"]
    entry = llm_memo.default_cache().get_entry(call["key"])
    assert entry is not None
    assert call["value"] in json.dumps(entry.value)


def envelope_format(directory: Path, key: str) -> int:
    """The format byte of the envelope the disk tier stores under `key` (after its own 12-byte header)."""
    with contextlib.closing(sqlite3.connect(directory / "cache.db")) as con:
        (value,) = con.execute("SELECT value FROM Cache WHERE key = ?", (key,)).fetchone()
    return value[12 + 2]


def test_entries_of_0_1_0_are_rebound_to_their_key_when_stored_again(legacy) -> None:
    cache = llm_memo.default_cache()
    call = MANIFEST[0]
    fn = getattr(legacy, call["function"])
    assert envelope_format(cache.directory, call["key"]) == 1
    value = fn(*call["args"], **call["kwargs"])
    assert envelope_format(cache.directory, call["key"]) == 1  # served where it is, not rewritten
    assert cache.memory.get(call["key"])[2] == 2  # type: ignore[index]  # the promoted copy is bound
    fn.invalidate(*call["args"], **call["kwargs"])
    assert fn(*call["args"], **call["kwargs"]) == value  # computed and stored again
    assert envelope_format(cache.directory, call["key"]) == 2
    with Cache(cache.directory) as fresh:
        assert fresh.get(call["key"]).value == value  # type: ignore[union-attr]
        assert fresh.counters.snapshot().errors == 0


def test_a_damaged_index_never_serves_one_0_1_0_entry_for_another(legacy) -> None:
    # Format 1 carries no binding: the disk row's own key column is what tells.
    directory = llm_memo.default_cache().directory
    llm_memo.configure(enabled=True, disk=False)  # release the directory
    first, second, other = MANIFEST[1], MANIFEST[3], MANIFEST[2]  # rows 2, 4 and 3
    misdirect_index(directory, first["key"], second["key"])
    with Cache(directory) as cache:
        assert cache.get(first["key"]) is None
        assert cache.counters.snapshot().errors == 1
        assert cache.get_entry(first["key"]) is None
        assert repr(cache.get(other["key"]).value) == other["value"]  # type: ignore[union-attr]


def test_a_cache_with_a_secret_refuses_the_unsigned_entries_of_0_1_0(legacy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_MEMO_SECRET", "a team secret")
    llm_memo.configure(llm_memo.default_cache().directory)
    call = MANIFEST[0]
    fn = getattr(legacy, call["function"])
    assert repr(fn(*call["args"], **call["kwargs"])) == call["value"]  # computed again
    info = fn.cache_info()
    assert (info.hits, info.misses, info.errors) == (0, 1, 1)
    assert envelope_format(llm_memo.default_cache().directory, call["key"]) == 2  # and now signed
