"""``Idempotency-Key`` records, shared by every replica."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.exc import IntegrityError

from core import errors
from core.clock import utcnow
from core.db.engine import Database
from core.db.models import IdempotencyRecord


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
            deleted = cast("CursorResult[Any]", s.execute(  # (DML results are cursor results)
                delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= (now or utcnow()))))
            return deleted.rowcount
