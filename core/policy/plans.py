"""Effective plan limits and billing periods: plain functions over plain values."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any


@dataclass(frozen=True)
class Limits:
    """What an account may do: its plan's values with the account's overrides applied."""

    plan_key: str
    plan_name: str
    max_concurrent_sessions: int
    max_session_seconds: int
    included_minutes: int
    avatar_uploads: int | None  # None = unlimited, 0 = not included
    allows_url_avatars: bool
    rate_limit_per_minute: int | None = None  # None = the deployment's default


def effective_limits(plan: Any, account: Any) -> Limits:
    """``plan`` and ``account`` are any objects with the model's attribute names (rows or stand-ins)."""

    def pick(name: str) -> Any:
        override = getattr(account, name, None)
        return override if override is not None else getattr(plan, name)

    def pick_optional(name: str) -> Any:  # columns older rows / stand-ins may lack
        override = getattr(account, name, None)
        return override if override is not None else getattr(plan, name, None)

    return Limits(
        plan_key=plan.key,
        plan_name=plan.name,
        max_concurrent_sessions=pick("max_concurrent_sessions"),
        max_session_seconds=pick("max_session_seconds"),
        included_minutes=pick("included_minutes"),
        avatar_uploads=account.avatar_uploads if account.avatar_uploads is not None else plan.avatar_uploads,
        allows_url_avatars=plan.allows_url_avatars,
        rate_limit_per_minute=pick_optional("rate_limit_per_minute"),
    )


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime


def billing_period(now: datetime) -> Period:
    """The calendar month (UTC) that contains ``now``."""
    now = now.astimezone(timezone.utc)
    start = datetime(now.year, now.month, 1, tzinfo=timezone.utc)
    end = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=timezone.utc)
    return Period(start, end)
