"""What route handlers depend on: the replica's services, the caller's account, error responses.

Route modules (sessions, avatars, ...) import from here, never from ``serve_app.app``.
"""
from __future__ import annotations

import asyncio
import time

from fastapi import Request
from fastapi.responses import JSONResponse

from actors.clients import LimiterClient, SchedulerClient, WebhooksClient
from actors.rate_limiter import get_or_create_rate_limiter
from actors.scheduler import get_or_create_scheduler
from actors.webhooks import get_or_create_webhook_deliverer
from core import errors, logs
from core.db.engine import Database
from core.db.store import AuthResult, Store
from core.db.webhook_store import WebhookStore
from core.policy.rate_limit import LeasedLimiter, RateDecision, lease_size
from core.settings import Settings
from serve_app import runtime


def error_response(exc: errors.ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    headers = dict(headers or {})
    if exc.retry_after_s:
        headers["Retry-After"] = str(exc.retry_after_s)
    return JSONResponse(exc.envelope(), status_code=exc.status, headers=headers)


class Services:
    """What a replica talks to. Built once per replica; handles are re-fetched if an actor restarted."""

    def __init__(self, settings: Settings) -> None:
        logs.configure()
        self.settings = settings
        self.store = Store(Database(settings.database_url))
        self.webhook_store = WebhookStore(self.store.db)
        self._connect()
        self._auth_cache: dict[str, tuple[float, AuthResult]] = {}
        self._leases = LeasedLimiter()
        self._lease_locks: dict[str, asyncio.Lock] = {}

    def _connect(self) -> None:
        """Fetch the singleton actors' handles (creating them on first use); again whenever one did not
        answer (it is restarting: it has max_restarts=-1)."""
        s = self.settings
        self.scheduler = SchedulerClient(get_or_create_scheduler(s), on_lost=self._connect)
        self.limiter = LimiterClient(get_or_create_rate_limiter(s), on_lost=self._connect)
        # delivers the outbox; owned like the scheduler
        self.webhooks = WebhooksClient(get_or_create_webhook_deliverer(s), on_lost=self._connect)
        # A detached scheduler outlives deployments, and a restarted one has its first settings: hand it
        # this deployment's (the limiter needs none: every hit carries the limit in force).
        self.scheduler.reconfigure(s)

    async def rate_limit(self, key: str, limit: int) -> RateDecision | None:
        """Count one request of ``key`` against ``limit`` from this replica's lease, leasing more from the
        limiter actor only when it is spent (one call per lease, whatever the concurrency). None: the
        limiter is unreachable (the caller fails open)."""
        decision = self._leases.decide(key, time.time(), limit)
        if decision is not None:
            return decision
        lock = self._lease_locks.setdefault(key, asyncio.Lock())
        async with lock:
            decision = self._leases.decide(key, time.time(), limit)  # another request may have leased
            if decision is None:
                want = lease_size(limit, self.settings.rate_limit_lease_fraction, self.settings.rate_limit_lease_max)
                try:
                    lease = await self.limiter.lease(key, want, limit, timeout=5.0)
                except errors.ServiceUnavailable:
                    return None
                self._leases.add(key, lease)
                # (None only if this replica's clock is already in the next window: the ledger counted it.)
                decision = self._leases.decide(key, time.time(), limit) or RateDecision(
                    lease.granted > 0, lease.limit, lease.remaining, lease.reset_at)
        if len(self._lease_locks) > 10_000:
            self._lease_locks.clear()  # bounded memory (at worst two leases race for a key: still exact)
        return decision

    async def authenticate(self, api_key: str | None) -> AuthResult:
        """The key's account. Valid keys are cached per replica for ``auth_cache_ttl_s`` (a revoked key
        stops working within that time); unknown and revoked keys are never cached."""
        now = time.monotonic()
        hit = self._auth_cache.get(api_key or "")
        if hit is not None and hit[0] > now:
            return hit[1]
        auth = await asyncio.to_thread(self.store.accounts.authenticate, api_key)
        if self.settings.auth_cache_ttl_s > 0:
            if len(self._auth_cache) > 10_000:
                self._auth_cache.clear()
            self._auth_cache[api_key or ""] = (now + self.settings.auth_cache_ttl_s, auth)
        return auth


def services(_: Request | None = None) -> Services:
    if runtime.services is None:
        raise errors.ServiceUnavailable("The API replica is still starting")
    return runtime.services


def account_of(request: Request) -> AuthResult:
    return request.state.auth


