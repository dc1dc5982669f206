"""wrap() of an anthropic client with the SDK lines users have: the last 1.x (httpx, `temperature`
still a parameter) and the first 2.x, beside the newest 2.x that the test extra installs.

Each runs tests/test_anthropic.py in a virtualenv that sees this environment's packages but has
its own anthropic, installed from PyPI as CI installs everything else.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("version", ["1.17.0", "2.0.0"])
def test_anthropic_suite_passes_with_anthropic(version: str, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    child_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                capture_output=True, text=True, check=True, timeout=120).stdout.strip()
    # This environment's packages (and its editable llm_memo) come after the child's own anthropic.
    parent_site = sysconfig.get_paths()["purelib"]
    Path(child_site, "parent_env.pth").write_text(f"import site; site.addsitedir({parent_site!r})\n")
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", f"anthropic=={version}"],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    check = subprocess.run([str(python), "-c", "import anthropic; print(anthropic.__version__)"],
                           capture_output=True, text=True, timeout=120)
    assert check.stdout.strip() == version
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    run = subprocess.run([str(python), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                          "tests/test_anthropic.py"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
