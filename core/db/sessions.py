"""Sessions and their billing: admission, start, end (billed once), deadlines, minute packs, usage."""
from __future__ import annotations

import base64
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session as OrmSession

from core import errors, ids
from core.clock import iso, minutes_rounded_up, utcnow
from core.db.accounts import account_row, limits_of, lock_account
from core.db.avatars import avatar_uploads_in_period
from core.db.engine import Database
from core.db.models import MinuteLedger, MinutePack, Session
from core.db.outbox import record_event
from core.policy.minutes import Balance, Deadline, RunningSession, check_admission, minute_deadlines, split_charge
from core.policy.plans import Limits, billing_period
from core.status import EndReason, SessionStatus
from core.views import session_view

_log = logging.getLogger("avatars.store")

ACTIVE = [s.value for s in SessionStatus.active()]
TERMINAL = [s.value for s in SessionStatus.terminal()]


@dataclass(frozen=True)
class NewSession:
    """What admission needs to insert a session row."""

    session_id: str
    account_id: str
    avatar_id: str
    aspect_ratio: str
    metadata: dict[str, Any]
    room_platform: str
    session_token_hash: str
    worker_name: str
    placement_group_name: str
    create_key: str | None = None  # the ingress's id of the create call (abandoned creates find it)


@dataclass(frozen=True)
class Started:
    """What ``mark_started`` did: the row (not started when it ended meanwhile), the deadlines of its
    account's active sessions, and the create response's ``usage`` block (None when not started)."""

    row: Session
    deadlines: dict[str, Deadline] = field(default_factory=dict)
    usage: dict[str, Any] | None = None


class SessionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add_minutes(self, account_id: str, minutes: int, note: str = "", now: datetime | None = None) -> MinutePack:
        if minutes <= 0:
            raise errors.ValidationFailed("minutes must be positive")
        with self.db.write() as s:
            account_row(s, account_id)
            pack = MinutePack(id=ids.new_id(ids.PACK), account_id=account_id, minutes=minutes, remaining=minutes,
                              purchased_at=now or utcnow(), note=note)
            s.add(pack)
        return pack

    def _balance(self, s: OrmSession, account_id: str, limits: Limits, now: datetime,
                 active: Sequence[Session] | None = None) -> Balance:
        included_used = _included_used(s, account_id, now)
        purchased_total, purchased_remaining = s.execute(
            select(func.coalesce(func.sum(MinutePack.minutes), 0), func.coalesce(func.sum(MinutePack.remaining), 0))
            .where(MinutePack.account_id == account_id)
        ).one()
        if active is None:
            active = s.scalars(select(Session).where(Session.account_id == account_id,
                                                     Session.status.in_(ACTIVE))).all()
        return Balance(
            included_total=limits.included_minutes,
            included_used=included_used,
            purchased_total=int(purchased_total),
            purchased_remaining=int(purchased_remaining),
            active_minutes=sum(_running_minutes(row, now) for row in active),
        )

    def admit_session(self, new: NewSession, now: datetime | None = None) -> Session:
        """Check the plan's limits and insert the session, atomically.

        The account is locked first (``lock_account``): concurrent admissions for one account run one
        after another and each sees the rows the previous one inserted, so N parallel creates never
        admit more than the limit.
        """
        now = now or utcnow()
        with self.db.write() as s:
            lock_account(s, new.account_id)
            limits = limits_of(s, account_row(s, new.account_id))
            active = s.scalar(
                select(func.count()).select_from(Session)
                .where(Session.account_id == new.account_id, Session.status.in_(ACTIVE))
            )
            check_admission(limits, int(active or 0), self._balance(s, new.account_id, limits, now))
            row = Session(
                id=new.session_id, account_id=new.account_id, avatar_id=new.avatar_id,
                status=SessionStatus.CREATED.value, aspect_ratio=new.aspect_ratio, metadata_json=new.metadata,
                room_platform=new.room_platform, session_token_hash=new.session_token_hash, created_at=now,
                worker_name=new.worker_name, placement_group_name=new.placement_group_name,
                create_key=new.create_key,
            )
            s.add(row)
        return row

    def mark_started(self, session_id: str, node_id: str | None, now: datetime | None = None) -> Started:
        """The worker runs: ``expiration`` is the earlier of the plan's maximum and what the account's
        running sessions leave to this one (see ``minute_deadlines``); the siblings' move with it (they
        share the minutes). One transaction also gives the create response its ``usage`` block."""
        now = now or utcnow()
        with self.db.write() as s:
            row = s.get(Session, session_id)
            if row is None:
                raise errors.SessionNotFound()
            if row.status != SessionStatus.CREATED.value:
                return Started(row)  # ended meanwhile (e.g. by the sweeper): keep its outcome
            row.status = SessionStatus.STARTED.value
            row.started_at = now
            row.node_id = node_id
            row.last_heartbeat_at = now
            s.flush()
            limits, balance, active = self._account_state(s, row.account_id, now)
            deadlines = _deadlines(limits, balance, active, now)
            row.expiration = deadlines[row.id].at if row.id in deadlines else now
            for r in active:  # the siblings' deadlines move with this one
                if r.id in deadlines and r.expiration != deadlines[r.id].at:
                    r.expiration = deadlines[r.id].at
            _session_event(s, row, "session.started", now)
        return Started(row, deadlines, _usage_block(limits, balance, active))

    def _account_deadlines(self, s: OrmSession, account_id: str, now: datetime) -> dict[str, Deadline]:
        return _deadlines(*self._account_state(s, account_id, now), now)

    def session_deadlines(self, now: datetime | None = None) -> dict[str, Deadline]:
        """When every started session must end (plan maximum or shared minutes), per the minutes policy;
        a session's ``expiration`` column is moved to its deadline when that changed (a pack bought; a
        sibling's start moves them in ``mark_started``)."""
        now = now or utcnow()
        out: dict[str, Deadline] = {}
        moved: dict[str, datetime] = {}
        with self.db.read() as s:
            rows = s.scalars(select(Session).where(Session.status.in_(ACTIVE))).all()
            for account_id in sorted({r.account_id for r in rows}):
                out.update(self._account_deadlines(s, account_id, now))
            moved = {r.id: out[r.id].at for r in rows if r.id in out and r.expiration != out[r.id].at}
        if moved:  # write only what changed (a write transaction locks SQLite)
            with self.db.write() as s:
                for row in s.scalars(select(Session).where(Session.id.in_(list(moved)),
                                                           Session.status.in_(ACTIVE))):
                    row.expiration = moved[row.id]
        return out

    def end_session(
        self, session_id: str, reason: EndReason, now: datetime | None = None, error: str | None = None,
        account_id: str | None = None,
    ) -> tuple[Session, bool]:
        """End a session and bill it, once. Returns (row, changed); ending an ended session changes nothing.
        With ``account_id``, another account's session is not found (and not ended)."""
        now = now or utcnow()
        with self.db.write() as s:
            row = s.get(Session, session_id)
            if row is None or (account_id is not None and row.account_id != account_id):
                raise errors.SessionNotFound()
            if row.status in TERMINAL:
                return row, False
            lock_account(s, row.account_id)  # billing and admission never interleave
            row.status = reason.final_status.value
            row.end_reason = reason.value
            row.ended_at = now
            row.error_message = error
            self._bill(s, row, now)
            _session_event(s, row, "session.failed" if row.status == SessionStatus.FAILED.value else "session.ended",
                           now)
        return row, True

    def session_ending(self, session_id: str, reason: EndReason, in_s: int, now: datetime | None = None) -> bool:
        """Record the ``session.ending`` webhook (one minute before a minutes_exhausted/expired end).
        False when the session is no longer running (nothing recorded)."""
        now = now or utcnow()
        with self.db.write() as s:
            row = s.get(Session, session_id)
            if row is None or row.status not in ACTIVE:
                return False
            _session_event(s, row, "session.ending", now, {"reason": reason.value, "in_s": in_s})
        return True

    def _bill(self, s: OrmSession, row: Session, now: datetime) -> None:
        """Charge the time the session ran, never past its expiration (the platform ending it a moment
        late is not the customer's time) and never more than remains; client_gone bills nothing."""
        until = min(now, row.expiration) if row.expiration is not None else now
        minutes = 0
        if row.started_at is not None and row.end_reason != EndReason.CLIENT_GONE.value:
            minutes = minutes_rounded_up((until - row.started_at).total_seconds())
        limits = limits_of(s, account_row(s, row.account_id))
        period = billing_period(now)
        included_used = _included_used(s, row.account_id, now)
        packs = s.scalars(
            select(MinutePack).where(MinutePack.account_id == row.account_id, MinutePack.remaining > 0)
            .order_by(MinutePack.purchased_at, MinutePack.id)
        ).all()
        charge = split_charge(minutes, max(0, limits.included_minutes - included_used),
                              [(p.id, p.remaining) for p in packs])
        by_id = {p.id: p for p in packs}
        if charge.from_included:
            s.add(MinuteLedger(account_id=row.account_id, session_id=row.id, period_start=period.start,
                               source="included", pack_id=None, minutes=charge.from_included, created_at=now))
        for pack_id, n in charge.packs:
            by_id[pack_id].remaining -= n
            s.add(MinuteLedger(account_id=row.account_id, session_id=row.id, period_start=period.start,
                               source="purchased", pack_id=pack_id, minutes=n, created_at=now))
        if charge.unpaid:
            _log.warning("session ran %d minute(s) past what remained; not charged", charge.unpaid,
                         extra={"session_id": row.id, "account_id": row.account_id})
        row.billed_minutes = charge.minutes
        row.billed_from_included = charge.from_included
        row.billed_from_purchased = charge.from_purchased

    def record_heartbeats(self, beats: dict[str, tuple[datetime, dict[str, Any]]]) -> None:
        """Write the workers' last heartbeats (and metrics) for active sessions in one transaction."""
        if not beats:
            return
        with self.db.write() as s:
            rows = s.scalars(select(Session).where(Session.id.in_(list(beats)), Session.status.in_(ACTIVE))).all()
            for row in rows:
                at, metrics = beats[row.id]
                row.last_heartbeat_at = at
                if metrics:
                    row.metrics_json = dict(metrics)

    # ================================================================ queries
    def get_session(self, session_id: str, account_id: str | None = None) -> Session:
        """A session, or SESSION_NOT_FOUND (also when it belongs to another account)."""
        with self.db.read() as s:
            row = s.get(Session, session_id)
        if row is None or (account_id is not None and row.account_id != account_id):
            raise errors.SessionNotFound()
        return row

    def find_session_by_create_key(self, create_key: str) -> Session | None:
        with self.db.read() as s:
            return s.scalars(select(Session).where(Session.create_key == create_key)).first()

    def active_sessions(self) -> list[Session]:
        with self.db.read() as s:
            return list(s.scalars(select(Session).where(Session.status.in_(ACTIVE))))

    def list_sessions(
        self, account_id: str, status: str = "all", limit: int = 20, cursor: str | None = None
    ) -> tuple[list[Session], str | None]:
        """Newest first; keyset pagination on (created_at, id)."""
        q = select(Session).where(Session.account_id == account_id)
        if status == "active":
            q = q.where(Session.status.in_(ACTIVE))
        elif status == "completed":
            q = q.where(Session.status.in_(TERMINAL))
        elif status != "all":  # one session status (ours)
            q = q.where(Session.status == SessionStatus(status).value)
        if cursor:
            created_at, last_id = decode_cursor(cursor)
            q = q.where((Session.created_at < created_at)
                        | ((Session.created_at == created_at) & (Session.id < last_id)))
        q = q.order_by(Session.created_at.desc(), Session.id.desc()).limit(limit + 1)
        with self.db.read() as s:
            rows = list(s.scalars(q))
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (encode_cursor(rows[-1]) if more else None)

    def usage(self, account_id: str, now: datetime | None = None) -> dict[str, Any]:
        now = now or utcnow()
        with self.db.read() as s:
            limits, balance, active = self._account_state(s, account_id, now)
            avatars_used = avatar_uploads_in_period(s, account_id, now)
        period = billing_period(now)
        return {
            "period": {"start": iso(period.start), "end": iso(period.end)},
            "included_minutes": {"total": balance.included_total, "used": balance.included_used,
                                 "remaining": balance.included_remaining},
            "purchased_minutes": {"total": balance.purchased_total, "remaining": balance.purchased_remaining},
            "total_remaining": balance.total_remaining,
            "active_sessions": [session_view(r, now) for r in active],
            "active_minutes": balance.active_minutes,
            "concurrency": concurrency(len(active), limits),
            "avatars": {"used": avatars_used, "limit": limits.avatar_uploads},
            "plan": {"key": limits.plan_key, "name": limits.plan_name,
                     "max_session_duration": limits.max_session_seconds // 60, "will_renew": True},
        }

    def admission_snapshot(self, account_id: str, now: datetime | None = None) -> dict[str, Any]:
        """The create response's ``usage`` block."""
        now = now or utcnow()
        with self.db.read() as s:
            return _usage_block(*self._account_state(s, account_id, now))

    def _account_state(self, s: OrmSession, account_id: str, now: datetime) -> tuple[Limits, Balance, list[Session]]:
        """An account's limits, minute balance and active sessions (newest first), in one read."""
        limits = limits_of(s, account_row(s, account_id))
        active = list(s.scalars(select(Session).where(Session.account_id == account_id, Session.status.in_(ACTIVE))
                                .order_by(Session.created_at.desc())))
        return limits, self._balance(s, account_id, limits, now, active), active

def _deadlines(limits: Limits, balance: Balance, active: list[Session], now: datetime) -> dict[str, Deadline]:
    plan_max = timedelta(seconds=limits.max_session_seconds)
    running = [RunningSession(r.id, r.started_at, r.started_at + plan_max if r.started_at else None)
               for r in active]
    return minute_deadlines(balance.unbilled_remaining, running, now)


def _usage_block(limits: Limits, balance: Balance, active: list[Session]) -> dict[str, Any]:
    return {"concurrency": concurrency(len(active), limits), "minutes": {"total_remaining": balance.total_remaining}}


def _session_event(s: OrmSession, row: Session, event_type: str, now: datetime,
                   extra: dict[str, Any] | None = None) -> None:
    """The webhook for a session change, in the transaction making it (data: the API's session object)."""
    record_event(s, row.account_id, event_type, {**session_view(row, now), **(extra or {})}, now, order_key=row.id)

def concurrency(current: int, limits: Limits) -> dict[str, int]:
    return {"current": current, "max": limits.max_concurrent_sessions,
            "available": max(0, limits.max_concurrent_sessions - current)}


def _running_minutes(row: Session, now: datetime) -> int:
    """An active session holds at least one minute (it will bill one), more as it runs."""
    if row.started_at is None:
        return 1
    return max(1, minutes_rounded_up((now - row.started_at).total_seconds()))


def encode_cursor(row: Session) -> str:
    raw = json.dumps([row.created_at.isoformat(), row.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, sid = json.loads(raw)
        when = datetime.fromisoformat(created)
        if when.tzinfo is None or not ids.has_prefix(sid, ids.SESSION):
            raise ValueError
        return when, sid
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise errors.InvalidCursor() from exc


def _included_used(s: OrmSession, account_id: str, now: datetime) -> int:
    """Included minutes the account has been charged in ``now``'s billing period."""
    return int(s.scalar(select(func.coalesce(func.sum(MinuteLedger.minutes), 0)).where(
        MinuteLedger.account_id == account_id, MinuteLedger.source == "included",
        MinuteLedger.period_start == billing_period(now).start)) or 0)
