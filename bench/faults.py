"""The fault cases of tests/test_faults.py, each run N times against one local platform, with counts.

    python -m bench.faults [--runs 3] [--cases worker_killed_during_start,...] [--port 18210] [--postgres]

Real Ray, real Serve over HTTP, SQLite in a temporary folder (``--postgres``: a temporary database on the
local PostgreSQL, and the ``postgres_outage`` case, which stops that server for 20 s), control-plane workers
(``worker_media="none"``). After every run the system is given up to ``--settle-timeout`` seconds to
become quiet; then it counts sessions still active (leaked), placement groups and workers nobody owns,
sessions billed more than once and ledger/balance mismatches (all must be 0), and how long it took to
settle. The last line is the JSON summary: per case and in total.
"""
from __future__ import annotations

import argparse
import json
import os

import contextlib
import tempfile
from pathlib import Path

from bench.harness import local_platform, percentile
from tests.support.databases import temporary_database
from tests.support.faults import CASES, Target, postgres_outage, settle

COUNTS = ("leaked_sessions", "leaked_placement_groups", "leaked_workers", "double_billed", "ledger_mismatches")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3, help="runs of each case")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    ap.add_argument("--port", type=int, default=18210)
    ap.add_argument("--settle-timeout", type=float, default=120.0)
    ap.add_argument("--postgres", action="store_true", help="PostgreSQL database, plus the postgres_outage case")
    args = ap.parse_args()
    os.environ.pop("RAY_ADDRESS", None)  # this benchmark owns its cluster
    cases = {c: CASES[c] for c in args.cases.split(",") if c}
    if args.postgres:
        cases["postgres_outage"] = postgres_outage
    report: dict[str, dict] = {}
    with contextlib.ExitStack() as stack:
        db = {}
        if args.postgres:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="avatars-faults-")))
            db = {"database_url": stack.enter_context(temporary_database("postgres", folder))}
        p = stack.enter_context(local_platform(
            port=args.port, slots=8, warm_pool_size=2, placement_timeout_s=5.0, sweep_interval_s=1.0,
            heartbeat_interval_s=0.5, worker_dead_after_s=10.0, worker_stop_timeout_s=2.0, **db))
        target = Target(settings=p.settings, http=p.http, store=p.store)
        for case, fault in cases.items():
            totals = {k: 0 for k in COUNTS}
            settle_s, failures = [], []
            for i in range(args.runs):
                try:
                    accounts = fault(target)
                except AssertionError as exc:  # the fault's own expectation failed: counted, not fatal
                    failures.append(str(exc)[:200])
                    accounts = [a.id for a in p.store.accounts.list_accounts()]
                found = settle(target, accounts, timeout=args.settle_timeout)
                for k in COUNTS:
                    totals[k] += found.get(k, 0)
                settle_s.append(found["settle_s"])
                print(json.dumps({"case": case, "run": i, **found}), flush=True)
            report[case] = {"runs": args.runs, **totals, "case_failures": len(failures),
                            "settle_s_p50": percentile(settle_s, 50), "settle_s_max": max(settle_s),
                            "failures": failures}
    total = {"runs": sum(r["runs"] for r in report.values()),
             **{k: sum(r[k] for r in report.values()) for k in COUNTS},
             "case_failures": sum(r["case_failures"] for r in report.values())}
    print(json.dumps({"bench": "faults", **total, "cases": report}))


if __name__ == "__main__":
    main()
