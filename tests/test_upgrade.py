"""A cache directory written by llm_memo 0.1.0 (tests/fixtures/cache-0.1.0) keeps serving after an upgrade."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

import llm_memo

FIXTURE = Path(__file__).parent / "fixtures" / "cache-0.1.0"
MANIFEST = json.loads((FIXTURE / "manifest.json").read_text())


@pytest.fixture
def legacy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The fixture's prompt functions, on a private copy of the fixture directory as the default cache."""
    directory = tmp_path / "cache"
    shutil.copytree(FIXTURE, directory)
    for path in (directory, *directory.iterdir()):  # a checkout's modes follow its umask; a cache's are private
        path.chmod(0o700 if path.is_dir() else 0o600)
    monkeypatch.syspath_prepend(str(FIXTURE.parent))
    sys.modules.pop("legacy_funcs", None)
    import legacy_funcs

    llm_memo.configure(directory)
    yield legacy_funcs
    sys.modules.pop("legacy_funcs", None)


@pytest.mark.parametrize("call", [m for m in MANIFEST if m["function"] != "wrap"], ids=lambda m: m["function"])
def test_a_decorated_function_hits_what_0_1_0_stored(legacy, call) -> None:
    fn = getattr(legacy, call["function"])
    assert fn.cache_key(*call["args"], **call["kwargs"]) == call["key"]  # the key did not move
    value = fn(*call["args"], **call["kwargs"])
    assert repr(value) == call["value"]
    info = fn.cache_info()
    assert (info.hits, info.misses, info.errors) == (1, 0, 0)


def test_a_wrap_entry_written_by_0_1_0_is_read_back(legacy) -> None:
    (call,) = [m for m in MANIFEST if m["function"] == "wrap"]
    entry = llm_memo.default_cache().get_entry(call["key"])
    assert entry is not None
    assert call["value"] in json.dumps(entry.value)
