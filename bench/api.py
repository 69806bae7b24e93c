"""Latency of create (avatar id, warm pool), get and end over HTTP, as ratios to Serve's own floor.

    python -m bench.api [--requests 200] [--clients 16]

Phase 1: create → get → end, each create made when the warm pool is full (that is what "with a warm
pool" means; the pool refills in the background, starting a worker process, while get and end run).
Phase 2: the same number of gets on running sessions once the pool is full and idle, i.e. the API's
read path alone, alternating with the same number of calls to a no-op route of the same Serve app
(``/healthz``: the same proxy, replica and middleware, no key check, no database), so that ``*_ratio`` =
our p50 / the no-op's p50 in the same run does not depend on how fast or loaded the machine is. Phase 3:
throughput with ``clients`` concurrent clients, gets vs the no-op (``get_throughput_ratio``).
Targets (issue 14): get_ratio <= 1.5, create_ratio <= 4 (warm pool), end_ratio <= 4,
get_throughput_ratio >= 0.7. The last line is the JSON summary (get_* are phase 2; loaded_get_* phase 1).
"""
from __future__ import annotations

import argparse
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from bench.harness import local_platform, percentile


def throughput(base_url: str, path: str, headers: dict, clients: int, per_client: int) -> float:
    """Requests per second of ``clients`` concurrent clients (own connection each) calling ``path``."""
    def one(_):
        with httpx.Client(base_url=base_url, timeout=120) as c:
            c.get(path, headers=headers)  # connect outside the timed part
            start.wait(timeout=60)
            for _ in range(per_client):
                assert c.get(path, headers=headers).status_code == 200
    start = threading.Barrier(clients + 1)
    with ThreadPoolExecutor(max_workers=clients) as pool:
        futures = [pool.submit(one, i) for i in range(clients)]
        start.wait(timeout=60)
        t0 = time.perf_counter()
        for f in futures:
            f.result()
    return clients * per_client / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--pool", type=int, default=2)
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients in the throughput phase")
    ap.add_argument("--port", type=int, default=18200)
    args = ap.parse_args()

    create_ms, get_ms, end_ms, noop_ms, pool_misses = [], [], [], [], 0
    with local_platform(port=args.port, warm_pool_size=args.pool) as p:
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
            t0 = time.perf_counter()
            r = p.http.get("/healthz")
            noop_ms.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200
        per_client = max(1, args.requests * 2 // args.clients)
        noop_rps = throughput(p.base_url, "/healthz", {}, args.clients, per_client)
        get_rps = throughput(p.base_url, f"/v1/sessions/{running[0]}", headers, args.clients, per_client)
    noop_p50 = percentile(noop_ms, 50)
    out = {
        "requests": args.requests,
        "noop_p50_ms": noop_p50, "noop_p99_ms": percentile(noop_ms, 99),
        "get_ratio": round(percentile(get_ms, 50) / noop_p50, 2),
        "create_ratio": round(percentile(create_ms, 50) / noop_p50, 2),
        "end_ratio": round(percentile(end_ms, 50) / noop_p50, 2),
        "clients": args.clients, "noop_rps": round(noop_rps, 1), "get_rps": round(get_rps, 1),
        "get_throughput_ratio": round(get_rps / noop_rps, 2),
        "create_p50_ms": percentile(create_ms, 50), "create_p99_ms": percentile(create_ms, 99),
        "get_p50_ms": percentile(get_ms, 50), "get_p99_ms": percentile(get_ms, 99),
        "end_p50_ms": percentile(end_ms, 50), "end_p99_ms": percentile(end_ms, 99),
        "loaded_get_p50_ms": percentile(loaded_get_ms, 50), "loaded_get_p99_ms": percentile(loaded_get_ms, 99),
        "warm_pool_size": args.pool, "pool_misses": pool_misses, "database": "sqlite",
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
