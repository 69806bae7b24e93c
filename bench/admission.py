"""Parallel creates against a concurrency limit, and how fast sessions start.

    python -m bench.admission [--parallel 50] [--limit 5]

Phase 1: ``parallel`` simultaneous creates for an account whose limit is ``limit``: how many were
admitted (must never exceed the limit). Phase 2: ``parallel`` simultaneous creates with room for all
of them (limited by the cluster's slots): sessions started per second, warm pool included.
The last line is the JSON summary.
"""
from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from bench.harness import local_platform, percentile


def burst(base_url: str, headers: dict, body: dict, n: int) -> tuple[list[int], list[float], float]:
    def one(_):
        with httpx.Client(base_url=base_url, timeout=120) as c:
            t0 = time.perf_counter()
            r = c.post("/v1/sessions", json=body, headers=headers)
            return r.status_code, (time.perf_counter() - t0) * 1000

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(one, range(n)))
    return [c for c, _ in results], [ms for _, ms in results], time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parallel", type=int, default=50)
    ap.add_argument("--limit", type=int, default=5)
    ap.add_argument("--starts", type=int, default=16, help="parallel creates in the start-rate phase")
    ap.add_argument("--pool", type=int, default=4)
    args = ap.parse_args()

    with local_platform(warm_pool_size=args.pool, slots=max(args.starts, args.limit) + args.pool) as p:
        avatar = p.public_avatar()
        body = {"avatar": avatar, "room": {"platform": "livekit", "url": "wss://lk.example", "token": "t"}}
        limited = p.account("enterprise", max_concurrent_sessions=args.limit, included_minutes=100_000)
        p.wait_pool(args.pool)
        codes, _, _ = burst(p.base_url, limited, body, args.parallel)
        admitted = codes.count(201)
        print(f"phase 1: {args.parallel} parallel creates, limit {args.limit}: admitted {admitted}, "
              f"refused {codes.count(429)}", flush=True)
        for s in p.http.get("/v1/sessions", params={"status": "active", "limit": 100}, headers=limited).json()["sessions"]:
            p.http.post(f"/v1/sessions/{s['session_id']}/end", headers=limited)

        open_acct = p.account("enterprise", max_concurrent_sessions=10_000, included_minutes=100_000)
        p.wait_pool(args.pool)
        codes2, lat, wall = burst(p.base_url, open_acct, body, args.starts)
        started = codes2.count(201)
        print(f"phase 2: {started}/{args.starts} started in {wall:.2f} s", flush=True)
    print(json.dumps({
        "parallel": args.parallel, "limit": args.limit, "admitted": admitted,
        "start_burst": args.starts, "started": started, "starts_per_s": round(started / wall, 2),
        "start_latency_p50_ms": percentile(lat, 50), "start_latency_p99_ms": percentile(lat, 99),
        "warm_pool_size": args.pool, "database": "sqlite",
    }))


if __name__ == "__main__":
    main()
