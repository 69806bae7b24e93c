"""Drift-free frame pacing for render loops: deadlines are ``t0 + k / fps``, never ``last + 1/fps``."""
from __future__ import annotations

import asyncio
import time


class FramePacer:
    """``wait()`` (or ``await wait_async()``) returns at frame ``k``'s deadline. If the loop falls more
    than ``max_lag_frames`` behind, the schedule is re-anchored (frames are late, never bunched up)."""

    def __init__(self, fps: int, *, max_lag_frames: int = 5, clock=time.monotonic):
        self.fps = fps
        self.clock = clock
        self.max_lag = max_lag_frames
        self.t0: float | None = None
        self.k = 0
        self.late_frames = 0

    def _delay(self) -> float:
        now = self.clock()
        if self.t0 is None:
            self.t0 = now
        deadline = self.t0 + self.k / self.fps
        if now - deadline > self.max_lag / self.fps:  # far behind: re-anchor
            self.t0, self.k, deadline = now, 0, now
            self.late_frames += 1
        self.k += 1
        return max(0.0, deadline - now)

    def wait(self) -> None:
        d = self._delay()
        if d > 0:
            time.sleep(d)

    async def wait_async(self) -> None:
        d = self._delay()
        if d > 0:
            await asyncio.sleep(d)
