"""`llm-memo import` takes data only: nothing it stores can run code, nothing undecodable gets in."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from llm_memo import Cache, allow_type

pytestmark = pytest.mark.slow
TAG = "\u0000"


def cli(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLM_MEMO_DIR": str(directory), "NO_COLOR": "1"}
    env.pop("LLM_MEMO_REDIS_URL", None)
    return subprocess.run([sys.executable, "-m", "llm_memo", *args], capture_output=True, text=True, env=env,
                          timeout=60, stdin=subprocess.DEVNULL)


@dataclasses.dataclass
class Holder:
    """An ordinary, allowed dataclass: the wrapper an attacker hides a pickle in."""

    payload: Any


class _MakeSentinel:
    """Pickles to "call os.mkdir(path)": the code an attacker wants run on load."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.mkdir, (self.path,)


def _pickle_tag(sentinel: Path) -> dict[str, Any]:
    data = pickle.dumps(_MakeSentinel(str(sentinel)), protocol=pickle.HIGHEST_PROTOCOL)
    return {TAG: "pickle", "v": base64.b64encode(data).decode("ascii")}


def _line(key: str, value: Any) -> str:
    return json.dumps({"llm_memo_export": 1, "key": key, "created_at": time.time(), "expires_at": None,
                       "latency": 1.0, "tokens": 0, "cost": 0.0, "tags": [], "metadata": {}, "value": value})


def _holder(value: Any) -> dict[str, Any]:
    return {TAG: "dataclass", "v": [f"{Holder.__module__}:{Holder.__qualname__}", {"payload": value}]}


def test_a_pickle_hidden_inside_an_allowed_dataclass_is_rejected_and_never_runs(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    attacks = {
        "a" * 64: _holder(_pickle_tag(sentinel)),
        "b" * 64: [1, {"deep": _holder({TAG: "tuple", "v": [_holder(_pickle_tag(sentinel))]})}],
        "c" * 64: {TAG: "enum", "v": ["x:Color", _pickle_tag(sentinel)]},
    }
    good = "d" * 64
    path = tmp_path / "attack.jsonl"
    path.write_text("\n".join([*(_line(k, v) for k, v in attacks.items()), _line(good, _holder([1, 2]))]) + "\n")

    result = cli(tmp_path / "cache", "import", str(path))

    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == "imported 1, already stored 0, rejected 3\n"
    assert result.stderr.splitlines() == [f"rejected line {n}: value: a pickle (code that runs when loaded)"
                                          for n in (1, 2, 3)]
    allow_type(Holder)
    with Cache(tmp_path / "cache", allow_pickle=True) as cache:
        assert sorted(cache.keys()) == [good]
        for key in attacks:
            assert cache.get(key) is None
        hit = cache.get(good)
        assert hit is not None and hit.value == Holder([1, 2])
    assert not sentinel.exists()


@pytest.mark.parametrize(("value", "reason"), [
    ({TAG: "bytes", "v": "not base64!"}, "value: undecodable value"),
    ({TAG: "datetime", "v": "yesterday"}, "value: undecodable value"),
    (_holder({TAG: "uuid", "v": "nope"}), "value: undecodable value"),  # behind a class it cannot rebuild here
    ({TAG: "dataclass", "v": "no path"}, "value: a dataclass tag must hold [class path, fields]"),
    ({TAG: "pydantic", "v": ["m:Model", [1, 2]]}, "value: a pydantic tag must hold [class path, fields]"),
    ({TAG: "tuple", "v": [1], "extra": 2}, "value: a tag object has exactly the keys"),
    ({TAG: "no-such-tag", "v": 1}, "value: unknown value tag 'no-such-tag'"),
])
def test_a_value_that_fails_to_decode_is_rejected(tmp_path: Path, value: Any, reason: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(_line("e" * 64, value).encode() + b"\n" + b'{"llm_memo_export": 1, "key": "\xff\xfe"}\n')
    result = cli(tmp_path / "cache", "import", str(path))
    assert (result.returncode, result.stdout) == (1, "imported 0, already stored 0, rejected 2\n")
    first, second = result.stderr.splitlines()
    assert first.startswith(f"rejected line 1: {reason}"), first
    assert second.startswith("rejected line 2: not JSON"), second
    with Cache(tmp_path / "cache") as cache:
        assert list(cache.keys()) == []


@pytest.mark.parametrize("levels", [300, 1000])
@pytest.mark.parametrize("field", ["value", "metadata"])
def test_a_field_nested_too_deeply_is_rejected(tmp_path: Path, levels: int, field: str) -> None:
    deep = "[" * levels + "1" + "]" * levels
    line = _line("e" * 64, "DEEP").replace('"DEEP"', deep) if field == "value" else \
        _line("e" * 64, 1).replace('"metadata": {}', '"metadata": {"x": ' + deep + "}")
    path = tmp_path / "in.jsonl"
    path.write_text(line + "\n")
    result = cli(tmp_path / "cache", "import", str(path))
    assert (result.returncode, result.stdout) == (1, "imported 0, already stored 0, rejected 1\n"), result.stderr
    assert result.stderr == f"rejected line 1: {field}: nested too deeply\n"
