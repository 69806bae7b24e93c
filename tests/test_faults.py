"""The fault suite (real Ray, real Serve over HTTP, SQLite and PostgreSQL): after each fault no
placement group or worker is left that nobody owns, every session ended exactly once with a reason,
every ended session billed exactly once, and each account's balance equals its ledger.
``python -m bench.faults`` runs the same cases N times and reports counts and settle times."""
from __future__ import annotations

import pytest

import os
import shutil

from tests.support.faults import CASES, Target, postgres_outage, settle

pytestmark = pytest.mark.timeout(900)


@pytest.mark.parametrize("case", list(CASES))
def test_fault_leaves_nothing_behind(api, case):
    target = Target(settings=api.settings, http=api.http, store=api.store)
    accounts = CASES[case](target)
    found = settle(target, accounts)
    assert {k: v for k, v in found.items() if k != "settle_s"} == {
        "leaked_sessions": 0, "leaked_placement_groups": 0, "leaked_workers": 0, "double_billed": 0,
        "ledger_mismatches": 0}, found
    rows = [r for r in api.store.sessions.list_sessions(accounts[0], "all", 100)[0]]
    assert rows and all(r.end_reason and r.billed_minutes is not None for r in rows)


@pytest.mark.skipif(os.environ.get("AVATAR_TEST_PG_OUTAGE") != "1" or not shutil.which("pg_ctlcluster"),
                    reason="stops the local PostgreSQL: opt in with AVATAR_TEST_PG_OUTAGE=1 (CI does)")
def test_postgres_outage_refuses_creates_and_keeps_sessions_running(api):
    if api.backend != "api-postgres":
        pytest.skip("a PostgreSQL outage: nothing to stop on the SQLite deployment (the PostgreSQL one runs it)")
    target = Target(settings=api.settings, http=api.http, store=api.store)
    accounts = postgres_outage(target, outage_s=float(os.environ.get("AVATAR_TEST_PG_OUTAGE_S", "20")))
    found = settle(target, accounts)
    assert {k: v for k, v in found.items() if k != "settle_s"} == {
        "leaked_sessions": 0, "leaked_placement_groups": 0, "leaked_workers": 0, "double_billed": 0,
        "ledger_mismatches": 0}, found
