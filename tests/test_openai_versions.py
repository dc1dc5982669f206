"""wrap() with every major openai line users have: 1.x and 2.x (httpx) beside 3.x (httpx2).

Each runs tests/test_openai.py and tests/test_wrap_settings.py in a virtualenv that sees this
environment's packages but has its own openai, installed from PyPI as CI installs everything else.
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


@pytest.mark.parametrize("version", ["1.109.1", "2.54.0"])
def test_wrap_suite_passes_with_openai(version: str, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    child_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                capture_output=True, text=True, check=True, timeout=120).stdout.strip()
    # This environment's packages (and its editable llm_memo) come after the child's own openai.
    parent_site = sysconfig.get_paths()["purelib"]
    Path(child_site, "parent_env.pth").write_text(f"import site; site.addsitedir({parent_site!r})\n")
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", f"openai=={version}"],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    check = subprocess.run([str(python), "-c", "import openai; print(openai.__version__)"],
                           capture_output=True, text=True, timeout=120)
    assert check.stdout.strip() == version
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    run = subprocess.run([str(python), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                          "tests/test_openai.py", "tests/test_wrap_settings.py"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
