"""Every notebook in notebooks/ runs top to bottom in a real Jupyter kernel, offline."""

from __future__ import annotations

from pathlib import Path

import ipykernel  # noqa: F401 (the kernel nbclient starts; the test extra installs all three)
import nbclient
import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_the_notebooks_are_there() -> None:
    assert {p.stem for p in NOTEBOOKS} >= {"quickstart", "cost_report"}


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel inherits these: caches and temporary directories land in this test's tmp_path.
    monkeypatch.setenv("LLM_MEMO_DIR", str(tmp_path / "default-cache"))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    book = nbformat.read(path, as_version=4)
    # "python3" is ipykernel's native kernel: jupyter_client starts it with this interpreter.
    client = nbclient.NotebookClient(book, timeout=110, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    for cell in book.cells:
        for output in cell.get("outputs", []):
            text = output.get("text", "") + str(output.get("data", {}).get("text/plain", ""))
            assert "Traceback" not in text and "Warning" not in text, (cell.source, text)
    if path.stem == "cost_report":
        figures = [o for c in book.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        assert len(figures) == 2
        texts = [o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                 for c in book.cells for o in c.get("outputs", [])]
        served = [t for t in texts if "semantic hits," in t]
        assert served and not served[0].startswith("0 "), served  # paraphrases were answered from the cache
        assert any("semantic checks" in t for t in texts), "the %llm_memo stats cell shows semantic mode"


_CELL = """
from llm_memo import llm_cache

calls = []

@llm_cache(ttl=3600)
def ask(question: str) -> str:
    calls.append(question)
    return f"TEMPLATE {question}"

print(ask("What is a monad?"), len(calls), dict(ask.cache_info().hits_by_tier))
"""


def _run_cell(source: str, directory: Path) -> str:
    """Run `source` as the one cell of a notebook in a new kernel (a restart) and return its output."""
    book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    nbclient.NotebookClient(book, timeout=60, kernel_name="python3",
                            resources={"metadata": {"path": str(directory)}}).execute()
    return "".join(output.get("text", "") for output in book.cells[0].outputs)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_function_defined_in_a_cell_keeps_its_answers_across_kernel_restarts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_MEMO_DIR", str(tmp_path / "cache"))
    assert _run_cell(_CELL, tmp_path) == "TEMPLATE What is a monad? 1 {}\n"
    assert _run_cell(_CELL, tmp_path) == "TEMPLATE What is a monad? 0 {'disk': 1}\n"  # new kernel, same key
    edited = _CELL.replace("TEMPLATE", "EDITED TEMPLATE")  # the notebook habit: tweak the prompt, re-run
    assert _run_cell(edited, tmp_path) == "EDITED TEMPLATE What is a monad? 1 {}\n"
