"""README.rst tells the truth: its commands are the ones CI runs and its quickstart runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.rst").read_text(encoding="utf-8")


def _literal_blocks() -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"::\n\n    (.+)\n", README)]


def _python_blocks() -> list[str]:
    blocks = re.findall(r"\.\. code-block:: python\n\n((?:    .*\n|\n)+)", README)
    return [re.sub(r"^    ", "", b, flags=re.M) for b in blocks]


def test_readme_opens_with_the_demo_and_the_test_command() -> None:
    demo, tests = _literal_blocks()[:2]
    assert demo.endswith("llm-memo demo")
    assert "pytest" in tests and ".ci/system-deps" in tests


def test_ci_runs_exactly_the_readme_test_command() -> None:
    tests = _literal_blocks()[1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert tests in ci.splitlines()


def test_system_deps_installs_redis_server() -> None:
    assert "redis-server" in (ROOT / ".ci" / "system-deps").read_text(encoding="utf-8")


def test_quickstart_runs_and_its_answers_survive_a_restart(tmp_path: Path) -> None:
    """The quickstart uses the default, persistent cache (LLM_MEMO_DIR, as a user's ~/.cache):
    run again in a new process, every call is a hit."""
    quickstart = _python_blocks()[0]
    env = {**os.environ, "LLM_MEMO_DIR": str(tmp_path / "default-cache")}
    first, second = (subprocess.run([sys.executable, "-c", quickstart], capture_output=True, text=True,
                                    cwd=tmp_path, env=env, timeout=120) for _ in range(2))
    assert first.returncode == 0, first.stderr
    assert "Stats(hits=1, misses=1" in first.stdout
    assert second.returncode == 0, second.stderr
    assert "Stats(hits=2, misses=0" in second.stdout


def test_every_python_block_compiles() -> None:
    for block in _python_blocks():
        compile(block, "README.rst", "exec")


def test_readme_is_valid_restructuredtext() -> None:
    result = subprocess.run([sys.executable, "-m", "rstcheck", "--report-level", "warning", str(ROOT / "README.rst")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
