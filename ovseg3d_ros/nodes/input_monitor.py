"""Message counts per input of a synchronised subscription, so a silent input is named instead of starving quietly.

An approximate-time synchroniser emits nothing while any one of its inputs is silent (no
``semantic/image`` for the noisy oracle, no CameraInfo); counting arrivals per input between two
status reports shows which one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any


class InputMonitor:
    def __init__(self, topics: Sequence[str]) -> None:
        self.topics = tuple(topics)
        self._counts = [0] * len(self.topics)
        self._lock = threading.Lock()

    def counting(self, index: int, callback: Callable[[Any], None] | None = None) -> Callable[[Any], None]:
        """A message callback that counts an arrival on input ``index``, then passes the message to ``callback``."""
        if not 0 <= index < len(self.topics):
            raise IndexError(f"input {index} out of range for {len(self.topics)} inputs")

        def count(msg: Any) -> None:
            with self._lock:
                self._counts[index] += 1
            if callback is not None:
                callback(msg)

        return count

    def take_counts(self) -> dict[str, int]:
        """Messages per topic since the previous call."""
        with self._lock:
            counts, self._counts = self._counts, [0] * len(self.topics)
        return dict(zip(self.topics, counts, strict=True))


def silent_topics(counts: dict[str, int]) -> list[str]:
    """Topics that had no message while others had some (nothing at all means no stream, not a silent input)."""
    if not any(counts.values()):
        return []
    return [topic for topic, count in counts.items() if count == 0]
