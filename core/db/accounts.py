"""Accounts and their API keys, and the account row's helpers every aggregate uses (read, lock, limits)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session as OrmSession

from core import errors, ids
from core.clock import utcnow
from core.db.engine import Database
from core.db.models import Account, ApiKey, Plan
from core.policy.plans import Limits, effective_limits
from core.security import hash_secret, new_api_key


@dataclass(frozen=True)
class AuthResult:
    account_id: str
    key_id: str
    rate_limit_per_minute: int | None = None  # the account's override, else its plan's; None = default


def account_row(s: OrmSession, account_id: str) -> Account:
    """The account, read in the open transaction ``s``, or NotFound."""
    account = s.get(Account, account_id)
    if account is None:
        raise errors.NotFound(f"Account {account_id} not found")
    return account


def lock_account(s: OrmSession, account_id: str) -> None:
    """Serialise the open write transaction ``s`` with every other one that locks this account
    (admission, billing, avatar uploads), or NotFound. Bumping ``admission_seq`` takes the account row's
    lock on PostgreSQL; on SQLite the write transaction already holds the database lock (BEGIN
    IMMEDIATE). Either way the next transaction to lock the account sees the rows this one wrote."""
    bumped = cast("CursorResult[Any]", s.execute(  # (DML results are cursor results)
        update(Account).where(Account.id == account_id).values(admission_seq=Account.admission_seq + 1))).rowcount
    if not bumped:
        raise errors.NotFound(f"Account {account_id} not found")


def limits_of(s: OrmSession, account: Account) -> Limits:
    """The account's effective limits (its plan's, with its own overrides), read in ``s``."""
    return effective_limits(s.get(Plan, account.plan_key), account)


class AccountStore:
    def __init__(self, db: Database) -> None:
        self.db = db

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
            return account_row(s, account_id)

    def set_plan(self, account_id: str, plan_key: str, **overrides: int | None) -> Account:
        """Change an account's plan; ``overrides`` sets per-account limits (None clears one)."""
        allowed = {"max_concurrent_sessions", "max_session_seconds", "included_minutes", "avatar_uploads",
                   "rate_limit_per_minute"}
        with self.db.write() as s:
            account = account_row(s, account_id)
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

    def create_api_key(self, account_id: str, label: str = "", live: bool = True) -> tuple[ApiKey, str]:
        """Returns the row and the plaintext key, which is never retrievable again."""
        plaintext = new_api_key(live)
        with self.db.write() as s:
            account_row(s, account_id)
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
            rate = limits_of(s, account_row(s, key.account_id)).rate_limit_per_minute
        return AuthResult(account_id=key.account_id, key_id=key.id, rate_limit_per_minute=rate)
