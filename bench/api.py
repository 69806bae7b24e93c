"""Latency of create (avatar id, warm pool), get and end over HTTP.

    python -m bench.api [--requests 200]

Phase 1: create → get → end, each create made when the warm pool is full (that is what "with a warm
pool" means; the pool refills in the background, starting a worker process, while get and end run).
Phase 2: the same number of gets on running sessions once the pool is full and idle, i.e. the API's
read path alone. The last line is the JSON summary (get_* are phase 2; loaded_get_* phase 1).
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
        loaded_get_ms, get_ms = get_ms, []
        running = [p.http.post("/v1/sessions", json=body, headers=headers).json()["session"]["session_id"]
                   for _ in range(4)]
        p.wait_pool(args.pool)
        time.sleep(2.0)  # let the refill's process start settle
        for i in range(args.requests):
            t0 = time.perf_counter()
            r = p.http.get(f"/v1/sessions/{running[i % len(running)]}", headers=headers)
            get_ms.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200
    out = {
        "requests": args.requests,
        "create_p50_ms": percentile(create_ms, 50), "create_p99_ms": percentile(create_ms, 99),
        "get_p50_ms": percentile(get_ms, 50), "get_p99_ms": percentile(get_ms, 99),
        "end_p50_ms": percentile(end_ms, 50), "end_p99_ms": percentile(end_ms, 99),
        "loaded_get_p50_ms": percentile(loaded_get_ms, 50), "loaded_get_p99_ms": percentile(loaded_get_ms, 99),
        "warm_pool_size": args.pool, "pool_misses": pool_misses, "database": "sqlite",
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
