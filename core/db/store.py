"""The repositories, one per aggregate, over one database: every query and transaction the services run.

Each repository runs one transaction per operation through ``Database.read()`` / ``Database.write()``;
transactions that must not interleave for one account (admission, billing, avatar uploads) take
``accounts.lock_account`` first. Policy (what is allowed, how minutes are charged) lives in
``core.policy``; the repositories only load what it needs and write what it decides.
"""
from __future__ import annotations

from core.db.accounts import AccountStore, AuthResult
from core.db.avatars import AvatarStore
from core.db.engine import Database
from core.db.idempotency import IdempotencyStore
from core.db.plans import PlanStore
from core.db.sessions import ACTIVE, NewSession, SessionStore

__all__ = ["ACTIVE", "AuthResult", "NewSession", "Store"]


class Store:
    """The repositories of one database: ``accounts`` (and API keys), ``plans`` (and effective limits),
    ``sessions`` (and billing), ``avatars`` and ``idempotency``."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.accounts = AccountStore(db)
        self.plans = PlanStore(db)
        self.sessions = SessionStore(db)
        self.avatars = AvatarStore(db)
        self.idempotency = IdempotencyStore(db)
