"""A bounded hand-off between the executor and the worker that drops the oldest item, never the newest.

Sensor callbacks must never block; when the worker falls behind, stale frames are worth less than
the latest one, so a full queue discards from the front and counts what it dropped.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class DroppingQueue(Generic[T]):
    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"queue size must be >= 1, got {maxsize}")
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._ready = threading.Condition()
        self.dropped = 0
        self.accepted = 0

    def put(self, item: T) -> None:
        with self._ready:
            if len(self._items) >= self._maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self.accepted += 1
            self._ready.notify()

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest queued item, or None if nothing arrived within ``timeout`` seconds."""
        with self._ready:
            if not self._items:
                self._ready.wait(timeout)
            return self._items.popleft() if self._items else None

    def clear(self) -> int:
        with self._ready:
            count = len(self._items)
            self._items.clear()
            return count

    def __len__(self) -> int:
        with self._ready:
            return len(self._items)
