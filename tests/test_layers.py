"""The dependency direction STYLE.md draws is enforced, and the package stays lint-clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[test]'"
    return found


def test_import_layers_hold() -> None:
    done = subprocess.run([_tool("lint-imports")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_ruff_finds_nothing_in_the_package() -> None:
    done = subprocess.run([_tool("ruff"), "check", "llm_memo"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_package_is_layered_in_folders() -> None:
    package = ROOT / "llm_memo"
    layers = {p.name for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert layers == {"_logic", "_storage", "_engine", "_semantic", "_adapters", "_tools", "testing", "integrations"}
    flat = sorted(p.name for p in package.glob("*.py"))
    assert flat == ["__init__.py", "__main__.py", "_errors.py"]


def test_no_module_imports_by_name_outside_the_allowed_places(tmp_path: Path) -> None:
    hidden = tmp_path / "llm_memo" / "_storage"
    hidden.mkdir(parents=True)
    (hidden / "sneaky.py").write_text('import importlib\n\nimportlib.import_module("llm_memo._tools.cli")\n')
    done = subprocess.run([_tool("ruff"), "check", "--config", str(ROOT / "pyproject.toml"), str(hidden)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "TID251" in done.stdout, done.stdout + done.stderr
