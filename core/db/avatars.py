"""Avatars: uploads (deduplicated, within the plan's quota), lookups, listing and deletion."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session as OrmSession

from core import errors
from core.clock import utcnow
from core.db.accounts import account_row, limits_of, lock_account
from core.db.engine import Database
from core.db.models import Avatar
from core.db.outbox import avatar_data, record_event
from core.policy.plans import billing_period


def avatar_uploads_in_period(s: OrmSession, account_id: str, now: datetime) -> int:
    """Avatars the account uploaded in ``now``'s billing period (deleted ones count too)."""
    return int(s.scalar(select(func.count()).select_from(Avatar).where(
        Avatar.account_id == account_id, Avatar.created_at >= billing_period(now).start)) or 0)


#: The suggestion of AVATAR_LIMIT_REACHED when the plan includes no uploads at all.
NO_UPLOADS = "Upgrade the plan to upload faces"


class AvatarStore:
    def __init__(self, db: Database) -> None:
        self.db = db

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
        transaction as the inserts (the account is locked first, like admission): N parallel uploads
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
                lock_account(s, account_id)
                if enforce_quota:
                    limit = limits_of(s, account_row(s, account_id)).avatar_uploads
                    used = avatar_uploads_in_period(s, account_id, now)
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
            self._check_quota(s, account_id, now)

    @staticmethod
    def _check_quota(s: OrmSession, account_id: str, now: datetime, limit: int | None | bool = False) -> None:
        if limit is False:
            limit = limits_of(s, account_row(s, account_id)).avatar_uploads
        if limit is None:
            return
        used = avatar_uploads_in_period(s, account_id, now) if limit > 0 else 0
        if used >= limit:
            raise errors.AvatarLimitReached(details={"used": used, "limit": limit})

    def upload_precheck(self, account_id: str, content_hash: Callable[[], str], *, enforce_quota: bool,
                        now: datetime | None = None) -> Avatar | None:
        """An upload's early checks in one read (upload-face's hot path), cheapest refusal first: with
        ``enforce_quota``, refuse when the plan has no uploads; ``content_hash()`` (the caller's checks of
        the bytes, raising their typed error, then their hash); the account's avatar with these bytes if
        any (returned: the upload counts nothing); then, with ``enforce_quota``, the period's quota
        (AVATAR_LIMIT_REACHED). The binding quota check is the one inside ``add_avatars_deduplicated``."""
        with self.db.read() as s:
            limit: int | None = None
            if enforce_quota:
                limit = limits_of(s, account_row(s, account_id)).avatar_uploads
                if limit == 0:
                    raise errors.AvatarLimitReached(details={"used": 0, "limit": 0}, suggestion=NO_UPLOADS)
            existing = s.scalars(self._by_hash(account_id, [content_hash()]).limit(1)).first()
            if existing is not None:
                return existing
            if enforce_quota:
                self._check_quota(s, account_id, now or utcnow(), limit)
        return None

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
