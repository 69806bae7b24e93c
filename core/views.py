"""The SPEC's JSON shapes of database rows (shared by the HTTP layer and the scheduler)."""
from __future__ import annotations

from datetime import datetime
from typing import Any, NotRequired, TypedDict

from core.clock import iso, utcnow
from core.db.models import Session
from core.status import SessionStatus


def session_duration(row: Session, now: datetime) -> float:
    """Seconds the session has run: live while it runs, fixed once it ended."""
    if row.started_at is None:
        return 0.0
    end = row.ended_at or now
    return round(max(0.0, (end - row.started_at).total_seconds()), 3)


class Billing(TypedDict):
    minutes: int
    from_included: int
    from_purchased: int


class SessionView(TypedDict):
    """A session as the API shows it (the SPEC's session object)."""

    session_id: str
    status: str
    aspect_ratio: str
    avatar_id: str
    created_at: str | None
    started_at: str | None
    ended_at: str | None
    expiration: str | None
    duration: float
    metadata: dict[str, Any]
    room: dict[str, str]
    end_reason: str | None
    end_detail: NotRequired[str]  # failed sessions: what failed
    billing: NotRequired[Billing]  # ended and failed sessions
    metrics: NotRequired[dict[str, Any]]  # once the worker reported any


def session_view(row: Session, now: datetime | None = None) -> SessionView:
    now = now or utcnow()
    view: SessionView = {
        "session_id": row.id,
        "status": row.status,
        "aspect_ratio": row.aspect_ratio,
        "avatar_id": row.avatar_id,
        "created_at": iso(row.created_at),
        "started_at": iso(row.started_at),
        "ended_at": iso(row.ended_at),
        "expiration": iso(row.expiration),
        "duration": session_duration(row, now),
        "metadata": row.metadata_json or {},
        "room": {"platform": row.room_platform},
        "end_reason": row.end_reason,
    }
    if row.status == SessionStatus.FAILED.value and row.error_message:
        view["end_detail"] = row.error_message  # (ours) what failed, e.g. the media error
    if row.status in (SessionStatus.ENDED.value, SessionStatus.FAILED.value):
        view["billing"] = {
            "minutes": row.billed_minutes or 0,
            "from_included": row.billed_from_included or 0,
            "from_purchased": row.billed_from_purchased or 0,
        }
    if row.metrics_json:
        view["metrics"] = row.metrics_json
    return view
