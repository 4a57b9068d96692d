"""How far the appliers have got: the change topic's end offsets noted at some moment, and the group's progress.

What the listener's gap reconcile waits on (capture/reconcile.py), what ``verify`` waits on before a recheck, and
what shadow reads wait on before calling a difference a mismatch: every change Redis had when the watermark was
noted is in the topic below it, so once the applier group has committed past it, that change is in DynamoDB.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Watermark:
    """The change topic's end offset per partition, noted at some moment (a gap, a recheck, a differing read)."""

    offsets: Mapping[int, int]
    noted_at: float = field(default_factory=time.time)

    def remaining(self, committed: Mapping[int, int | None]) -> int:
        """Events the group must still commit before every event published before the watermark is in DynamoDB."""
        return sum(max(0, end - (committed.get(p) or 0)) for p, end in self.offsets.items())

    def to_json(self) -> str:
        return json.dumps({"offsets": {str(p): o for p, o in self.offsets.items()}, "noted_at": self.noted_at})

    @classmethod
    def from_json(cls, text: str) -> Watermark:
        data = json.loads(text)
        return cls({int(p): int(o) for p, o in data["offsets"].items()}, float(data["noted_at"]))


class GroupProgress(Protocol):
    """The topic's end offsets and the applier group's committed ones (adapters.kafka.offsets.GroupOffsets)."""

    def end(self) -> dict[int, int]: ...

    def committed(self) -> dict[int, int | None]: ...
