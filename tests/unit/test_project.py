"""Project-level promises: the README's commands are what CI runs."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_ci_runs_exactly_the_readme_test_command():
    lines = [line for line in (ROOT / "README.md").read_text().splitlines()[:6] if line.startswith("bash ")]
    demo, tests = (line.split("#")[0].strip() for line in lines[:2])
    assert demo == "bash .ci/install && .venv/bin/replicator demo"
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()
