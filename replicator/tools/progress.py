"""One self-overwriting progress line on a terminal: done / estimate, rate, ETA (verify, snapshot)."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class Progress:
    def __init__(self, label: str, estimate: int, out: TextIO = sys.stderr, every_s: float = 0.5) -> None:
        self._label = label
        self._estimate = max(1, estimate)
        self._out = out
        self._started = self._last = time.monotonic()
        self._every = every_s
        self._lock = threading.Lock()

    def __call__(self, done: int, note: str = "") -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last < self._every:
                return
            self._last = now
        rate = done / max(1e-9, now - self._started)
        left = max(0, self._estimate - done) / rate if rate else 0
        share = min(1.0, done / self._estimate)
        self._out.write(f"\r{self._label}: {done:,} / ~{self._estimate:,} keys ({share:.0%}), {rate:,.0f} keys/s, "
                        f"ETA {left:,.0f}s{', ' + note if note else ''}   ")
        self._out.flush()

    def close(self) -> None:
        self._out.write("\n")
        self._out.flush()
