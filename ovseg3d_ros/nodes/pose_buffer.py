"""Camera poses by time from the camera_pose topic (PoseStamped), which bags carry; TF is the fallback.

Frames are matched to the pose nearest in time within a tolerance; a frame with no pose close
enough is skipped (and reported) instead of being integrated at a wrong place.
"""

from __future__ import annotations

import bisect
import threading

import numpy as np


class PoseBuffer:
    def __init__(self, capacity: int = 2000) -> None:
        self._stamps: list[int] = []
        self._poses: list[np.ndarray] = []
        self._capacity = capacity
        self._lock = threading.Lock()

    def add(self, stamp_ns: int, pose: np.ndarray) -> None:
        with self._lock:
            index = bisect.bisect(self._stamps, stamp_ns)
            self._stamps.insert(index, stamp_ns)
            self._poses.insert(index, np.asarray(pose, dtype=np.float64))
            if len(self._stamps) > self._capacity:
                del self._stamps[0], self._poses[0]

    def lookup(self, stamp_ns: int, tolerance_ns: int) -> np.ndarray | None:
        """The pose nearest to ``stamp_ns`` if it is within ``tolerance_ns``, else None."""
        with self._lock:
            if not self._stamps:
                return None
            index = bisect.bisect(self._stamps, stamp_ns)
            candidates = [i for i in (index - 1, index) if 0 <= i < len(self._stamps)]
            best = min(candidates, key=lambda i: abs(self._stamps[i] - stamp_ns))
            if abs(self._stamps[best] - stamp_ns) > tolerance_ns:
                return None
            return self._poses[best].copy()

    def clear(self) -> None:
        with self._lock:
            self._stamps.clear()
            self._poses.clear()

    def __len__(self) -> int:
        return len(self._stamps)
