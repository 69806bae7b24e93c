"""Typed calls to the cluster's singleton actors (the scheduler, the rate limiter, the webhook deliverer).

Callers use these methods, never a handle's methods by name: each one states its arguments and its
typed answer, and every call ends the same way (``ActorClient._call``): the actor's typed errors come
back as themselves, a database outage and a lost actor as 503s.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ray.exceptions import RayActorError, RayTaskError
from sqlalchemy.exc import OperationalError

from actors.results import CreatedSession, SchedulerStats
from core import errors
from core.policy.rate_limit import Lease
from core.settings import Settings
from core.status import EndReason
from core.views import SessionView


class ActorClient:
    """One singleton actor behind typed methods. ``on_lost`` runs when the actor did not answer (it is
    restarting: it has max_restarts=-1), e.g. to fetch the handles again for the next call."""

    def __init__(self, handle: Any, on_lost: Callable[[], None] | None = None) -> None:
        self.handle = handle  # the actor's ActorHandle
        self._on_lost = on_lost

    async def _call(self, submit: Callable[[], Awaitable[Any]], timeout: float) -> Any:
        try:
            return await asyncio.wait_for(submit(), timeout=timeout)
        except RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, errors.ApiError):
                raise cause from None
            if isinstance(cause, OperationalError):  # the database is down: the actor changed nothing
                raise errors.ServiceUnavailable("The database is unavailable", retry_after_s=5) from None
            raise
        except (RayActorError, asyncio.TimeoutError):
            if self._on_lost is not None:
                self._on_lost()
            raise errors.ServiceUnavailable(retry_after_s=2) from None


class SchedulerClient(ActorClient):
    """``actors.scheduler.Scheduler``."""

    async def create_session(
        self, *, account_id: str, avatar_id: str, aspect_ratio: str, metadata: dict[str, Any], room_platform: str,
        room_url: str | None, room_token: str | None, room_options: dict[str, Any] | None = None,
        background: str = "original", video: dict[str, int] | None = None, create_key: str | None = None,
        timeout: float,
    ) -> CreatedSession:
        result: CreatedSession = await self._call(lambda: self.handle.create_session.remote(
            account_id=account_id, avatar_id=avatar_id, aspect_ratio=aspect_ratio, metadata=metadata,
            room_platform=room_platform, room_url=room_url, room_token=room_token, room_options=room_options,
            background=background, video=video, create_key=create_key), timeout)
        return result

    def abandon_create(self, create_key: str) -> None:
        """Submitted, not awaited: the caller of that create went away (see ``Scheduler.abandon_create``)."""
        self.handle.abandon_create.remote(create_key)

    async def end_session(self, session_id: str, reason: EndReason = EndReason.USER_REQUESTED, *,
                          timeout: float = 60.0) -> SessionView:
        view: SessionView = await self._call(lambda: self.handle.end_session.remote(session_id, reason.value),
                                             timeout)
        return view

    async def end_for_account(self, session_id: str, account_id: str, *,
                              timeout: float = 60.0) -> tuple[SessionView, bool]:
        """The end route: the view, and whether this call ended it (False: it had already ended)."""
        out: tuple[SessionView, bool] = await self._call(
            lambda: self.handle.end_for_account.remote(session_id, account_id), timeout)
        return out

    async def stats(self, *, timeout: float = 10.0) -> SchedulerStats:
        stats: SchedulerStats = await self._call(lambda: self.handle.stats.remote(), timeout)
        return stats

    async def heartbeat(self, session_id: str, metrics: dict[str, Any], *, timeout: float) -> None:
        await self._call(lambda: self.handle.heartbeat.remote(session_id, metrics), timeout)

    def reconfigure(self, settings: Settings) -> None:
        """Submitted, not awaited: the scheduler adopts these settings (see ``Scheduler.reconfigure``)."""
        self.handle.reconfigure.remote(settings)

    async def shutdown(self, *, timeout: float = 60.0) -> int:
        """End every active session and drain the pool; returns how many sessions it ended."""
        ended: int = await self._call(lambda: self.handle.shutdown.remote(), timeout)
        return ended


class LimiterClient(ActorClient):
    """``actors.rate_limiter.RateLimiter``."""

    async def lease(self, key: str, want: int, limit: int | None, *, timeout: float = 5.0) -> Lease:
        lease: Lease = await self._call(lambda: self.handle.lease.remote(key, want, limit), timeout)
        return lease


class WebhooksClient(ActorClient):
    """``actors.webhooks.WebhookDeliverer``."""

    async def wake(self, *, timeout: float = 2.0) -> None:
        """Look at the outbox now instead of at the next poll."""
        await self._call(lambda: self.handle.wake.remote(), timeout)
