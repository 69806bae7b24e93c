"""Latency of create (avatar id, warm pool), get and end over HTTP.

    python -m bench.api [--requests 200]

Each create is made when the warm pool holds a worker (that is what "with a warm pool" means); the
pool refills in the background between iterations. The last line is the JSON summary.
"""
from __future__ import annotations

import argparse
import json
import time

from bench.harness import local_platform, percentile


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--pool", type=int, default=2)
    args = ap.parse_args()

    create_ms, get_ms, end_ms, pool_misses = [], [], [], 0
    with local_platform(warm_pool_size=args.pool) as p:
        headers = p.account("enterprise", max_concurrent_sessions=10_000, included_minutes=1_000_000)
        avatar = p.public_avatar()
        body = {"avatar": avatar, "room": {"platform": "livekit", "url": "wss://lk.example", "token": "t"}}
        for _ in range(3):  # warm the HTTP path
            p.http.get("/v1/usage", headers=headers)
        for i in range(args.requests):
            if not p.wait_pool(args.pool):
                pool_misses += 1
            t0 = time.perf_counter()
            r = p.http.post("/v1/sessions", json=body, headers=headers)
            create_ms.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 201, r.text
            sid = r.json()["session"]["session_id"]
            t0 = time.perf_counter()
            r = p.http.get(f"/v1/sessions/{sid}", headers=headers)
            get_ms.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200
            t0 = time.perf_counter()
            r = p.http.post(f"/v1/sessions/{sid}/end", headers=headers)
            end_ms.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200
            if i % 50 == 49:
                print(f"{i + 1} iterations: create p50 {percentile(create_ms, 50)} ms", flush=True)
    out = {
        "requests": args.requests,
        "create_p50_ms": percentile(create_ms, 50), "create_p99_ms": percentile(create_ms, 99),
        "get_p50_ms": percentile(get_ms, 50), "get_p99_ms": percentile(get_ms, 99),
        "end_p50_ms": percentile(end_ms, 50), "end_p99_ms": percentile(end_ms, 99),
        "warm_pool_size": args.pool, "pool_misses": pool_misses, "database": "sqlite",
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
