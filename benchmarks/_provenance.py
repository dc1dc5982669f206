"""What a benchmark run measured: the llm_memo checkout's commit and whether it was edited."""

from __future__ import annotations

import os
import subprocess

import llm_memo


def git_state() -> str:
    """Commit and dirtiness of the llm_memo checkout being measured (others may be editing it)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(llm_memo.__file__)))
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "llm_memo"],
            cwd=repo,
            capture_output=True,
            text=True,
        ).stdout.splitlines()
    except OSError:
        return "not a git checkout"
    return f"git {head or '?'}, {len(dirty)} uncommitted change(s) under llm_memo/"
