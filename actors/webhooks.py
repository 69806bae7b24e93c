"""The webhook delivery actor: one named, detached actor per deployment (``avatar-webhooks``), started by the
API replicas like the scheduler, restarted by Ray if it dies.

It polls the outbox (``webhook_poll_interval_s``; ``wake()`` shortens the wait) for due deliveries and sends
each one signed (Standard Webhooks: ``webhook-id`` = the event id, the same on every retry), SSRF-safe and
without following redirects (``pipelines.faces.url_fetch.post_once``), bounded by ``webhook_timeout_s`` per
attempt. At most ``webhook_max_concurrency`` deliveries are in flight, at most ``webhook_max_per_endpoint``
to one endpoint, so one slow or hostile endpoint never delays the others. One session's events reach an
endpoint in order: the store hands out only the oldest pending delivery per (endpoint, session).

Nothing lives only in memory: a delivery in flight when the actor dies is still pending in the database
and is sent again by the restarted actor (at least once).
"""
from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray
from standardwebhooks.webhooks import Webhook

from actors import names
from core import errors, logs
from core.clock import utcnow
from core.db.engine import Database
from core.db.webhook_store import DueDelivery, WebhookStore
from core.settings import Settings

log = logging.getLogger("avatars.webhooks")


def signed_headers(secret: str, msg_id: str, body: str, when=None) -> dict[str, str]:
    """The Standard Webhooks headers for one delivery attempt."""
    when = when or utcnow()
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": Webhook(secret).sign(msg_id, when, body)}


class WebhookDeliverer:
    def __init__(self, settings: Settings, store: WebhookStore | None = None) -> None:
        logs.configure()
        self.settings = settings
        self.store = store or WebhookStore(Database(settings.database_url))
        self.policy = settings.webhook_retry_policy()
        # Sends are blocking (httpcore, pinned addresses): a pool sized to the concurrency bound.
        self._threads = ThreadPoolExecutor(max_workers=settings.webhook_max_concurrency,
                                           thread_name_prefix="webhook-send")
        self._in_flight: dict[str, str] = {}  # delivery id → endpoint id
        self._per_endpoint: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._stats = {"attempts": 0, "succeeded": 0, "failed_attempts": 0}
        self._loop_task = asyncio.get_running_loop().create_task(self._run_forever())

    # ================================================================ public surface
    async def ping(self) -> dict[str, Any]:
        return {**self._stats, "in_flight": len(self._in_flight)}

    async def wake(self) -> None:
        """Look at the outbox now (callers that just wrote an event may say so)."""
        self._wake.set()

    # ================================================================ the loop
    async def _run_forever(self) -> None:
        while True:
            try:
                await self._dispatch()
            except Exception:
                log.exception("webhook dispatch failed")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.webhook_poll_interval_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def _dispatch(self) -> None:
        free = self.settings.webhook_max_concurrency - len(self._in_flight)
        if free <= 0:
            return
        due = await asyncio.to_thread(self.store.due_deliveries, utcnow(), set(self._in_flight), limit=free * 2)
        for d in due:
            if len(self._in_flight) >= self.settings.webhook_max_concurrency:
                break
            if self._per_endpoint.get(d.endpoint_id, 0) >= self.settings.webhook_max_per_endpoint:
                continue
            self._in_flight[d.delivery_id] = d.endpoint_id
            self._per_endpoint[d.endpoint_id] = self._per_endpoint.get(d.endpoint_id, 0) + 1
            asyncio.get_running_loop().create_task(self._deliver(d), name=f"deliver-{d.delivery_id}")

    async def _deliver(self, d: DueDelivery) -> None:
        from pipelines.faces.url_fetch import post_once

        status_code: int | None = None
        error: str | None = None
        try:
            body = json.dumps(d.payload, separators=(",", ":"))
            headers = signed_headers(d.secret, d.event_id, body)
            loop = asyncio.get_running_loop()
            send = loop.run_in_executor(self._threads, lambda: post_once(
                d.url, body.encode(), headers, timeout_s=self.settings.webhook_timeout_s,
                allow_loopback=self.settings.allow_loopback_webhook_urls))
            # post_once has its own deadline; this outer bound only guards against a stuck thread.
            status_code = await asyncio.wait_for(send, timeout=self.settings.webhook_timeout_s + 5.0)
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}" + (" (redirects are not followed)" if 300 <= status_code < 400 else "")
        except errors.ApiError as exc:
            error = exc.message
        except asyncio.TimeoutError:
            error = "timed out"
        except Exception as exc:  # noqa: BLE001 - any failure is a failed attempt, recorded
            error = f"{type(exc).__name__}"
        self._stats["attempts"] += 1
        try:
            outcome = await asyncio.to_thread(self.store.record_attempt, d.delivery_id, status_code, error,
                                              self.policy)
            self._stats["succeeded" if outcome == "succeeded" else "failed_attempts"] += 1
            if outcome != "succeeded":
                log.info("webhook attempt failed", extra={"delivery_id": d.delivery_id,
                                                          "webhook_id": d.endpoint_id, "error": error})
        except Exception:
            log.exception("recording a webhook attempt failed")  # still pending: sent again later
        finally:
            self._in_flight.pop(d.delivery_id, None)
            left = self._per_endpoint.get(d.endpoint_id, 1) - 1
            if left > 0:
                self._per_endpoint[d.endpoint_id] = left
            else:
                self._per_endpoint.pop(d.endpoint_id, None)
            self._wake.set()  # the session's next event may go now


WebhookDelivererActor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)(WebhookDeliverer)


def get_or_create_webhook_deliverer(settings: Settings) -> Any:
    """The deployment's delivery actor, created (detached) on first use (its handle; called through
    ``actors.clients.WebhooksClient``)."""
    options = names.singleton_options(names.WEBHOOKS, settings.ray_namespace)
    return WebhookDelivererActor.options(**options).remote(settings)
