"""The webhook outbox: an event is written in the same transaction as the change it reports.

``record_event`` is called inside the store's own write transactions (session started / ended / failed,
avatar created / deleted) and by ``SessionStore.session_ending``. It writes the event row and one pending
delivery per enabled endpoint of the account that wants this type; the delivery actor sends them.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession

from core import ids
from core.clock import iso
from core.db.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from core.policy.webhooks import EVENT_TYPES, wants


def record_event(s: OrmSession, account_id: str | None, event_type: str, data: dict[str, Any], now: datetime,
                 order_key: str | None = None) -> WebhookEvent | None:
    """Add the event and its deliveries to the open transaction ``s``. No-op without an account (public
    avatars) or without an endpoint that wants it. ``order_key`` (a session id) keeps one session's events
    in order per endpoint."""
    assert event_type in EVENT_TYPES, event_type
    if account_id is None:
        return None
    endpoints = [e for e in s.scalars(select(WebhookEndpoint).where(
        WebhookEndpoint.account_id == account_id, WebhookEndpoint.deleted_at.is_(None),
        WebhookEndpoint.enabled.is_(True))) if wants(e.events, event_type)]
    if not endpoints:
        return None
    event = WebhookEvent(id=ids.new_id(ids.WEBHOOK_MESSAGE), account_id=account_id, type=event_type,
                         payload={"type": event_type, "timestamp": iso(now), "data": data}, created_at=now)
    s.add(event)
    s.flush()  # the event row exists before deliveries reference it (PostgreSQL checks the key at once)
    for endpoint in endpoints:
        s.add(WebhookDelivery(id=ids.new_id(ids.WEBHOOK_DELIVERY), event_id=event.id, endpoint_id=endpoint.id,
                              order_key=order_key or event.id, status="pending", attempts=0,
                              next_attempt_at=now, created_at=now))
    return event


def avatar_data(row: Any) -> dict[str, Any]:
    """An avatar as webhooks carry it (signed URLs expire, so they are not sent: list the avatars for them)."""
    return {"avatar_id": row.id, "tags": ["public"] if row.is_public else ["user_exclusive", row.account_id],
            "orientation": row.orientation, "created_at": iso(row.created_at), "deleted_at": iso(row.deleted_at)}
