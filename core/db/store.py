"""Repositories: every query and transaction the services run, over plain SQLAlchemy sessions.

Policy (what is allowed, how minutes are charged) lives in ``core.policy``; this module only loads
what the policy needs and writes what it decides, inside one transaction per operation.
"""
from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, Select, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession

from core import errors, ids
from core.clock import iso, minutes_rounded_up, utcnow
from core.db.engine import Database
from core.db.models import Account, ApiKey, Avatar, IdempotencyRecord, MinuteLedger, MinutePack, Plan, Session
from core.db.outbox import avatar_data, record_event
from core.policy.minutes import Balance, Deadline, RunningSession, check_admission, minute_deadlines, split_charge
from core.policy.plans import Limits, billing_period, effective_limits
from core.security import hash_secret, new_api_key
from core.status import EndReason, SessionStatus
from core.views import session_view

_log = logging.getLogger("avatars.store")

ACTIVE = [s.value for s in SessionStatus.active()]
TERMINAL = [s.value for s in SessionStatus.terminal()]


@dataclass(frozen=True)
class AuthResult:
    account_id: str
    key_id: str
    rate_limit_per_minute: int | None = None  # the account's override, else its plan's; None = default


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


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ================================================================ accounts, plans, keys
    def create_account(self, name: str, plan_key: str, now: datetime | None = None) -> Account:
        with self.db.write() as s:
            if s.get(Plan, plan_key) is None:
                raise errors.ValidationFailed(f"Unknown plan {plan_key!r}")
            account = Account(id=ids.new_id(ids.ACCOUNT), name=name, plan_key=plan_key,
                              created_at=now or utcnow(), admission_seq=0)
            s.add(account)
        return account

    def list_accounts(self) -> list[Account]:
        with self.db.read() as s:
            return list(s.scalars(select(Account).order_by(Account.created_at)))

    def find_account_by_name(self, name: str) -> Account | None:
        with self.db.read() as s:
            return s.scalars(select(Account).where(Account.name == name).order_by(Account.created_at)).first()

    def get_account(self, account_id: str) -> Account:
        with self.db.read() as s:
            account = s.get(Account, account_id)
        if account is None:
            raise errors.NotFound(f"Account {account_id} not found")
        return account

    def set_plan(self, account_id: str, plan_key: str, **overrides: int | None) -> Account:
        """Change an account's plan; ``overrides`` sets per-account limits (None clears one)."""
        allowed = {"max_concurrent_sessions", "max_session_seconds", "included_minutes", "avatar_uploads",
                   "rate_limit_per_minute"}
        with self.db.write() as s:
            account = s.get(Account, account_id)
            if account is None:
                raise errors.NotFound(f"Account {account_id} not found")
            if s.get(Plan, plan_key) is None:
                raise errors.ValidationFailed(f"Unknown plan {plan_key!r}")
            account.plan_key = plan_key
            for key, value in overrides.items():
                if key not in allowed:
                    raise errors.ValidationFailed(f"Unknown override {key!r}")
                if key == "rate_limit_per_minute" and value is not None and value < 1:
                    raise errors.ValidationFailed("rate_limit_per_minute must be at least 1")
                setattr(account, key, value)
        return account

    def list_plans(self) -> list[Plan]:
        with self.db.read() as s:
            return list(s.scalars(select(Plan).order_by(Plan.included_minutes)))

    def update_plan(self, plan_key: str, **values: Any) -> Plan:
        with self.db.write() as s:
            plan = s.get(Plan, plan_key)
            if plan is None:
                raise errors.ValidationFailed(f"Unknown plan {plan_key!r}")
            for key, value in values.items():
                if not hasattr(Plan, key) or key == "key":
                    raise errors.ValidationFailed(f"Unknown plan field {key!r}")
                setattr(plan, key, value)
        return plan

    def add_minutes(self, account_id: str, minutes: int, note: str = "", now: datetime | None = None) -> MinutePack:
        if minutes <= 0:
            raise errors.ValidationFailed("minutes must be positive")
        with self.db.write() as s:
            if s.get(Account, account_id) is None:
                raise errors.NotFound(f"Account {account_id} not found")
            pack = MinutePack(id=ids.new_id(ids.PACK), account_id=account_id, minutes=minutes, remaining=minutes,
                              purchased_at=now or utcnow(), note=note)
            s.add(pack)
        return pack

    def create_api_key(self, account_id: str, label: str = "", live: bool = True) -> tuple[ApiKey, str]:
        """Returns the row and the plaintext key, which is never retrievable again."""
        plaintext = new_api_key(live)
        with self.db.write() as s:
            if s.get(Account, account_id) is None:
                raise errors.NotFound(f"Account {account_id} not found")
            key = ApiKey(id=ids.new_id(ids.API_KEY), account_id=account_id, key_hash=hash_secret(plaintext),
                         display_prefix=plaintext[:12], label=label, created_at=utcnow())
            s.add(key)
        return key, plaintext

    def list_api_keys(self, account_id: str) -> list[ApiKey]:
        with self.db.read() as s:
            return list(s.scalars(select(ApiKey).where(ApiKey.account_id == account_id).order_by(ApiKey.created_at)))

    def revoke_api_key(self, key_id: str) -> ApiKey:
        with self.db.write() as s:
            key = s.get(ApiKey, key_id)
            if key is None:
                raise errors.NotFound(f"API key {key_id} not found")
            if key.revoked_at is None:
                key.revoked_at = utcnow()
        return key

    def authenticate(self, plaintext: str | None) -> AuthResult:
        if not plaintext:
            raise errors.ApiKeyRequired()
        with self.db.read() as s:
            key = s.scalars(select(ApiKey).where(ApiKey.key_hash == hash_secret(plaintext))).first()
            if key is None:
                raise errors.InvalidApiKey()
            if key.revoked_at is not None:
                raise errors.ApiKeyDeactivated()
            rate = self._limits(s, s.get_one(Account, key.account_id)).rate_limit_per_minute
        return AuthResult(account_id=key.account_id, key_id=key.id, rate_limit_per_minute=rate)

    # ================================================================ limits and minutes
    def _limits(self, s: OrmSession, account: Account) -> Limits:
        return effective_limits(s.get(Plan, account.plan_key), account)

    def limits(self, account_id: str) -> Limits:
        with self.db.read() as s:
            account = s.get(Account, account_id)
            if account is None:
                raise errors.NotFound(f"Account {account_id} not found")
            return self._limits(s, account)

    def _balance(self, s: OrmSession, account_id: str, limits: Limits, now: datetime,
                 active: Sequence[Session] | None = None) -> Balance:
        period = billing_period(now)
        included_used = s.scalar(
            select(func.coalesce(func.sum(MinuteLedger.minutes), 0)).where(
                MinuteLedger.account_id == account_id,
                MinuteLedger.source == "included",
                MinuteLedger.period_start == period.start,
            )
        )
        purchased_total, purchased_remaining = s.execute(
            select(func.coalesce(func.sum(MinutePack.minutes), 0), func.coalesce(func.sum(MinutePack.remaining), 0))
            .where(MinutePack.account_id == account_id)
        ).one()
        if active is None:
            active = s.scalars(select(Session).where(Session.account_id == account_id,
                                                     Session.status.in_(ACTIVE))).all()
        return Balance(
            included_total=limits.included_minutes,
            included_used=int(included_used or 0),
            purchased_total=int(purchased_total),
            purchased_remaining=int(purchased_remaining),
            active_minutes=sum(_running_minutes(row, now) for row in active),
        )

    # ================================================================ session lifecycle
    def admit_session(self, new: NewSession, now: datetime | None = None) -> Session:
        """Check the plan's limits and insert the session, atomically.

        The first statement bumps the account's ``admission_seq``: on PostgreSQL that takes the account
        row's lock, on SQLite the write transaction already holds the database lock (BEGIN IMMEDIATE).
        Either way, concurrent admissions for one account run one after another and each sees the rows
        the previous one inserted, so N parallel creates never admit more than the limit.
        """
        now = now or utcnow()
        with self.db.write() as s:
            bumped = cast("CursorResult[Any]", s.execute(  # (DML results are cursor results)
                update(Account).where(Account.id == new.account_id)
                .values(admission_seq=Account.admission_seq + 1)
            )).rowcount
            if not bumped:
                raise errors.NotFound(f"Account {new.account_id} not found")
            account = s.get_one(Account, new.account_id)
            limits = self._limits(s, account)
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

    def mark_started(self, session_id: str, node_id: str | None, now: datetime | None = None) -> Session:
        """The worker runs: ``expiration`` is the earlier of the plan's maximum and what the account's
        running sessions leave to this one (see ``minute_deadlines``)."""
        now = now or utcnow()
        with self.db.write() as s:
            row = s.get(Session, session_id)
            if row is None:
                raise errors.SessionNotFound()
            if row.status != SessionStatus.CREATED.value:
                return row  # ended meanwhile (e.g. by the sweeper): keep its outcome
            row.status = SessionStatus.STARTED.value
            row.started_at = now
            row.node_id = node_id
            row.last_heartbeat_at = now
            s.flush()
            deadline = self._account_deadlines(s, row.account_id, now).get(row.id)
            row.expiration = deadline.at if deadline else now
            _session_event(s, row, "session.started", now)
        return row

    def _account_deadlines(self, s: OrmSession, account_id: str, now: datetime) -> dict[str, Deadline]:
        limits, balance, active = self._account_state(s, account_id, now)
        plan_max = timedelta(seconds=limits.max_session_seconds)
        running = [RunningSession(r.id, r.started_at, r.started_at + plan_max if r.started_at else None)
                   for r in active]
        return minute_deadlines(balance.unbilled_remaining, running, now)

    def session_deadlines(self, now: datetime | None = None, account_id: str | None = None) -> dict[str, Deadline]:
        """When every started session (of ``account_id`` only, when given) must end (plan maximum or
        shared minutes), per the minutes policy; a session's ``expiration`` column is moved to its
        deadline when that changed (a pack bought, a sibling session started)."""
        now = now or utcnow()
        out: dict[str, Deadline] = {}
        moved: dict[str, datetime] = {}
        with self.db.read() as s:
            query = select(Session).where(Session.status.in_(ACTIVE))
            if account_id is not None:
                query = query.where(Session.account_id == account_id)
            rows = s.scalars(query).all()
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
        self, session_id: str, reason: EndReason, now: datetime | None = None, error: str | None = None
    ) -> tuple[Session, bool]:
        """End a session and bill it, once. Returns (row, changed); ending an ended session changes nothing."""
        now = now or utcnow()
        with self.db.write() as s:
            row = s.get(Session, session_id)
            if row is None:
                raise errors.SessionNotFound()
            if row.status in TERMINAL:
                return row, False
            # Lock the account like admission does, so billing and admission never interleave.
            s.execute(update(Account).where(Account.id == row.account_id)
                      .values(admission_seq=Account.admission_seq + 1))
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
        limits = self._limits(s, s.get_one(Account, row.account_id))
        period = billing_period(now)
        included_used = s.scalar(
            select(func.coalesce(func.sum(MinuteLedger.minutes), 0)).where(
                MinuteLedger.account_id == row.account_id, MinuteLedger.source == "included",
                MinuteLedger.period_start == period.start,
            )
        )
        packs = s.scalars(
            select(MinutePack).where(MinutePack.account_id == row.account_id, MinutePack.remaining > 0)
            .order_by(MinutePack.purchased_at, MinutePack.id)
        ).all()
        charge = split_charge(minutes, max(0, limits.included_minutes - int(included_used or 0)),
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
            avatars_used = self._avatar_uploads_in_period(s, account_id, now)
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
            limits, balance, active = self._account_state(s, account_id, now)
        return {"concurrency": concurrency(len(active), limits),
                "minutes": {"total_remaining": balance.total_remaining}}

    def _account_state(self, s: OrmSession, account_id: str, now: datetime) -> tuple[Limits, Balance, list[Session]]:
        """An account's limits, minute balance and active sessions (newest first), in one read."""
        limits = self._limits(s, s.get_one(Account, account_id))
        active = list(s.scalars(select(Session).where(Session.account_id == account_id, Session.status.in_(ACTIVE))
                                .order_by(Session.created_at.desc())))
        return limits, self._balance(s, account_id, limits, now, active), active

    # ================================================================ avatars
    def _avatar_uploads_in_period(self, s: OrmSession, account_id: str, now: datetime) -> int:
        period = billing_period(now)
        return int(s.scalar(select(func.count()).select_from(Avatar).where(
            Avatar.account_id == account_id, Avatar.created_at >= period.start)) or 0)

    def add_avatar(self, avatar: Avatar) -> Avatar:
        with self.db.write() as s:
            s.add(avatar)
        return avatar

    def rename_avatar(self, avatar_id: str, name: str) -> None:
        with self.db.write() as s:
            s.execute(update(Avatar).where(Avatar.id == avatar_id, Avatar.name != name).values(name=name))

    def get_avatar(self, avatar_id: str) -> Avatar | None:
        with self.db.read() as s:
            row = s.get(Avatar, avatar_id)
        return None if row is None or row.deleted_at is not None else row

    def resolve_avatar_for_session(self, avatar_id: str, account_id: str) -> Avatar:
        """The avatar a session may use, or AVATAR_NOT_FOUND / AVATAR_ACCESS_DENIED."""
        row = self.get_avatar(avatar_id)
        if row is None:
            raise errors.AvatarNotFound(details={"avatar_id": avatar_id})
        if not row.is_public and row.account_id != account_id:
            raise errors.AvatarAccessDenied(details={"avatar_id": avatar_id})
        return row

    # ================================================================ avatars: uploads, listing, deletion
    def find_avatar_by_hash(self, account_id: str | None, content_sha256: str) -> Avatar | None:
        """The live avatar of this account (None: the public set) made from these exact bytes."""
        with self.db.read() as s:
            return s.scalars(self._by_hash(account_id, [content_sha256]).limit(1)).first()

    def avatar_hashes(self, account_id: str | None) -> dict[str, str]:
        """content_sha256 -> avatar id of every live avatar of the account (None: public avatars)."""
        q = select(Avatar.content_sha256, Avatar.id).where(Avatar.deleted_at.is_(None),
                                                           Avatar.content_sha256.is_not(None))
        q = q.where(Avatar.account_id.is_(None), Avatar.is_public.is_(True)) if account_id is None \
            else q.where(Avatar.account_id == account_id)
        with self.db.read() as s:
            return {sha: aid for sha, aid in s.execute(q.order_by(Avatar.created_at)) if sha is not None}

    @staticmethod
    def _by_hash(account_id: str | None, hashes: list[str]) -> Select[Avatar]:
        q = select(Avatar).where(Avatar.deleted_at.is_(None), Avatar.content_sha256.in_(hashes))
        if account_id is None:
            q = q.where(Avatar.account_id.is_(None), Avatar.is_public.is_(True))
        else:
            q = q.where(Avatar.account_id == account_id)
        return q.order_by(Avatar.created_at)

    def add_avatars_deduplicated(
        self, avatars: list[Avatar], *, enforce_quota: bool = True, now: datetime | None = None
    ) -> list[tuple[Avatar, bool]]:
        """Insert avatars unless the same owner already has one with the same ``content_sha256``.

        Returns ``(row, created)`` per input, in order: ``created`` False means the existing avatar is
        returned instead (and nothing is counted). All avatars must have the same owner. With
        ``enforce_quota`` the plan's avatar uploads for the period are checked in the same write
        transaction as the inserts (the account row is locked first, like admission): N parallel uploads
        never exceed the limit. Over the limit nothing is inserted and AVATAR_LIMIT_REACHED is raised.
        """
        if not avatars:
            return []
        now = now or utcnow()
        owners = {a.account_id for a in avatars}
        if len(owners) != 1:
            raise ValueError("add_avatars_deduplicated: all avatars must have the same owner")
        account_id = owners.pop()
        with self.db.write() as s:
            limit: int | None = None
            used = 0
            if account_id is not None:
                bumped = cast("CursorResult[Any]", s.execute(update(Account).where(Account.id == account_id)
                                   .values(admission_seq=Account.admission_seq + 1))).rowcount
                if not bumped:
                    raise errors.NotFound(f"Account {account_id} not found")
                if enforce_quota:
                    limit = self._limits(s, s.get_one(Account, account_id)).avatar_uploads
                    used = self._avatar_uploads_in_period(s, account_id, now)
            hashes = [a.content_sha256 for a in avatars if a.content_sha256]
            existing: dict[str | None, Avatar] = {}  # (rows found by hash have one)
            if hashes:
                for row in s.scalars(self._by_hash(account_id, sorted(set(hashes)))):
                    existing.setdefault(row.content_sha256, row)
            out: list[tuple[Avatar, bool]] = []
            to_add: list[Avatar] = []
            for avatar in avatars:
                found = existing.get(avatar.content_sha256) if avatar.content_sha256 else None
                if found is not None:
                    out.append((found, False))
                    continue
                to_add.append(avatar)
                if avatar.content_sha256:
                    existing[avatar.content_sha256] = avatar
                out.append((avatar, True))
            if limit is not None and used + len(to_add) > limit:
                raise errors.AvatarLimitReached(
                    details={"used": used, "limit": limit},
                    suggestion="Uploads count per billing period (deleting an avatar does not give one back); "
                           "upgrade the plan or wait for the next period",
                )
            for avatar in to_add:
                if avatar.created_at is None:
                    avatar.created_at = now
                s.add(avatar)
                record_event(s, avatar.account_id, "avatar.created", avatar_data(avatar), now)
        return out

    def check_avatar_quota(self, account_id: str, now: datetime | None = None) -> None:
        """Raise AVATAR_LIMIT_REACHED when the period's uploads are used up (a cheap early check; the
        binding check is the one inside ``add_avatars_deduplicated``)."""
        now = now or utcnow()
        with self.db.read() as s:
            account = s.get(Account, account_id)
            if account is None:
                raise errors.NotFound(f"Account {account_id} not found")
            limit = self._limits(s, account).avatar_uploads
            if limit is None:
                return
            used = self._avatar_uploads_in_period(s, account_id, now) if limit > 0 else 0
        if used >= limit:
            raise errors.AvatarLimitReached(details={"used": used, "limit": limit})

    def list_avatars(self, account_id: str) -> tuple[list[Avatar], list[Avatar]]:
        """(public avatars, this account's avatars), live ones only, oldest first."""
        with self.db.read() as s:
            public = list(s.scalars(select(Avatar).where(Avatar.is_public.is_(True), Avatar.deleted_at.is_(None))
                                    .order_by(Avatar.created_at, Avatar.id)))
            mine = list(s.scalars(select(Avatar).where(Avatar.account_id == account_id,
                                                       Avatar.is_public.is_(False), Avatar.deleted_at.is_(None))
                                  .order_by(Avatar.created_at, Avatar.id)))
        return public, mine

    def delete_avatar(self, avatar_id: str, account_id: str, now: datetime | None = None) -> Avatar:
        """Soft-delete the account's own avatar. Unknown or deleted: AVATAR_NOT_FOUND; public or another
        account's: AVATAR_ACCESS_DENIED. Sessions already running keep their loaded avatar."""
        with self.db.write() as s:
            row = s.get(Avatar, avatar_id)
            if row is None or row.deleted_at is not None:
                raise errors.AvatarNotFound(details={"avatar_id": avatar_id})
            if row.is_public or row.account_id is None:
                raise errors.AvatarAccessDenied("Public avatars cannot be deleted by an account",
                                                details={"avatar_id": avatar_id})
            if row.account_id != account_id:
                raise errors.AvatarAccessDenied(details={"avatar_id": avatar_id})
            row.deleted_at = now or utcnow()
            record_event(s, row.account_id, "avatar.deleted", avatar_data(row), row.deleted_at)
        return row


def _session_event(s: OrmSession, row: Session, event_type: str, now: datetime,
                   extra: dict[str, Any] | None = None) -> None:
    """The webhook for a session change, in the transaction making it (data: the API's session object)."""
    record_event(s, row.account_id, event_type, {**session_view(row, now), **(extra or {})}, now, order_key=row.id)


class IdempotencyStore:
    """``Idempotency-Key`` records (SPEC "Idempotency"): one row per account, route and key, shared by
    every replica. ``begin`` claims a key or answers with what the first request decided; ``finish``
    keeps the response (encrypted by the caller); ``release`` forgets a key whose request did not
    reach a final answer, so it may be retried."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def begin(self, account_id: str, route: str, key: str, request_hash: str, *, lease_s: float,
              ttl_s: float, now: datetime | None = None) -> IdempotencyRecord | None:
        """None: this caller now owns the key and runs the request. A finished record: replay it.
        Raises IDEMPOTENCY_KEY_REUSED (another body) or IDEMPOTENCY_IN_PROGRESS (still running)."""
        now = now or utcnow()
        try:
            with self.db.write() as s:
                row = s.scalars(select(IdempotencyRecord).where(
                    IdempotencyRecord.account_id == account_id, IdempotencyRecord.route == route,
                    IdempotencyRecord.idem_key == key).with_for_update()).first()
                if row is not None and row.expires_at <= now:
                    s.delete(row)
                    s.flush()
                    row = None
                if row is None:
                    s.add(IdempotencyRecord(account_id=account_id, route=route, idem_key=key,
                                            request_hash=request_hash, locked_until=now + timedelta(seconds=lease_s),
                                            created_at=now, expires_at=now + timedelta(seconds=ttl_s)))
                    return None
                if row.request_hash != request_hash:
                    raise errors.IdempotencyKeyReused(details={"idempotency_key": key})
                if row.response_status is None:
                    if row.locked_until is not None and row.locked_until > now:
                        raise errors.IdempotencyInProgress(retry_after_s=2)
                    row.locked_until = now + timedelta(seconds=lease_s)  # its owner died: take it over
                    return None
                return row
        except IntegrityError:  # PostgreSQL: another replica inserted the same key a moment ago
            raise errors.IdempotencyInProgress(retry_after_s=2) from None

    def finish(self, account_id: str, route: str, key: str, status: int, body: bytes) -> None:
        with self.db.write() as s:
            s.execute(update(IdempotencyRecord).where(
                IdempotencyRecord.account_id == account_id, IdempotencyRecord.route == route,
                IdempotencyRecord.idem_key == key).values(response_status=status, response_body=body,
                                                          locked_until=None))

    def release(self, account_id: str, route: str, key: str) -> None:
        with self.db.write() as s:
            s.execute(delete(IdempotencyRecord).where(
                IdempotencyRecord.account_id == account_id, IdempotencyRecord.route == route,
                IdempotencyRecord.idem_key == key, IdempotencyRecord.response_status.is_(None)))

    def purge_expired(self, now: datetime | None = None) -> int:
        with self.db.write() as s:
            deleted = cast("CursorResult[Any]", s.execute(
                delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= (now or utcnow()))))
            return deleted.rowcount


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
