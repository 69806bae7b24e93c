"""A running API under test: its settings, an HTTP client and direct database access for set-up."""
from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from core import ids
from core.clock import utcnow
from core.db.engine import Database
from core.db.models import Avatar
from core.db.store import Store
from core.settings import Settings


@dataclass
class Tenant:
    account_id: str
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.api_key}


@dataclass
class ApiUnderTest:
    backend: str
    settings: Settings
    base_url: str
    store: Store = field(init=False)

    def __post_init__(self) -> None:
        self.store = Store(Database(self.settings.database_url))
        self.http = httpx.Client(base_url=self.base_url, timeout=60)

    def tenant(self, plan: str = "explorer", **overrides) -> Tenant:
        account = self.store.accounts.create_account(f"test-{plan}", plan)
        if overrides:
            self.store.accounts.set_plan(account.id, plan, **overrides)
        _, key = self.store.accounts.create_api_key(account.id, "tests")
        return Tenant(account.id, key)

    def public_avatar(self) -> str:
        avatar = Avatar(id=ids.new_id(ids.AVATAR), account_id=None, is_public=True, name="test",
                        created_at=utcnow())
        self.store.avatars.add_avatar(avatar)
        return avatar.id

    def private_avatar(self, account_id: str) -> str:
        avatar = Avatar(id=ids.new_id(ids.AVATAR), account_id=account_id, is_public=False, name="mine",
                        created_at=utcnow())
        self.store.avatars.add_avatar(avatar)
        return avatar.id

    def store_active(self) -> list[dict]:
        """Every active session of this deployment (all accounts), straight from the database."""
        return [{"session_id": r.id, "status": r.status} for r in self.store.sessions.active_sessions()]

    def create_body(self, avatar_id: str, **extra) -> dict:
        body = {"avatar": avatar_id, "room": {"platform": "livekit", "url": "wss://lk.example.com",
                                              "token": "room-token-secret"}}
        body.update(extra)
        return body
