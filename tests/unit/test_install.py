"""``.ci/install --check`` against stub programs on PATH: silent when everything is there and new enough, one line
per missing or too old program, naming the Debian package that supplies it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

INSTALL = Path(__file__).resolve().parents[2] / ".ci" / "install"
#: What the script itself runs besides the programs it checks.
TOOLS = ("sed", "head", "dirname", "id", "sort", "tr", "tail", "mktemp", "rm")

GOOD = {
    "java": 'echo \'openjdk version "17.0.15" 2025-04-15\' >&2',
    "redis-server": "echo 'Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64'",
    "redis-cli": "echo 'redis-cli 7.0.15'",
    "python3": "exit 0",
    "mvn": "exit 0",
    "npm": "exit 0",
    "openssl": "exit 0",
}


def _check(tmp_path: Path, programs: dict[str, str]) -> subprocess.CompletedProcess[str]:
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for tool in TOOLS:
        (stubs / tool).symlink_to(shutil.which(tool))
    for name, body in programs.items():
        (stubs / name).write_text(f"#!/bin/sh\n{body}\n")
        (stubs / name).chmod(0o755)
    return subprocess.run(["/bin/bash", str(INSTALL), "--check"], env={"PATH": str(stubs)}, capture_output=True,
                          text=True, timeout=30)


def test_everything_present_and_new_enough_is_silent(tmp_path):
    result = _check(tmp_path, GOOD)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize("version", ['java version "1.8.0_392"', 'openjdk version "11.0.21" 2023-10-17'])
def test_a_java_older_than_17_is_one_line_naming_its_version_and_the_package(tmp_path, version):
    result = _check(tmp_path, {**GOOD, "java": f"echo '{version}' >&2"})
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert f"java at {tmp_path}/bin/java is " in line and "need 17+" in line
    assert "openjdk-17-jre-headless" in line


@pytest.mark.parametrize("version", ['openjdk version "21" 2023-09-19', 'openjdk version "25-ea" 2025-09-16'])
def test_a_java_without_a_minor_version_is_read(tmp_path, version):
    result = _check(tmp_path, {**GOOD, "java": f"echo '{version}' >&2"})
    assert (result.returncode, result.stderr) == (0, "")


def test_each_missing_or_old_program_is_one_line_naming_how_to_get_it(tmp_path):
    programs = {name: body for name, body in GOOD.items() if name not in ("java", "redis-cli", "mvn")}
    programs["redis-server"] = "echo 'Redis server v=6.2.6 sha=00000000:0'"
    programs["python3"] = 'case "$*" in *ensurepip*) exit 1;; esac'  # Debian's python3 without python3-venv
    result = _check(tmp_path, programs)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 5, result.stderr
    assert all(line.startswith(".ci/install: ") for line in lines)
    python, redis, cli, java, mvn = lines
    assert "no ensurepip" in python and "apt-get install python3-venv" in python
    assert "is 6.2.6" in redis and "Redis 7+" in redis
    assert "apt-get install redis-tools" in cli
    assert "java not found" in java and "default-jre-headless" in java
    assert "apt-get install maven" in mvn
