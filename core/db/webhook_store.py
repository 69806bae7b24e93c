"""Repositories of webhook endpoints and deliveries (the outbox rows are written by ``core.db.outbox``)."""
from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from core import errors, ids
from core.clock import iso, utcnow
from core.db.engine import Database
from core.db.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from core.policy.webhooks import EVENT_TYPES, RetryPolicy, succeeded

MAX_ENDPOINTS_PER_ACCOUNT = 20


@dataclass(frozen=True)
class DueDelivery:
    """What the delivery actor needs to send one delivery."""

    delivery_id: str
    endpoint_id: str
    order_key: str
    url: str
    secret: str
    event_id: str
    payload: dict[str, Any]
    created_at: datetime
    attempts: int


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()  # the Standard Webhooks form


def endpoint_view(row: WebhookEndpoint) -> dict[str, Any]:
    return {"webhook_id": row.id, "url": row.url, "events": list(row.events or []), "description": row.description,
            "enabled": row.enabled, "disabled_reason": row.disabled_reason, "created_at": iso(row.created_at)}


def delivery_view(row: WebhookDelivery, event_type: str) -> dict[str, Any]:
    return {"delivery_id": row.id, "event_id": row.event_id, "type": event_type, "status": row.status,
            "attempts": row.attempts, "last_status_code": row.last_status_code, "last_error": row.last_error,
            "next_attempt_at": iso(row.next_attempt_at) if row.status == "pending" else None,
            "created_at": iso(row.created_at), "delivered_at": iso(row.delivered_at)}


class WebhookStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ================================================================ endpoints (the API, avatarctl)
    def create_endpoint(self, account_id: str, url: str, events: list[str] | None = None,
                        description: str = "") -> WebhookEndpoint:
        unknown = sorted(set(events or []) - set(EVENT_TYPES))
        if unknown:
            raise errors.InvalidWebhook(f"Unknown event types: {', '.join(unknown)}",
                                        details={"allowed": list(EVENT_TYPES)})
        with self.db.write() as s:
            count = len(s.scalars(select(WebhookEndpoint.id).where(
                WebhookEndpoint.account_id == account_id, WebhookEndpoint.deleted_at.is_(None))).all())
            if count >= MAX_ENDPOINTS_PER_ACCOUNT:
                raise errors.WebhookLimitReached(details={"max": MAX_ENDPOINTS_PER_ACCOUNT},
                                                 suggestion="Delete an endpoint first")
            row = WebhookEndpoint(id=ids.new_id(ids.WEBHOOK), account_id=account_id, url=url,
                                  events=sorted(set(events or [])), description=description, secret=new_secret(),
                                  enabled=True, consecutive_failures=0, created_at=utcnow())
            s.add(row)
        return row

    def list_endpoints(self, account_id: str) -> list[WebhookEndpoint]:
        with self.db.read() as s:
            return list(s.scalars(select(WebhookEndpoint).where(
                WebhookEndpoint.account_id == account_id, WebhookEndpoint.deleted_at.is_(None))
                .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)))

    def get_endpoint(self, webhook_id: str, account_id: str | None = None) -> WebhookEndpoint:
        with self.db.read() as s:
            row = s.get(WebhookEndpoint, webhook_id)
        if row is None or row.deleted_at is not None or (account_id is not None and row.account_id != account_id):
            raise errors.WebhookNotFound(details={"webhook_id": webhook_id})
        return row

    def delete_endpoint(self, webhook_id: str, account_id: str | None = None) -> WebhookEndpoint:
        """Soft delete: its pending deliveries are no longer sent."""
        self.get_endpoint(webhook_id, account_id)
        with self.db.write() as s:
            row = s.get_one(WebhookEndpoint, webhook_id)
            row.deleted_at = utcnow()
        return row

    def list_deliveries(self, webhook_id: str, account_id: str | None = None,
                        limit: int = 50) -> list[dict[str, Any]]:
        """The endpoint's deliveries, newest first."""
        self.get_endpoint(webhook_id, account_id)
        with self.db.read() as s:
            rows = s.execute(select(WebhookDelivery, WebhookEvent.type)
                             .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
                             .where(WebhookDelivery.endpoint_id == webhook_id)
                             .order_by(WebhookDelivery.seq.desc()).limit(limit)).all()
        return [delivery_view(d, t) for d, t in rows]

    def retry_delivery(self, webhook_id: str, delivery_id: str, account_id: str | None = None) -> dict[str, Any]:
        """Send a delivery again now (whatever its status); a disabled endpoint is enabled again."""
        self.get_endpoint(webhook_id, account_id)
        now = utcnow()
        with self.db.write() as s:
            row = s.scalars(select(WebhookDelivery).where(WebhookDelivery.id == delivery_id,
                                                          WebhookDelivery.endpoint_id == webhook_id)).first()
            if row is None:
                raise errors.WebhookNotFound("Delivery not found", details={"delivery_id": delivery_id})
            row.status, row.next_attempt_at = "pending", now
            endpoint = s.get_one(WebhookEndpoint, webhook_id)
            endpoint.enabled, endpoint.disabled_reason, endpoint.consecutive_failures = True, None, 0
            event_type = s.get_one(WebhookEvent, row.event_id).type
            return delivery_view(row, event_type)

    # ================================================================ the delivery actor
    def due_deliveries(self, now: datetime, exclude: set[str], limit: int = 64, scan: int = 2000) -> list[DueDelivery]:
        """Up to ``limit`` pending deliveries that may go now: per (endpoint, order_key) only the oldest
        pending one, and only when it is due and not already in flight (``exclude``). The scan reads key
        columns only; payloads are loaded for the chosen few."""
        with self.db.read() as s:
            rows = s.execute(
                select(WebhookDelivery.id, WebhookDelivery.endpoint_id, WebhookDelivery.order_key,
                       WebhookDelivery.next_attempt_at)
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                .where(WebhookDelivery.status == "pending", WebhookEndpoint.enabled.is_(True),
                       WebhookEndpoint.deleted_at.is_(None))
                .order_by(WebhookDelivery.seq).limit(scan)).all()
            seen: set[tuple[str, str]] = set()
            chosen: list[str] = []
            for delivery_id, endpoint_id, order_key, next_at in rows:
                if (endpoint_id, order_key) in seen:
                    continue  # an earlier event of this session goes first
                seen.add((endpoint_id, order_key))
                if delivery_id in exclude or (next_at is not None and next_at > now):
                    continue
                chosen.append(delivery_id)
                if len(chosen) >= limit:
                    break
            if not chosen:
                return []
            full = s.execute(
                select(WebhookDelivery, WebhookEndpoint.url, WebhookEndpoint.secret, WebhookEvent.payload)
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
                .where(WebhookDelivery.id.in_(chosen)).order_by(WebhookDelivery.seq)).all()
        return [DueDelivery(d.id, d.endpoint_id, d.order_key, url, secret, d.event_id, payload, d.created_at,
                            d.attempts) for d, url, secret, payload in full]

    def record_attempt(self, delivery_id: str, status_code: int | None, error: str | None, policy: RetryPolicy,
                       now: datetime | None = None) -> str:
        """Write one attempt's outcome; returns the delivery's new status. Failures schedule the next
        attempt (or give up after the retry window) and may disable the endpoint."""
        now = now or utcnow()
        with self.db.write() as s:
            d = s.scalars(select(WebhookDelivery).where(WebhookDelivery.id == delivery_id)).first()
            if d is None or d.status != "pending":
                return d.status if d else "gone"
            endpoint = s.get_one(WebhookEndpoint, d.endpoint_id)
            d.attempts += 1
            d.last_status_code, d.last_error = status_code, (error or None) and error[:500]
            if status_code is not None and succeeded(status_code):
                d.status, d.delivered_at, d.next_attempt_at = "succeeded", now, None
                s.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint.id)
                          .values(consecutive_failures=0))
                return d.status
            d.next_attempt_at = policy.next_attempt_at(d.created_at, d.attempts, now)
            if d.next_attempt_at is None:
                d.status = "failed"
            endpoint.consecutive_failures += 1
            if endpoint.enabled and policy.disables(endpoint.consecutive_failures):
                endpoint.enabled = False
                endpoint.disabled_reason = (f"Disabled after {endpoint.consecutive_failures} consecutive failed "
                                            f"attempts; last: {d.last_error or d.last_status_code}")[:500]
            return d.status
