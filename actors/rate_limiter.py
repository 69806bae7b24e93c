"""The cluster-wide rate limiter: one named actor, so limits hold across every Serve replica."""
from __future__ import annotations

import time

import ray

from actors import names
from core.policy.rate_limit import FixedWindowLimiter, RateDecision
from core.settings import Settings


@ray.remote(num_cpus=0, max_restarts=-1)
class RateLimiterActor:
    def __init__(self, limit_per_minute: int) -> None:
        self._limiter = FixedWindowLimiter(limit_per_minute, 60)

    def hit(self, key: str, limit: int | None = None) -> RateDecision:
        return self._limiter.hit(key, time.time(), limit)


def get_or_create_rate_limiter(settings: Settings):
    return RateLimiterActor.options(
        name=names.RATE_LIMITER, namespace=settings.ray_namespace, lifetime="detached", get_if_exists=True
    ).remote(settings.rate_limit_per_minute)
