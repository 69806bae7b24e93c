"""Money invariants, checked straight in the database: every ended session billed exactly once, and
each account's balance (included used, packs' remaining) equal to its ledger."""
from __future__ import annotations

from collections import Counter

from sqlalchemy import select

from core.db.models import MinuteLedger, MinutePack, Session
from core.db.store import ACTIVE


def money_problems(store, account_ids: list[str] | None = None) -> dict[str, list]:
    """{"double_billed", "unbilled", "ledger_mismatches", "negative"}: each a list (empty = fine)."""
    out: dict[str, list] = {"double_billed": [], "unbilled": [], "ledger_mismatches": [], "negative": []}
    with store.db.read() as s:
        sq = select(Session)
        lq = select(MinuteLedger)
        pq = select(MinutePack)
        if account_ids is not None:
            sq = sq.where(Session.account_id.in_(account_ids))
            lq = lq.where(MinuteLedger.account_id.in_(account_ids))
            pq = pq.where(MinutePack.account_id.in_(account_ids))
        sessions = list(s.scalars(sq))
        ledger = list(s.scalars(lq))
        packs = list(s.scalars(pq))
    per_session: Counter = Counter()
    charges: Counter = Counter()  # (session, source, pack) → rows: one charge per source and pack
    for e in ledger:
        per_session[e.session_id] += e.minutes
        charges[(e.session_id, e.source, e.pack_id)] += 1
    out["double_billed"] += sorted({sid for (sid, _, _), n in charges.items() if n > 1})
    for row in sessions:
        if row.status in ACTIVE:
            if per_session[row.id]:
                out["double_billed"].append(row.id)  # charged while still running
            continue
        if row.billed_minutes is None or row.end_reason is None:
            out["unbilled"].append(row.id)
        elif row.billed_minutes != per_session[row.id] or \
                row.billed_minutes != (row.billed_from_included or 0) + (row.billed_from_purchased or 0):
            out["ledger_mismatches"].append(row.id)
    for pack in packs:
        taken = sum(e.minutes for e in ledger if e.pack_id == pack.id)
        if pack.remaining < 0:
            out["negative"].append(pack.id)
        if pack.minutes - pack.remaining != taken:
            out["ledger_mismatches"].append(pack.id)
    return out


def assert_money_consistent(store, account_ids: list[str] | None = None) -> None:
    problems = money_problems(store, account_ids)
    assert not any(problems.values()), problems
