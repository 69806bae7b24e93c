"""Session starts per second and placement waits on a simulated multi-node cluster.

    python -m bench.scheduler [--nodes 3] [--slots-per-node 8] [--pool 8] [--rounds 4] [--concurrency 8]

A ``ray.cluster_utils.Cluster``: a head without session slots plus ``nodes`` worker nodes that advertise
``slots-per-node`` of the slot resource each (3 x 8 = 24 slots). The real scheduler actor and real
worker actors (``worker_media="none"``: they join no room, so only the control plane is measured),
driven directly (no HTTP), against a SQLite database in a temporary folder.

Phase ``warm`` (``rounds`` times): wait until the warm pool is full, fire ``pool`` creates at
``concurrency``, end them all. Every create finds a pre-started worker: this is the start rate the pool
buys. Phase ``burst``: fire ``2 x pool`` creates at once: the first ``pool`` are warm, the rest wait
for a placement group and a new worker process (cold). Placement waits are the scheduler's own
(``stats()["placement_wait_ms"]``: 0 for a warm start, group ready + worker up for a cold one).
The last line is the JSON summary.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.harness import percentile


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--slots-per-node", type=int, default=8)
    ap.add_argument("--pool", type=int, default=8, help="warm pool size")
    ap.add_argument("--rounds", type=int, default=4, help="warm rounds of `pool` creates each")
    ap.add_argument("--concurrency", type=int, default=8, help="creates in flight at once")
    ap.add_argument("--strategy", default="SPREAD", choices=["PACK", "SPREAD"])
    args = ap.parse_args()
    os.environ.pop("RAY_ADDRESS", None)  # this benchmark owns its cluster

    import ray
    from ray.cluster_utils import Cluster

    from actors import names
    from actors.scheduler import get_or_create_scheduler
    from core import ids
    from core.clock import utcnow
    from core.db.engine import Database
    from core.db.migrate import upgrade
    from core.db.models import Avatar
    from core.db.store import Store
    from core.settings import Settings

    slot_resource = "avatar_slot"
    t_boot = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    _forget_current_cluster(cluster.address)
    for _ in range(args.nodes):
        cluster.add_node(num_cpus=1, resources={slot_resource: args.slots_per_node})
    ray.init(address=cluster.address, namespace="bench-scheduler-driver", log_to_driver=False)
    cluster.wait_for_nodes()
    boot_s = time.perf_counter() - t_boot

    with tempfile.TemporaryDirectory(prefix="avatars-bench-sched-") as tmp:
        folder = Path(tmp)
        values = dict(
            data_dir=folder, database_url=f"sqlite:///{folder / 'bench.db'}", ray_namespace="bench-scheduler",
            slot_resource=slot_resource, gpu_per_session=0.0, warm_pool_size=args.pool,
            placement_strategy=args.strategy, placement_timeout_s=10.0, sweep_interval_s=2.0,
            heartbeat_interval_s=2.0, worker_dead_after_s=120.0, worker_stop_timeout_s=2.0,
        )
        if "worker_media" in Settings.model_fields:
            values["worker_media"] = "none"
        settings = Settings(**values)
        upgrade(settings.database_url)
        store = Store(Database(settings.database_url))
        acct = store.accounts.create_account("bench-scheduler", "enterprise")
        store.accounts.set_plan(acct.id, "enterprise", max_concurrent_sessions=10_000, included_minutes=1_000_000)
        avatar = Avatar(id=ids.new_id(ids.AVATAR), is_public=True, name="bench", created_at=utcnow())
        store.avatars.add_avatar(avatar)

        sched = get_or_create_scheduler(settings)
        ray.get(sched.ping.remote(), timeout=120)

        def stats() -> dict:
            return ray.get(sched.stats.remote(), timeout=60)

        def wait_pool(timeout: float = 120.0) -> float:
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < timeout:
                if stats()["warm_pool"] >= args.pool:
                    break
                time.sleep(0.05)
            return time.perf_counter() - t0

        def create(_: int) -> tuple[str, float]:
            t0 = time.perf_counter()
            try:
                out = ray.get(sched.create_session.remote(
                    account_id=acct.id, avatar_id=avatar.id, aspect_ratio="1:1", metadata={},
                    room_platform="livekit", room_url="wss://lk.example", room_token="t"), timeout=120)
                return out["session"]["session_id"], (time.perf_counter() - t0) * 1000
            except Exception as exc:  # noqa: BLE001 - counted as a failure
                return f"error:{type(exc).__name__}", (time.perf_counter() - t0) * 1000

        def burst(n: int) -> tuple[list[str], list[float], float]:
            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=min(n, args.concurrency)) as ex:
                results = list(ex.map(create, range(n)))
            wall = time.perf_counter() - t0
            return [s for s, _ in results], [ms for _, ms in results], wall

        def end_all(sids: list[str]) -> None:
            refs = [sched.end_session.remote(s) for s in sids if s and s.startswith("sess_")]
            ray.get(refs, timeout=120)

        capacity = stats()["capacity"]
        pool_fill_s = [wait_pool()]
        warm_started, warm_wall, warm_latency, failures = 0, 0.0, [], 0
        for _ in range(args.rounds):
            sids, lat, wall = burst(args.pool)
            ok = [s for s in sids if s.startswith("sess_")]
            warm_started += len(ok)
            failures += len(sids) - len(ok)
            warm_wall += wall
            warm_latency += lat
            end_all(ok)
            pool_fill_s.append(wait_pool())
        warm_waits = stats()["placement_wait_ms"]  # sorted by the scheduler, hence the multiset difference

        sids, burst_latency, burst_wall = burst(2 * args.pool)
        burst_ok = [s for s in sids if s.startswith("sess_")]
        failures += len(sids) - len(burst_ok)
        nodes_used = {store.sessions.get_session(s).node_id for s in burst_ok}
        final = stats()
        end_all(burst_ok)
        waits = final["placement_wait_ms"]
        burst_waits = list((Counter(waits) - Counter(warm_waits)).elements())

        ray.get(sched.shutdown.remote(), timeout=120)
        ray.kill(ray.get_actor(names.SCHEDULER, namespace=settings.ray_namespace), no_restart=True)
        store.db.dispose()
    ray.shutdown()
    cluster.shutdown()

    print(f"cluster: {args.nodes} nodes x {args.slots_per_node} slots up in {boot_s:.1f} s; "
          f"pool of {args.pool} filled in {pool_fill_s[0]:.1f} s (refills p50 "
          f"{percentile(pool_fill_s[1:], 50):.1f} s)", flush=True)
    print(f"warm: {warm_started} starts in {warm_wall:.2f} s; burst of {2 * args.pool}: {len(burst_ok)} started "
          f"in {burst_wall:.2f} s on {len(nodes_used)} node(s)", flush=True)
    print(json.dumps({
        "nodes": len(capacity["nodes"]),
        "slots": capacity["slots_total"],
        "warm_pool": args.pool,
        "concurrency": args.concurrency,
        "strategy": args.strategy,
        "starts": warm_started,
        "starts_per_s": round(warm_started / warm_wall, 2) if warm_wall else 0.0,
        "placement_wait_p50_ms": percentile(waits, 50),
        "placement_wait_p99_ms": percentile(waits, 99),
        "warm_placement_wait_p99_ms": percentile(warm_waits, 99),
        "create_latency_p50_ms": percentile(warm_latency, 50),
        "create_latency_p99_ms": percentile(warm_latency, 99),
        "burst_starts": len(burst_ok),
        "burst_starts_per_s": round(len(burst_ok) / burst_wall, 2) if burst_wall else 0.0,
        "burst_placement_wait_p50_ms": percentile(burst_waits, 50),
        "burst_placement_wait_p99_ms": percentile(burst_waits, 99),
        "cold_placement_wait_p50_ms": percentile([w for w in burst_waits if w > 0], 50),
        "burst_create_latency_p99_ms": percentile(burst_latency, 99),
        "pool_refill_p50_s": percentile(pool_fill_s[1:], 50),
        "failures": failures,
        "cpus": os.cpu_count(),
    }))


def _forget_current_cluster(address: str) -> None:
    """``Cluster`` writes its address to /tmp/ray/ray_current_cluster, where any plain ``ray.init()`` on
    this machine (another test run, another benchmark) would find it and join this cluster instead of
    starting its own. Remove the file again while it still names this cluster."""
    from ray._common.utils import get_ray_address_file

    path = Path(get_ray_address_file(None))
    try:
        if path.read_text().strip() == address:
            path.unlink()
    except OSError:
        pass


if __name__ == "__main__":
    main()
