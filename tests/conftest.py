"""Shared fixtures: a hand-moved clock, a Cache on it, and a private process default."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import llm_memo


def run_python(code: str, *args: str, bound_by_permissions: bool = False) -> str:
    """Run ``code`` in a child interpreter (warnings as errors) and return its stdout.

    With ``bound_by_permissions``, file permissions bind the child even when we are root.
    """
    command = [sys.executable, "-W", "error", "-c", textwrap.dedent(code), *args]
    if bound_by_permissions and os.geteuid() == 0:  # root ignores chmod: drop what lets it
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv, so chmod 0500 cannot stop writes")
        drop = "-dac_override,-dac_read_search"
        command = [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}", *command]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    if result.returncode and result.stderr.startswith("setpriv"):
        pytest.skip(f"cannot drop root's file capabilities here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    return result.stdout


class FakeClock:
    """Epoch seconds that move only when a test calls advance()."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(tmp_path: Path, clock: FakeClock) -> Iterator[llm_memo.Cache]:
    with llm_memo.Cache(tmp_path / "cache", clock=clock) as c:
        yield c


@pytest.fixture(autouse=True)
def _private_default_cache(tmp_path_factory: pytest.TempPathFactory,
                           monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test touches ~/.cache: the default cache lives in a fresh temporary directory."""
    directory = tmp_path_factory.mktemp("default-cache")
    monkeypatch.setenv("LLM_MEMO_DIR", str(directory))
    monkeypatch.delenv("LLM_MEMO_DISABLE", raising=False)
    monkeypatch.delenv("LLM_MEMO_REDIS_URL", raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)  # CLI tables fit a width only where a test asks for one
    llm_memo.configure(directory, enabled=True)
    yield
    # Close this test's default; what stays behind holds no files.
    llm_memo.configure(enabled=True, disk=False)
