"""`llm-memo demo` as the README runs it: offline against the local server, twice."""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

LABELS = ("reference:", "time-sensitive", "temperature 0.9", "streamed answer", "embeddings",
          "anthropic messages.create")


# The README runs `llm-memo demo`; before the package had a __main__, the demo's own main().
FORMS = ["module" if importlib.util.find_spec("llm_memo.__main__") is not None else "main"]


def demo_command(form: str, *args: str) -> list[str]:
    """`python -m llm_memo demo ...` (what the README's `llm-memo demo` runs), or the demo's own main()."""
    if form == "module":
        return [sys.executable, "-m", "llm_memo", "demo", *args]
    return [sys.executable, "-c", f"from llm_memo._tools.demo import main; raise SystemExit(main({list(args)!r}))"]


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENROUTER_API_KEY", "OPENAI_API_KEY", "LLM_MEMO_DISABLE", "LLM_MEMO_REDIS_URL")}
    return {**env, **extra}


def run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=90, env=env or child_env())


def summary(output: str) -> dict[str, int]:
    """The counters of the summary line: calls, hits, misses, bypassed, errors and hits per tier."""
    line = next(line for line in output.splitlines() if line.startswith("calls "))
    found = {name: int(n) for name, n in re.findall(r"(calls|hits|misses|bypassed|errors) (\d+)", line)}
    tiers = re.search(r"hits \d+ \(([^)]*)\)", line)
    for part in (tiers.group(1).split(", ") if tiers else ()):
        if part != "none":
            tier, n = part.split()
            found[f"tier:{tier}"] = int(n)
    return found


def check_table(output: str) -> None:
    assert "llm_memo demo against the local server" in output
    header = next(line for line in output.splitlines() if line.startswith("call "))
    assert header.split() == ["call", "calls", "first", "repeats"]
    for label in LABELS:
        assert any(line.startswith(label) for line in output.splitlines()), label
    assert re.search(r"wall time [\d.]+s with the cache; about [\d.]+s without it", output)
    assert re.search(r"saved: \d+ tokens, \$[\d.]+, [\d.]+s of waiting", output)


@pytest.mark.parametrize("form", FORMS)
def test_demo_twice_second_run_is_served_from_disk(tmp_path: Path, form: str) -> None:
    directory = str(tmp_path / "demo-cache")
    first = run(demo_command(form, "--dir", directory))
    assert first.returncode == 0, first.stderr
    check_table(first.stdout)
    assert directory in first.stdout
    one = summary(first.stdout)
    assert one["misses"] > 0
    assert one["hits"] > 0  # repeated questions within the run hit the memory tier
    assert one["bypassed"] > 0  # the time-sensitive question and the temperature>0 call
    assert one["errors"] == 0
    assert one["calls"] == one["hits"] + one["misses"] + one["bypassed"]
    assert "run it again" in first.stdout

    second = run(demo_command(form, "--dir", directory))
    assert second.returncode == 0, second.stderr
    check_table(second.stdout)
    two = summary(second.stdout)
    assert "misses 0" in second.stdout
    assert two["misses"] == 0
    assert two.get("tier:disk", 0) == one["misses"]  # every answer the first run stored
    assert two["hits"] == one["hits"] + one["misses"]
    assert two["bypassed"] == one["bypassed"]
    assert two["errors"] == 0
    assert "run it again" not in second.stdout


def test_demo_second_run_hits_disk_when_the_demo_port_is_busy(tmp_path: Path) -> None:
    """The demo falls back to an ephemeral port when its fixed one is taken; running it
    twice must still show the disk tier (the README's promise), whichever port it got."""
    directory = str(tmp_path / "demo-cache")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = ("import llm_memo._tools.demo as demo; demo.DEMO_PORT = {port}; "
                "raise SystemExit(demo.main(['--dir', {directory!r}, '--latency', '0.05']))")
        command = [sys.executable, "-c", code.format(port=port, directory=directory)]
        first = run(command)
        second = run(command)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert summary(first.stdout)["misses"] > 0
    assert summary(second.stdout)["misses"] == 0, second.stdout


@pytest.mark.parametrize("form", FORMS)
def test_demo_live_without_api_keys_fails_with_one_line(tmp_path: Path, form: str) -> None:
    done = run(demo_command(form, "--dir", str(tmp_path / "live"), "--live"), env=child_env())
    assert done.returncode != 0
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1, done.stderr
    assert "OPENROUTER_API_KEY" in message and "OPENAI_API_KEY" in message
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_demo_shows_the_code_it_runs_before_running_it(tmp_path: Path) -> None:
    done = run(demo_command(FORMS[0], "--dir", str(tmp_path / "demo-cache"), "--latency", "0.01"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "import llm_memo" in line)
    end = next(i for i, line in enumerate(lines) if line.startswith("call "))  # the table's header
    assert start < end
    snippet = textwrap.dedent("\n".join(lines[start:end]))
    compile(snippet, "demo", "exec")  # real Python, as printed
    assert "llm_memo.wrap(openai.OpenAI(" in snippet
    assert "client.chat.completions.create(" in snippet and "temperature=0" in snippet
    assert str(tmp_path / "demo-cache") in snippet  # the cache it really uses


def test_demo_output_arrives_line_by_line_through_a_pipe(tmp_path: Path) -> None:
    """Piped (CI logs, `| tee`), each line shows as it is printed, not all at the end."""
    command = demo_command(FORMS[0], "--dir", str(tmp_path / "demo-cache"), "--latency", "0.4")
    arrived: list[tuple[float, str]] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=child_env()) as process:
        assert process.stdout is not None and process.stderr is not None
        for line in process.stdout:
            arrived.append((time.monotonic(), line))
        assert process.wait() == 0, process.stderr.read()
    first_line = arrived[0][0]
    first_row = next(t for t, line in arrived if line.startswith("reference:"))
    last_row = next(t for t, line in reversed(arrived) if line.startswith("embeddings"))
    # 9 misses at 0.4 s each come between the first line and the last row
    assert last_row - first_line > 2.0, [f"{t - first_line:.2f} {line!r}" for t, line in arrived]
    assert last_row - first_row > 1.0


def test_demo_runs_without_the_anthropic_package(tmp_path: Path) -> None:
    """The Anthropic-style row needs the anthropic package; the demo does not."""
    code = ("import sys; sys.modules['anthropic'] = None\n"  # what `import anthropic` meets when it is absent
            "from llm_memo._tools.demo import main\n"
            f"raise SystemExit(main(['--dir', {str(tmp_path / 'cache')!r}, '--latency', '0']))")
    done = run([sys.executable, "-c", code])
    assert done.returncode == 0, done.stderr
    assert "embeddings" in done.stdout and "anthropic" not in done.stdout
