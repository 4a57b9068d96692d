"""Every number in the README's benchmark tables is a figure of bench/published.json (a run of a recent commit).

A figure typed by hand, or left behind when the artifact was re-published, fails here. A number matches when some
value in the artifact (figures, ratios, CPU, latencies, the mixed drains, the client's commands, the run's
arguments) rounds to it at the precision the README shows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

#: Numbers in the tables that describe the set-up rather than measure it, with where they come from.
DESCRIPTIVE = {
    "16": "threads of the raw PartiQL and transaction baselines (bench/run.py)",
    "1": "one thread, one process",
    "2": "two shard processes",
    "0": "rank 0 of zrevrange(k, 0, 9)",
    "9": "rank 9 of zrevrange(k, 0, 9)",
}


def _values(data: Any) -> Iterator[float]:
    if isinstance(data, bool):
        return
    if isinstance(data, int | float):
        yield float(data)
    elif isinstance(data, dict):
        for value in data.values():
            yield from _values(value)
    elif isinstance(data, list):
        for value in data:
            yield from _values(value)


def _table_numbers(readme: str) -> list[str]:
    section = readme.split("\n## Benchmarks", 1)[1].split("\n### Scaling model", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|") and not set(line) <= set("|-: ")]
    numbers = []
    for row in rows[1:]:
        if row.startswith("| stage |") or row.startswith("| applier |") or row.startswith("| command |"):
            continue  # a table's header
        text = re.sub(r"`[^`]*`", "", row)  # code: write modes, commands, flags
        text = re.sub(r"\b(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b", "", text)  # commit hashes
        numbers += re.findall(r"(?<![\w.])\d[\d,]*(?:\.\d+)?", text)
    return numbers


def _present(token: str, values: list[float]) -> bool:
    plain = token.replace(",", "")
    decimals = len(plain.split(".")[1]) if "." in plain else 0
    number = float(plain)
    return any(round(v, decimals) == number for v in values)


def test_every_number_in_the_benchmark_tables_comes_from_the_published_artifact():
    published = json.loads((ROOT / "bench" / "published.json").read_text())
    values = list(_values(published))
    numbers = _table_numbers((ROOT / "README.md").read_text())
    assert len(numbers) > 40, "the benchmark tables were not found"
    missing = [n for n in numbers if n not in DESCRIPTIVE and not _present(n, values)]
    assert missing == [], f"README benchmark figures not in bench/published.json ({published['commit']}): {missing}"


def test_the_check_itself_refuses_a_figure_typed_by_hand():
    values = [40918.66, 0.9498]
    assert _present("40,919", values) and _present("0.95", values)
    assert not _present("40,920", values) and not _present("0.96", values)
