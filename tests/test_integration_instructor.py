"""instructor over a wrapped client: structured-output calls and their validation retries are cached.

No instructor release co-installs with openai 3.x (instructor pins jiter<0.15, openai 3.x needs
jiter>=0.16), so, as tests/test_openai_versions.py does for older openai lines, the script runs in
a virtualenv that sees this environment's packages after its own instructor and openai below 3.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from llm_memo.testing import LocalServer

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ["instructor>=1.7", "openai>=1.109,<3"]

pytestmark = pytest.mark.slow

SCRIPT = '''
import asyncio, json, sys
from importlib.metadata import version

import instructor, openai
from pydantic import BaseModel, ValidationInfo, field_validator

import llm_memo

url, directory = sys.argv[1], sys.argv[2]


class City(BaseModel):
    name: str
    population: int


class Checked(City):
    """Rejects the first answer of each call, so instructor always asks again."""

    @field_validator("name")
    @classmethod
    def not_first(cls, value: str, info: ValidationInfo) -> str:
        info.context["answers"].append(value)
        if len(info.context["answers"]) == 1:
            raise ValueError("give the name again")
        return value


def ask(prompt):
    return {"model": "gpt-4o-mini", "temperature": 0, "max_retries": 2,
            "messages": [{"role": "user", "content": prompt}]}


def sync_calls(client):
    out = {}
    out["plain"] = [client.create(response_model=City, **ask("sync plain")).model_dump() for _ in "12"]
    contexts = [{"answers": []}, {"answers": []}]
    out["retry"] = [client.create(response_model=Checked, context=c, **ask("sync retry")).model_dump()
                    for c in contexts]
    out["retry_answers"] = [c["answers"] for c in contexts]
    return out


async def async_calls(client):
    out = {}
    out["plain"] = [(await client.create(response_model=City, **ask("async plain"))).model_dump() for _ in "12"]
    contexts = [{"answers": []}, {"answers": []}]
    out["retry"] = [(await client.create(response_model=Checked, context=c, **ask("async retry"))).model_dump()
                    for c in contexts]
    out["retry_answers"] = [c["answers"] for c in contexts]
    return out


cache = llm_memo.Cache(directory)
sync_client = instructor.from_openai(llm_memo.wrap(openai.OpenAI(base_url=url, api_key="sk-test"), cache=cache))
async_client = instructor.from_openai(llm_memo.wrap(openai.AsyncOpenAI(base_url=url, api_key="sk-test"),
                                                    cache=cache))
print(json.dumps({"sync": sync_calls(sync_client), "async": asyncio.run(async_calls(async_client)),
                  "versions": {"instructor": version("instructor"), "openai": openai.__version__}}))
'''


@pytest.fixture(scope="module")
def instructor_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with instructor and an openai it co-installs with, over this environment's packages."""
    venv = tmp_path_factory.mktemp("instructor") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    child_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                capture_output=True, text=True, check=True, timeout=120).stdout.strip()
    # This environment's packages (and its editable llm_memo) come after the child's own.
    parent_site = sysconfig.get_paths()["purelib"]
    Path(child_site, "parent_env.pth").write_text(f"import site; site.addsitedir({parent_site!r})\n")
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", *REQUIREMENTS],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, f"pip could not install {REQUIREMENTS}:\n{install.stderr[-3000:]}"
    return python


def _python(python: Path, code: str, *args: str, cwd: Path) -> str:
    """Run `code` in the venv with this checkout's llm_memo first; its stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["LLM_MEMO_DIR"] = str(cwd / "default-cache")
    run = subprocess.run([str(python), "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return run.stdout


def _run(python: Path, server: LocalServer, directory: Path) -> dict:
    return json.loads(_python(python, SCRIPT, server.url, str(directory), cwd=directory).splitlines()[-1])


def _requests_for(server: LocalServer, prompt: str) -> list[list[dict]]:
    """The messages of each chat request whose conversation opened with `prompt`."""
    return [r.json["messages"] for r in server.requests if r.json["messages"][0]["content"] == prompt]


def test_instructor_calls_and_retries_are_cached(instructor_python: Path, tmp_path: Path) -> None:
    with LocalServer() as server:
        first = _run(instructor_python, server, tmp_path)
        sent = len(server.requests)
        again = _run(instructor_python, server, tmp_path)  # a new process: served from disk
        assert len(server.requests) == sent
    assert again == first
    assert first["versions"]["openai"].split(".")[0] in ("1", "2")
    for mode in ("sync", "async"):
        results = first[mode]
        assert results["plain"][0] == results["plain"][1]
        assert len(_requests_for(server, f"{mode} plain")) == 1  # the second call sent nothing
        assert results["retry"][0] == results["retry"][1]
        # Both calls saw a rejected answer and a retry; only the first call sent them.
        assert [len(answers) for answers in results["retry_answers"]] == [2, 2]
        assert results["retry_answers"][0] == results["retry_answers"][1]
        attempt, retry = _requests_for(server, f"{mode} retry")
        assert len(retry) > len(attempt) and "give the name again" in json.dumps(retry)


def test_readme_example_runs(instructor_python: Path, tmp_path: Path) -> None:
    readme = (ROOT / "README.rst").read_text(encoding="utf-8")
    section = readme[readme.index("\ninstructor\n~~~"):]
    block = re.search(r"\.\. code-block:: python\n\n((?:    .*\n|\n)+)", section).group(1)
    lines = _python(instructor_python, re.sub(r"^    ", "", block, flags=re.M), cwd=tmp_path).splitlines()
    assert len(lines) == 2 and lines[0] == lines[1] and "population=" in lines[0]
