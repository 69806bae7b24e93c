"""The cluster-wide rate-limit ledger: one named actor, so limits hold across every Serve replica.

Replicas lease requests from it in batches (``lease``; see ``core.policy.rate_limit``), so a request
does not make a round trip to it unless its replica's lease for the key is spent.
"""
from __future__ import annotations

import time
from typing import Any

import ray

from actors import names
from core.policy.rate_limit import FixedWindowLimiter, Lease
from core.settings import Settings


class RateLimiter:
    def __init__(self, limit_per_minute: int) -> None:
        self._limiter = FixedWindowLimiter(limit_per_minute, 60)

    def lease(self, key: str, want: int, limit: int | None = None) -> Lease:
        return self._limiter.lease(key, time.time(), want, limit)


RateLimiterActor = ray.remote(num_cpus=0, max_restarts=-1)(RateLimiter)


def get_or_create_rate_limiter(settings: Settings) -> Any:
    """The cluster's rate-limit ledger actor (its handle; called through ``actors.clients.LimiterClient``)."""
    options = names.singleton_options(names.RATE_LIMITER, settings.ray_namespace)
    return RateLimiterActor.options(**options).remote(settings.rate_limit_per_minute)
