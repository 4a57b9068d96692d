"""Project-level promises: the README's commands are what CI runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_ci_runs_exactly_the_readme_test_command():
    lines = [line for line in (ROOT / "README.md").read_text().splitlines()[:6] if line.startswith("bash ")]
    demo, tests = (line.split("#")[0].strip() for line in lines[:2])
    assert demo == "bash .ci/install && .venv/bin/replicator demo"
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_benchmark_command_starts():
    """bench/ is not imported by the suite otherwise: a moved module would break `bench/run.py` unnoticed."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--baseline-rev" in result.stdout
