"""SQLAlchemy 2 models. The same schema runs on SQLite (embedded default) and PostgreSQL.

Secrets at rest: API keys and session tokens are stored only as SHA-256 hashes; a session's room url
and token are not stored at all (they travel to the worker in its start call and live only there).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite hands back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use core.clock.utcnow()")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Plan(Base):
    __tablename__ = "plans"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    max_concurrent_sessions: Mapped[int] = mapped_column(Integer)
    max_session_seconds: Mapped[int] = mapped_column(Integer)
    included_minutes: Mapped[int] = mapped_column(Integer)
    # None = unlimited, 0 = not included.
    avatar_uploads: Mapped[int | None] = mapped_column(Integer, nullable=True)
    allows_url_avatars: Mapped[bool] = mapped_column(Boolean)
    # Requests per minute per API key; None = the deployment's rate_limit_per_minute.
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    plan_key: Mapped[str] = mapped_column(ForeignKey("plans.key"))
    created_at: Mapped[datetime]
    # Per-account overrides of the plan (enterprise plans are "configurable"); None = plan default.
    max_concurrent_sessions: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_session_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    included_minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    avatar_uploads: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Admission serialises on this row: bumped inside every admission transaction so that concurrent
    # admissions for one account conflict at the database level on every backend.
    admission_seq: Mapped[int] = mapped_column(BigInteger, default=0)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    display_prefix: Mapped[str] = mapped_column(String(16))  # e.g. "ah_live_AbCd", safe to show
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Avatar(Base):
    __tablename__ = "avatars"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # None for public avatars.
    account_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id"), nullable=True, index=True)
    is_public: Mapped[bool] = mapped_column(Boolean, default=False)
    orientation: Mapped[str] = mapped_column(String(8), default="4:3")
    content_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    image_path: Mapped[str | None] = mapped_column(String(500), nullable=True)
    preview_path: Mapped[str | None] = mapped_column(String(500), nullable=True)
    rig_path: Mapped[str | None] = mapped_column(String(500), nullable=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Session(Base):
    __tablename__ = "sessions"
    __table_args__ = (
        Index("ix_sessions_account_created", "account_id", "created_at", "id"),
        Index("ix_sessions_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    avatar_id: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))
    end_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    aspect_ratio: Mapped[str] = mapped_column(String(8))
    metadata_json: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    room_platform: Mapped[str] = mapped_column(String(16))
    session_token_hash: Mapped[str] = mapped_column(String(64))
    # The ingress's id for the create call that made this session: an abandoned create finds it by this.
    create_key: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)
    expiration: Mapped[datetime | None] = mapped_column(nullable=True)
    # Ray resources owned by this session (deterministic names, see core.ids).
    worker_name: Mapped[str | None] = mapped_column(String(80), nullable=True)
    placement_group_name: Mapped[str | None] = mapped_column(String(80), nullable=True)
    node_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # Billing, set once when the session ends.
    billed_minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    billed_from_included: Mapped[int | None] = mapped_column(Integer, nullable=True)
    billed_from_purchased: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Runtime metrics reported by the worker (first-frame time, fps, ...).
    metrics_json: Mapped[dict[str, Any]] = mapped_column("metrics", JSON, default=dict)


class MinutePack(Base):
    """Purchased minutes; consumed FIFO after the period's included minutes."""

    __tablename__ = "minute_packs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    minutes: Mapped[int] = mapped_column(Integer)
    remaining: Mapped[int] = mapped_column(Integer)
    purchased_at: Mapped[datetime]
    note: Mapped[str] = mapped_column(String(200), default="")


class MinuteLedger(Base):
    """One row per charge: which session consumed how many minutes from where."""

    __tablename__ = "minute_ledger"
    __table_args__ = (Index("ix_ledger_account_period", "account_id", "period_start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    session_id: Mapped[str] = mapped_column(String(40), index=True)
    period_start: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(16))  # "included" | "purchased"
    pack_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    minutes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]


class WebhookEndpoint(Base):
    """An account's webhook endpoint. ``secret`` (``whsec_...``) signs deliveries, so it is kept (it is
    shown to the client once, never returned again, never logged)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty = every event type
    description: Mapped[str] = mapped_column(String(500), default="")
    secret: Mapped[str] = mapped_column(String(100))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None] = mapped_column(nullable=True)


class WebhookEvent(Base):
    """The outbox: one row per event, written in the same transaction as the change it reports."""

    __tablename__ = "webhook_events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # msg_<ULID>: the webhook-id header
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    type: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"type", "timestamp", "data"}
    created_at: Mapped[datetime]


class WebhookDelivery(Base):
    """One event to one endpoint. Deliveries with the same ``order_key`` (a session's id, else the event's)
    to one endpoint go out in ``seq`` order, each after the previous one succeeded or gave up."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_pending", "status", "seq"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "seq"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)  # dlv_<ULID>
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_events.id"))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id"))
    order_key: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))  # pending | succeeded | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None] = mapped_column(nullable=True)


class IdempotencyRecord(Base):
    """One ``Idempotency-Key`` of one account on one route: the first request's fingerprint, and once it
    finished, its response (the body encrypted at rest: a create's body carries the session token)."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("account_id", "route", "idem_key", name="uq_idempotency_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    route: Mapped[str] = mapped_column(String(64))
    idem_key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    # Running: the owner holds it until locked_until (a replica that died releases it by expiry).
    locked_until: Mapped[datetime | None] = mapped_column(nullable=True)
    response_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # Fernet token
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
