"""A bounded hand-off between the executor and the worker that drops the oldest item, never the newest.

Sensor callbacks must never block; when the worker falls behind, stale frames are worth less than
the latest one, so a full queue discards from the front and counts what it dropped. With an
``order`` key (a frame's stamp) items leave in key order: callbacks that finish converting
synchronised sets in parallel can hand them over out of order, and a map (and the noisy oracle,
whose draws follow the keyframe count) should not depend on which thread won.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from collections.abc import Callable
from operator import itemgetter
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class DroppingQueue(Generic[T]):
    def __init__(self, maxsize: int, order: Callable[[T], Any] | None = None) -> None:
        if maxsize < 1:
            raise ValueError(f"queue size must be >= 1, got {maxsize}")
        self._entries: deque[tuple[Any, T]] = deque()  # (order key, item), ascending keys
        self._order = order
        self._maxsize = maxsize
        self._ready = threading.Condition()
        self.dropped = 0
        self.accepted = 0

    def put(self, item: T) -> None:
        with self._ready:
            key = self._order(item) if self._order else self.accepted
            self._entries.insert(bisect.bisect_right(self._entries, key, key=itemgetter(0)), (key, item))
            self.accepted += 1
            if len(self._entries) > self._maxsize:  # a late item older than all the others is the one dropped
                self._entries.popleft()
                self.dropped += 1
            self._ready.notify()

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest queued item (first put, or smallest ``order`` key), or None if nothing arrived within
        ``timeout`` seconds."""
        with self._ready:
            if not self._entries:
                self._ready.wait(timeout)
            return self._entries.popleft()[1] if self._entries else None

    def clear(self) -> int:
        with self._ready:
            count = len(self._entries)
            self._entries.clear()
            return count

    def __len__(self) -> int:
        with self._ready:
            return len(self._entries)
