"""A regular (non-editable) install ships every package of llm_memo, not only the top one."""

from __future__ import annotations

from pathlib import Path

import pytest
from setuptools.config.setupcfg import read_configuration

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_in_the_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # `packages = find:` searches the current directory
    config = read_configuration(ROOT / "setup.cfg", find_others=True)
    shipped = set(config["options"]["packages"])
    on_disk = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "llm_memo").rglob("__init__.py")}
    assert on_disk - shipped == set(), "packages a wheel would leave out"
    assert "llm_memo.testing" in shipped and "llm_memo._engine" in shipped
