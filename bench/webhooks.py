"""Webhook delivery: event written → delivered latency, and throughput with one receiver failing.

    python -m bench.webhooks [--events 200] [--burst 300]

Phase 1: one healthy local receiver; events are written into the outbox (the same call the store makes
inside its transactions) at a steady pace; latency = arrival at the receiver - the event's commit.
Phase 2: two endpoints on one account, one answering 503 to everything; a burst of events; deliveries
per second to the healthy one while the failing one retries. The last line is the JSON summary.
"""
from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench.harness import local_platform, percentile
from core.clock import utcnow
from core.db.outbox import record_event
from core.db.webhook_store import WebhookStore


class _Receiver:
    """Local HTTP receiver: records when each webhook-id arrived; paths starting /fail answer 503."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.failed = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                failing = self.path.startswith("/fail")
                with outer.lock:
                    if failing:
                        outer.failed += 1
                    else:
                        outer.arrived.setdefault(self.headers["webhook-id"], time.time())
                self.send_response(503 if failing else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait(self, ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if all(i in self.arrived for i in ids):
                    return
            time.sleep(0.005)
        raise SystemExit(f"only {sum(i in self.arrived for i in ids)} of {len(ids)} events arrived in {timeout} s")


def write_event(store, account_id: str, n: int) -> tuple[str, float]:
    """One event committed through the outbox; returns its id and the commit time."""
    with store.db.write() as s:
        event = record_event(s, account_id, "avatar.created", {"avatar_id": f"bench-{n}"}, utcnow())
        assert event is not None  # (the bench's account has an endpoint that wants it)
    return event.id, time.time()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200, help="phase 1: events written one by one")
    ap.add_argument("--pace-ms", type=float, default=20.0, help="phase 1: pause between two events")
    ap.add_argument("--burst", type=int, default=300, help="phase 2: events written at once")
    ap.add_argument("--port", type=int, default=18200)
    args = ap.parse_args()

    rx = _Receiver()
    with local_platform(port=args.port, allow_loopback_webhook_urls=True, webhook_retry_base_s=0.5,
                        webhook_retry_cap_s=5.0) as p:
        hooks = WebhookStore(p.store.db)
        p.http.get("/healthz")
        p.account()  # the API replica is up and has started the delivery actor
        healthy = p.store.accounts.create_account("bench-healthy", "enterprise")
        hooks.create_endpoint(healthy.id, f"{rx.base}/ok")
        for i in range(5):  # warm up
            eid, _ = write_event(p.store, healthy.id, -i)
            rx.wait([eid], 60)

        latency_ms = []
        for i in range(args.events):
            eid, committed = write_event(p.store, healthy.id, i)
            rx.wait([eid], 60)
            latency_ms.append((rx.arrived[eid] - committed) * 1000)
            time.sleep(args.pace_ms / 1000)
            if i % 50 == 49:
                print(f"{i + 1} events: p50 {percentile(latency_ms, 50)} ms", flush=True)

        mixed = p.store.accounts.create_account("bench-mixed", "enterprise")
        hooks.create_endpoint(mixed.id, f"{rx.base}/fail")
        hooks.create_endpoint(mixed.id, f"{rx.base}/ok-mixed")
        t0 = time.time()
        burst = [write_event(p.store, mixed.id, i)[0] for i in range(args.burst)]
        rx.wait(burst, 300)
        elapsed = max(rx.arrived[i] for i in burst) - t0
    out = {
        "events": args.events, "delivery_p50_ms": percentile(latency_ms, 50),
        "delivery_p99_ms": percentile(latency_ms, 99), "delivery_max_ms": round(max(latency_ms), 2),
        "burst": args.burst, "deliveries_per_s": round(args.burst / elapsed, 1),
        "failing_endpoint_attempts": rx.failed, "poll_interval_s": p.settings.webhook_poll_interval_s,
        "database": "sqlite",
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
