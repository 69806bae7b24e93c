"""When to retry and how long to wait: plain functions, no I/O."""
from __future__ import annotations

import random
from dataclasses import dataclass

from .errors import APIConnectionError, APIError, AvatarsError

# Codes that clear by themselves; CONCURRENCY_LIMIT_REACHED does not (a session must end first).
RETRYABLE_CODES = {"RATE_LIMITED", "CAPACITY_UNAVAILABLE", "IDEMPOTENCY_IN_PROGRESS"}


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` extra attempts; exponential backoff with jitter, or the server's ``Retry-After``
    when it sends one (capped at ``max_delay``)."""

    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 60.0

    def should_retry(self, error: AvatarsError, attempt: int, replay_safe: bool) -> bool:
        """``replay_safe``: the request may be sent twice (a GET, an idempotent end, or a create with an
        Idempotency-Key); without it only answers that say nothing was done are retried."""
        if attempt >= self.max_retries:
            return False
        if isinstance(error, APIConnectionError):
            return replay_safe
        if isinstance(error, APIError):
            if error.code in RETRYABLE_CODES:
                return True
            return error.status in (429, 503) and error.retry_after is not None and error.code != "CONCURRENCY_LIMIT_REACHED"
        return False

    def delay(self, error: AvatarsError, attempt: int) -> float:
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            return min(self.max_delay, retry_after)
        backoff = min(self.max_delay, self.base_delay * (2 ** attempt))
        return backoff * (0.5 + random.random() / 2)
