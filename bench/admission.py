"""Parallel creates against a concurrency limit, and how fast sessions start.

    python -m bench.admission [--parallel 50] [--limit 5] [--accounts 20] [--scale-parallel 200]

Phase 1: ``parallel`` simultaneous creates for an account whose limit is ``limit``: how many were
admitted (must never exceed the limit). Phase 2: ``parallel`` simultaneous creates with room for all
of them (limited by the cluster's slots): sessions started per second, warm pool included. Phase 3
(concurrency at scale): ``scale-parallel`` simultaneous creates spread over ``accounts`` accounts, each
limited to ``limit`` concurrent sessions, more creates per account than its limit: every account must
get exactly ``min(limit, its creates)`` admitted (``scale_violations`` counts the accounts that did not;
it must be 0), and ``admissions_per_s`` is the decisions (admitted or refused) per second the scheduler
sustained. The last line is the JSON summary.
"""
from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from bench.harness import local_platform, percentile


def burst(base_url: str, headers: dict | list[dict], body: dict, n: int) -> tuple[list[int], list[float], float]:
    """``n`` simultaneous creates; ``headers`` one account's, or one per create."""
    per_create = headers if isinstance(headers, list) else [headers] * n

    def one(i):
        with httpx.Client(base_url=base_url, timeout=120) as c:
            t0 = time.perf_counter()
            r = c.post("/v1/sessions", json=body, headers=per_create[i])
            return r.status_code, (time.perf_counter() - t0) * 1000

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(one, range(n)))
    return [c for c, _ in results], [ms for _, ms in results], time.perf_counter() - t0


def end_all(p, headers: dict) -> None:
    for s in p.http.get("/v1/sessions", params={"status": "active", "limit": 100}, headers=headers).json()["sessions"]:
        p.http.post(f"/v1/sessions/{s['session_id']}/end", headers=headers)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parallel", type=int, default=50)
    ap.add_argument("--limit", type=int, default=5)
    ap.add_argument("--starts", type=int, default=16, help="parallel creates in the start-rate phase")
    ap.add_argument("--pool", type=int, default=4)
    ap.add_argument("--accounts", type=int, default=20, help="accounts in the at-scale phase")
    ap.add_argument("--scale-parallel", type=int, default=200, help="parallel creates in the at-scale phase")
    ap.add_argument("--scale-limit", type=int, default=2, help="concurrent sessions each account may have there")
    ap.add_argument("--port", type=int, default=18200)
    args = ap.parse_args()

    # Enough slots that only the accounts' limits refuse in phase 3 (capacity is not what is measured).
    slots = max(args.starts, args.limit, args.accounts * args.scale_limit) + args.pool
    with local_platform(port=args.port, warm_pool_size=args.pool, slots=slots) as p:
        avatar = p.public_avatar()
        body = {"avatar": avatar, "room": {"platform": "livekit", "url": "wss://lk.example", "token": "t"}}
        limited = p.account("enterprise", max_concurrent_sessions=args.limit, included_minutes=100_000)
        p.wait_pool(args.pool)
        codes, _, _ = burst(p.base_url, limited, body, args.parallel)
        admitted = codes.count(201)
        print(f"phase 1: {args.parallel} parallel creates, limit {args.limit}: admitted {admitted}, "
              f"refused {codes.count(429)}", flush=True)
        end_all(p, limited)

        open_acct = p.account("enterprise", max_concurrent_sessions=10_000, included_minutes=100_000)
        p.wait_pool(args.pool)
        codes2, lat, wall = burst(p.base_url, open_acct, body, args.starts)
        started = codes2.count(201)
        print(f"phase 2: {started}/{args.starts} started in {wall:.2f} s", flush=True)
        end_all(p, open_acct)

        accounts = [p.account("enterprise", max_concurrent_sessions=args.scale_limit, included_minutes=100_000)
                    for _ in range(args.accounts)]
        per_create = [accounts[i % args.accounts] for i in range(args.scale_parallel)]
        p.wait_pool(args.pool)
        codes3, lat3, wall3 = burst(p.base_url, per_create, body, args.scale_parallel)
        violations, admitted3 = 0, 0
        for k, headers in enumerate(accounts):
            mine = [c for c, h in zip(codes3, per_create) if h is headers]
            ok = mine.count(201)
            admitted3 += ok
            if ok != min(args.scale_limit, len(mine)) or ok + mine.count(429) != len(mine):
                violations += 1
                print(f"account {k}: {ok} admitted of {len(mine)} (limit {args.scale_limit}), codes "
                      f"{sorted(set(mine))}", flush=True)
            active = p.http.get("/v1/usage", headers=headers).json()["usage"]["concurrency"]["current"]
            if active > args.scale_limit:
                violations += 1
        print(f"phase 3: {args.scale_parallel} parallel creates over {args.accounts} accounts (limit "
              f"{args.scale_limit} each): {admitted3} admitted, {violations} violations, "
              f"{args.scale_parallel / wall3:.1f} admissions/s", flush=True)
        for headers in accounts:
            end_all(p, headers)
    print(json.dumps({
        "parallel": args.parallel, "limit": args.limit, "admitted": admitted,
        "start_burst": args.starts, "started": started, "starts_per_s": round(started / wall, 2),
        "start_latency_p50_ms": percentile(lat, 50), "start_latency_p99_ms": percentile(lat, 99),
        "scale_parallel": args.scale_parallel, "scale_accounts": args.accounts, "scale_limit": args.scale_limit,
        "scale_admitted": admitted3, "scale_violations": violations,
        "admissions_per_s": round(args.scale_parallel / wall3, 2),
        "scale_latency_p50_ms": percentile(lat3, 50), "scale_latency_p99_ms": percentile(lat3, 99),
        "warm_pool_size": args.pool, "database": "sqlite",
    }))
    assert violations == 0, f"{violations} accounts' concurrency limits were not enforced exactly"


if __name__ == "__main__":
    main()
