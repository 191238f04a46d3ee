"""Keyframe selection: lift 2D features only when the camera moved or enough time passed.

Running the 2D model on every frame of a 30 Hz stream would waste most of the CPU on nearly
identical views; geometry is still integrated from every frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ovseg3d_core.config import Config, setting


@dataclass
class KeyframeConfig(Config):
    translation_m: float = setting(0.15, "a frame is a keyframe after the camera moved this far (metres)", low=0.0)
    rotation_deg: float = setting(15.0, "... or turned this much (degrees)", low=0.0, high=180.0)
    interval_s: float = setting(2.0, "... or this much time passed (seconds; 0 disables)", low=0.0)


class KeyframeSelector:
    """Decides, frame by frame, whether a posed frame is a keyframe (the first one always is)."""

    def __init__(self, config: KeyframeConfig | None = None) -> None:
        self.config = config or KeyframeConfig()
        self._last_pose: np.ndarray | None = None
        self._last_stamp = 0.0

    def reset(self) -> None:
        self._last_pose = None

    def is_keyframe(self, pose: np.ndarray, stamp: float) -> bool:
        """True (and remembered as the new reference) if ``pose`` differs enough from the last keyframe."""
        if self._last_pose is not None:
            moved = np.linalg.norm(pose[:3, 3] - self._last_pose[:3, 3])
            relative = self._last_pose[:3, :3].T @ pose[:3, :3]
            turned = np.degrees(np.arccos(np.clip((np.trace(relative) - 1) / 2, -1.0, 1.0)))
            waited = stamp - self._last_stamp
            cfg = self.config
            due = cfg.interval_s > 0 and waited >= cfg.interval_s
            if moved < cfg.translation_m and turned < cfg.rotation_deg and not due:
                return False
        self._last_pose, self._last_stamp = np.array(pose, dtype=np.float64), stamp
        return True
