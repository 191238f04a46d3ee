"""How scene_node tells what happened: counters, rate-limited warnings, status lines, services that always answer.

Bad input (a ``ValueError`` or ``ArithmeticError``: a malformed message or request) is a warning
and, for frames, counts as rejected; anything else is a failure of the node, logged as an error
and counted. Every line names the 2D source, so a benchmark's noisy oracle can never pass for a
model's output.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ovseg3d_ros.nodes.frame_inputs import silent_input_hints
from ovseg3d_ros.nodes.input_monitor import silent_topics

INPUT_ERRORS = (ValueError, ArithmeticError)  # malformed input or request; anything else is a failure of the node


@dataclass
class NodeCounters:
    frames: int = 0
    keyframes: int = 0
    rejected: int = 0
    no_pose: int = 0
    missing_poses: dict[str, int] = field(default_factory=dict)  # no_pose by missing transform ("map <- odom")
    points: int = 0
    clouds: int = 0
    errors: int = 0


class NodeReporter:
    """A node's logger, prefixed with the 2D source's name, with counters and per-kind rate limits."""

    def __init__(self, logger, source: Callable[[], str]) -> None:
        self.logger = logger
        self.source = source
        self.counters = NodeCounters()
        self._warned: dict[str, float] = {}

    def _line(self, message: str) -> str:
        return f"[{self.source()}] {message}"

    def info(self, message: str) -> None:
        self.logger.info(self._line(message))

    def error(self, message: str) -> None:
        self.logger.error(self._line(message))

    def warn(self, key: str, message: str, period_s: float = 5.0, error: bool = False) -> None:
        """Log a warning (or error) at most once per ``period_s`` per kind, so a bad stream cannot flood the log."""
        now = time.monotonic()
        if now - self._warned.get(key, -1e9) >= period_s:
            self._warned[key] = now
            (self.logger.error if error else self.logger.warning)(message)

    def failure(self, key: str, what: str, error: Exception, error_level: bool = False) -> str:
        """Log that ``what`` failed and why (rate-limited); bad input is a warning, anything else a counted error.

        ``error_level`` logs bad input as an error too (a setting the operator must fix, not a stray message).
        """
        if isinstance(error, INPUT_ERRORS):
            message = f"{what}: {error}"
            self.warn(key, message, error=error_level)
        else:
            self.counters.errors += 1
            message = f"{what}: {type(error).__name__}: {error}"
            self.warn(key, message, error=True)
        return message

    def rejected(self, key: str, what: str, error: Exception) -> None:
        """A frame that could not be built or integrated: malformed input is rejected, anything else an error."""
        if isinstance(error, INPUT_ERRORS):
            self.counters.rejected += 1
        self.failure(f"reject:{key}", what, error)

    def no_pose(self, what: str, missing) -> None:
        """A frame skipped for want of a pose: counted under the transform that was missing, logged.

        ``missing`` is a :class:`~ovseg3d_ros.nodes.camera_poses.NoPose` (its ``pair`` and the full reason);
        the warning is rate-limited per missing transform, so one broken link cannot hide another.
        """
        c = self.counters
        c.no_pose += 1
        c.missing_poses[missing.pair] = c.missing_poses.get(missing.pair, 0) + 1
        self.warn(f"no_pose:{missing.pair}", f"{what} skipped: {missing}")

    def answering(self, name: str, handler):
        """``handler`` as a service callback that always answers: a failure becomes success=false naming its cause."""

        def answer(request, response):
            try:
                return handler(request, response)
            except INPUT_ERRORS as error:  # a bad request: the caller gets the reason, the log stays quiet
                response.success, response.message = False, str(error)
            except Exception as error:
                response.success, response.message = False, self.failure(name, f"{name} failed", error)
            return response

        return answer

    def status(self, period_s: float, sync, inputs, dropped: int, voxels: int, extra: str = "") -> None:
        """The periodic status line, and a warning naming inputs that stayed silent while others arrived."""
        counts = sync.monitor.take_counts()
        arrivals = ", ".join(f"{topic} {count}" for topic, count in counts.items())
        c = self.counters
        missing = "; ".join(f"{pair}: {count}" for pair, count in sorted(c.missing_poses.items()))
        no_pose = f"{c.no_pose} [missing {missing}]" if missing else f"{c.no_pose}"
        self.info(
            f"inputs in the last {period_s:g} s: {arrivals}; frames {c.frames} (keyframes {c.keyframes}, "
            f"dropped {dropped}, rejected {c.rejected}, no pose {no_pose}), point clouds {c.points}, "
            f"voxels {voxels}, clouds published {c.clouds}, errors {c.errors}{extra}"
        )
        silent = silent_topics(counts)
        if silent:
            self.warn(
                "silent",
                f"no messages on {', '.join(silent)} for {period_s:g} s while the other synchronised inputs "
                f"arrive: no frame can be assembled{silent_input_hints(inputs, silent)}",
            )
