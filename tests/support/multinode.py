"""A multi-node scenario on ``ray.cluster_utils.Cluster``: a head without GPUs plus worker nodes with
(fake) GPUs, the real scheduler actor and real workers. Run in its own process (it owns its Ray
cluster) by tests/test_multinode.py; prints what it observed as one JSON line, the test asserts on it.

    python -m tests.support.multinode <work folder>
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.scheduler import get_or_create_scheduler
from core import ids
from core.clock import utcnow
from core.db.engine import Database
from core.db.migrate import upgrade
from core.db.models import Avatar
from core.db.store import Store
from core.settings import Settings
from tests.support.ledger import money_problems
from tests.support.waiting import wait_for


def main(folder: Path) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    gpu_nodes = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    ray.init(address=cluster.address, namespace="multinode-driver", log_to_driver=False)
    cluster.wait_for_nodes()
    out: dict = {"node_ids": [n.node_id for n in gpu_nodes], "head_node": cluster.head_node.node_id}

    def settings_for(strategy: str, ns: str) -> Settings:
        return Settings(data_dir=folder, database_url=f"sqlite:///{folder / (ns + '.db')}", ray_namespace=ns,
                        gpu_per_session=0.25, warm_pool_size=0, placement_strategy=strategy,
                        placement_timeout_s=3.0, sweep_interval_s=1.0, heartbeat_interval_s=0.5,
                        worker_dead_after_s=30.0, worker_stop_timeout_s=2.0, worker_media="none")

    def setup(settings: Settings, created_on: str | None = None):
        upgrade(settings.database_url)
        store = Store(Database(settings.database_url))
        acct = store.accounts.create_account("multinode", "enterprise")
        store.accounts.set_plan(acct.id, "enterprise", max_concurrent_sessions=100)
        avatar = Avatar(id=ids.new_id(ids.AVATAR), is_public=True, name="x", created_at=utcnow())
        store.avatars.add_avatar(avatar)
        if created_on is None:
            sched = get_or_create_scheduler(settings)
        else:  # first made by a process on that node, as an API replica on a GPU node would
            sched = ray.get(_create_scheduler_on.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
                created_on, soft=False)).remote(settings), timeout=60)
        ray.get(sched.ping.remote(), timeout=60)
        return store, acct.id, avatar.id, sched

    def create(sched, acct, avatar):
        try:
            return ray.get(sched.create_session.remote(
                account_id=acct, avatar_id=avatar, aspect_ratio="4:3", metadata={}, room_platform="livekit",
                room_url="wss://lk.example", room_token="secret"), timeout=60)["session"]["session_id"]
        except Exception as exc:  # noqa: BLE001 - recorded for the test
            return f"error:{type(exc).__name__}:{getattr(exc, 'code', '')}"

    # ---------------------------------------------------------------- pack vs spread
    for strategy in ("PACK", "SPREAD"):
        settings = settings_for(strategy, f"mn-{strategy.lower()}")
        store, acct, avatar, sched = setup(settings)
        sids = [create(sched, acct, avatar) for _ in range(4)]
        out[f"{strategy.lower()}_nodes"] = [store.sessions.get_session(s).node_id if s.startswith("sess_") else s for s in sids]
        ray.get(sched.shutdown.remote(), timeout=60)
        ray.kill(sched, no_restart=True)

    # ---------------------------------------------------------------- node loss, node added, restart
    settings = settings_for("SPREAD", "mn-main")
    lost = gpu_nodes[0]
    store, acct, avatar, sched = setup(settings, created_on=lost.node_id)
    sids = [create(sched, acct, avatar) for _ in range(6)]
    out["before_loss"] = {s: store.sessions.get_session(s).node_id for s in sids}
    out["capacity_before"] = ray.get(sched.stats.remote(), timeout=30)["capacity"]
    out["scheduler_node"] = _node_of(sched)
    cluster.remove_node(lost, allow_graceful=False)

    def ended_on_lost_node():
        rows = [store.sessions.get_session(s) for s in sids]
        gone = [r for r in rows if r.node_id == lost.node_id]
        return all(r.status != "started" for r in gone) and rows

    lost_at = time.monotonic()
    try:
        rows = wait_for(ended_on_lost_node, 150, 0.25, "the lost node's sessions ended")
    except AssertionError:
        _diagnose(sched, store, sids)
        raise
    out["loss_ended_after_s"] = round(time.monotonic() - lost_at, 1)
    out["after_loss"] = {r.id: [r.status, r.end_reason] for r in rows}
    out["capacity_after_loss"] = wait_for(
        lambda: (c := ray.get(sched.stats.remote(), timeout=30)["capacity"])["slots_total"] == 4 and c, 60, 0.25,
        "4 slots after the loss")
    out["create_when_one_free"] = [create(sched, acct, avatar) for _ in range(2)]

    added = cluster.add_node(num_cpus=1, num_gpus=1)
    cluster.wait_for_nodes()
    out["added_node"] = added.node_id
    out["capacity_after_add"] = wait_for(
        lambda: (c := ray.get(sched.stats.remote(), timeout=30)["capacity"])["slots_total"] == 8 and c, 60, 0.25,
        "8 slots after the add")
    new = [create(sched, acct, avatar) for _ in range(3)]
    out["after_add"] = {s: (store.sessions.get_session(s).node_id if s.startswith("sess_") else s) for s in new}

    # Restart the scheduler mid-way: running sessions survive, are re-attached, and can be ended.
    pid = ray.get(sched.__ray_call__.remote(lambda self: os.getpid()), timeout=30)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: _ping(settings), 90, 0.25, "the restarted scheduler answering")
    running = [r.id for r in store.sessions.active_sessions()]
    out["running_after_restart"] = running
    sched = get_or_create_scheduler(settings)
    out["restarted_scheduler_node"] = _node_of(sched)
    ended = ray.get(sched.end_session.remote(running[0]), timeout=60)
    out["end_after_restart"] = [ended["status"], ended["end_reason"]]
    ray.get(sched.shutdown.remote(), timeout=60)
    # After a node lost, a restart and the shutdown: every session ended once and billed once.
    out["money_problems"] = {k: len(v) for k, v in money_problems(store).items()}
    out["active_left"] = len(store.sessions.active_sessions())
    out["groups_left"] = sorted(
        info["name"] for info in ray.util.placement_group_table().values()
        if info.get("state") != "REMOVED" and ids.session_of_placement_group(info.get("name") or "", None))
    ray.kill(sched, no_restart=True)
    ray.shutdown()
    cluster.shutdown()
    print(json.dumps(out))


@ray.remote(num_cpus=0)
def _create_scheduler_on(settings: Settings) -> Any:
    return get_or_create_scheduler(settings)


def _node_of(actor) -> str:
    return ray.get(actor.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()), timeout=30)


def _diagnose(sched, store: Store, sids: list[str]) -> None:
    """On a timeout: what the database, the scheduler and Ray each say (stderr reaches the test's failure)."""
    for sid in sids:
        row = store.sessions.get_session(sid)
        print(f"{sid}: {row.status} {row.end_reason} node={row.node_id[:8]} beat={row.last_heartbeat_at}",
              file=sys.stderr)
    print("nodes:", [(n["NodeID"][:8], n["Alive"]) for n in ray.nodes()], file=sys.stderr)
    try:
        stats = ray.get(sched.stats.remote(), timeout=10)
        print("scheduler:", {k: stats[k] for k in ("running", "creates_in_flight", "capacity")}, file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - a diagnosis
        print("scheduler unresponsive:", repr(exc), file=sys.stderr)


def _ping(settings: Settings):
    try:
        sched = ray.get_actor("avatar-scheduler", namespace=settings.ray_namespace)
        return ray.get(sched.ping.remote(), timeout=10)
    except Exception:  # noqa: BLE001 - restarting
        return None


if __name__ == "__main__":
    main(Path(sys.argv[1]))
