"""Webhook delivery policy as plain code: which events an endpoint gets, when to retry, when to give up
and when to disable an endpoint. The delivery actor (actors/webhooks.py) only applies these."""
from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

EVENT_TYPES = ("session.started", "session.ending", "session.ended", "session.failed",
               "avatar.created", "avatar.deleted")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n waits ``base * 2**(n-1)`` (capped), times a factor in
    ``[1 - jitter, 1 + jitter]``; no new attempt once ``window`` has passed since the event."""

    base_s: float = 5.0
    cap_s: float = 3600.0
    jitter: float = 0.2
    window: timedelta = timedelta(hours=24)
    disable_after: int = 100  # consecutive failed attempts of an endpoint

    def delay_s(self, attempts: int, rng: random.Random | None = None) -> float:
        """Seconds before the next attempt, after ``attempts`` failed ones (>= 1)."""
        raw = min(self.cap_s, self.base_s * 2.0 ** max(0, attempts - 1))
        factor = 1.0 + (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, raw * factor)

    def next_attempt_at(self, created_at: datetime, attempts: int, now: datetime,
                        rng: random.Random | None = None) -> datetime | None:
        """When to try again, or None: give up (the retry window is spent)."""
        at = now + timedelta(seconds=self.delay_s(attempts, rng))
        return None if at > created_at + self.window else at

    def disables(self, consecutive_failures: int) -> bool:
        return consecutive_failures >= self.disable_after


def wants(endpoint_events: list[str] | None, event_type: str) -> bool:
    """An endpoint with no event list gets every event."""
    return not endpoint_events or event_type in endpoint_events


def succeeded(status_code: int) -> bool:
    """Only a 2xx answer is a delivery; redirects are not followed, so a 3xx is a failure."""
    return 200 <= status_code < 300
