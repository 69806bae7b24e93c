"""Plans, and the limits an account gets from its plan and its own overrides."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from core import errors
from core.db.accounts import account_row, limits_of
from core.db.engine import Database
from core.db.models import Plan
from core.policy.plans import Limits


class PlanStore:
    def __init__(self, db: Database) -> None:
        self.db = db

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

    def limits(self, account_id: str) -> Limits:
        with self.db.read() as s:
            return limits_of(s, account_row(s, account_id))
