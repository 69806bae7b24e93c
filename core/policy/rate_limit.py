"""Fixed-window rate limiting per API key: plain state, no I/O (the actor in actors/ holds one)."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_at: int  # unix seconds when the window resets

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
        }

    def retry_after(self, now: float) -> int:
        return max(1, math.ceil(self.reset_at - now))


class FixedWindowLimiter:
    """``limit`` requests per ``window_s`` per key; windows aligned to the clock."""

    def __init__(self, limit: int, window_s: int = 60) -> None:
        self.limit = limit
        self.window_s = window_s
        self._windows: dict[str, tuple[int, int]] = {}  # key → (window index, count)

    def hit(self, key: str, now: float, limit: int | None = None) -> RateDecision:
        """Count one request of ``key``; ``limit`` (the limit in force for that key: plan or account
        override) replaces the default."""
        limit = limit or self.limit
        window = int(now // self.window_s)
        start, count = self._windows.get(key, (window, 0))
        if start != window:
            count = 0
        allowed = count < limit
        if allowed:
            count += 1
        self._windows[key] = (window, count)
        if len(self._windows) > 100_000:  # forget old windows; bounded memory
            self._windows = {k: v for k, v in self._windows.items() if v[0] == window}
        return RateDecision(allowed, limit, max(0, limit - count), (window + 1) * self.window_s)
