"""Rate limiting per API key: plain state, no I/O.

``FixedWindowLimiter`` is the cluster-wide ledger (the actor in actors/ holds one): ``limit`` requests per
window per key. Replicas do not ask it once per request: a ``LeasedLimiter`` in each replica takes a
*lease* of several of the window's requests at once (``FixedWindowLimiter.lease``) and spends them
locally, so the hot path makes one actor call per ``lease_size`` requests. The ledger never grants more
than the limit per window in total, so the limit still holds across every replica; what a replica leased
but did not spend before the window ends is lost for that window (under-admission, bounded by
``lease_size - 1`` per replica per key), never over-admission.
"""
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


@dataclass(frozen=True)
class Lease:
    """``granted`` requests of ``key``'s window ``window`` (0: the window is spent); ``remaining`` is what
    the ledger still had after granting them."""

    window: int
    limit: int
    granted: int
    remaining: int
    reset_at: int


class FixedWindowLimiter:
    """``limit`` requests per ``window_s`` per key; windows aligned to the clock."""

    def __init__(self, limit: int, window_s: int = 60) -> None:
        self.limit = limit
        self.window_s = window_s
        self._windows: dict[str, tuple[int, int]] = {}  # key → (window index, count)

    def hit(self, key: str, now: float, limit: int | None = None) -> RateDecision:
        """Count one request of ``key``; ``limit`` (the limit in force for that key: plan or account
        override) replaces the default."""
        lease = self.lease(key, now, 1, limit)
        return RateDecision(lease.granted == 1, lease.limit, lease.remaining, lease.reset_at)

    def lease(self, key: str, now: float, want: int, limit: int | None = None) -> Lease:
        """Grant up to ``want`` of ``key``'s requests in the current window (fewer when fewer are left)."""
        limit = limit or self.limit
        window = int(now // self.window_s)
        start, count = self._windows.get(key, (window, 0))
        if start != window:
            count = 0
        granted = max(0, min(want, limit - count))
        count += granted
        self._windows[key] = (window, count)
        if len(self._windows) > 100_000:  # forget old windows; bounded memory
            self._windows = {k: v for k, v in self._windows.items() if v[0] == window}
        return Lease(window, limit, granted, max(0, limit - count), (window + 1) * self.window_s)


def lease_size(limit: int, fraction: float, maximum: int) -> int:
    """Requests a replica leases at once: ``fraction`` of the limit, at least 1 (small limits are then
    exact: every request asks the ledger), at most ``maximum``."""
    return max(1, min(maximum, int(limit * fraction)))


class LeasedLimiter:
    """One replica's share of the ledger: spends leased requests locally; ``decide`` returns None when
    the caller must get a new lease (``FixedWindowLimiter.lease``) and ``add`` it first."""

    def __init__(self, window_s: int = 60) -> None:
        self.window_s = window_s
        self._leases: dict[str, list[int]] = {}  # key → [window, limit, tokens left, ledger remaining, reset_at, spent]

    def decide(self, key: str, now: float, limit: int) -> RateDecision | None:
        state = self._leases.get(key)
        if state is None or state[0] != int(now // self.window_s) or state[1] != limit:
            return None  # no lease for this window (or the limit in force changed): ask the ledger
        window, _, tokens, ledger_remaining, reset_at, spent = state
        if tokens > 0:
            state[2] = tokens - 1
            return RateDecision(True, limit, ledger_remaining + tokens - 1, reset_at)
        if spent:  # the ledger had nothing left for this window: refuse without asking again
            return RateDecision(False, limit, 0, reset_at)
        return None

    def add(self, key: str, lease: Lease) -> None:
        self._leases[key] = [lease.window, lease.limit, lease.granted, lease.remaining, lease.reset_at,
                             lease.granted == 0]
        if len(self._leases) > 100_000:  # bounded memory: drop other windows' leases
            self._leases = {k: v for k, v in self._leases.items() if v[0] == lease.window}
