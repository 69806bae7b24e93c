"""The scheduler itself, with its injected store (a real database) and an in-memory fake cluster: no Ray.

Each test drives the scheduler's public calls (create, end, sweep, reconfigure) on one event loop."""
from __future__ import annotations

import asyncio

import pytest

from actors.scheduler import Scheduler
from core import errors, ids
from core.clock import utcnow
from core.db.engine import Database
from core.db.models import Avatar
from core.db.store import NewSession, Store
from core.settings import Settings
from core.status import EndReason
from tests.support.databases import temporary_database
from tests.support.fake_cluster import NODE_ID, FakeCluster

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    with temporary_database(request.param, tmp_path) as url:
        store = Store(Database(url))
        yield store
        store.db.dispose()


def settings_for(store: Store, tmp_path, **overrides) -> Settings:
    values = dict(data_dir=tmp_path, database_url=store.db.url, ray_namespace="fake", warm_pool_size=0,
                  sweep_interval_s=300.0,  # the tests call sweep() themselves
                  heartbeat_interval_s=1.0, worker_dead_after_s=600.0, worker_media="none")
    values.update(overrides)
    return Settings(**values)


def tenant(store: Store, **overrides) -> tuple[str, str]:
    account = store.accounts.create_account("scheduler-test", "explorer")
    if overrides:
        store.accounts.set_plan(account.id, "explorer", **overrides)
    avatar = Avatar(id=ids.new_id(ids.AVATAR), account_id=None, is_public=True, name="test", created_at=utcnow())
    store.avatars.add_avatar(avatar)
    return account.id, avatar.id


async def create(scheduler: Scheduler, account_id: str, avatar_id: str) -> dict:
    return await scheduler.create_session(account_id=account_id, avatar_id=avatar_id, aspect_ratio="16:9",
                                          metadata={}, room_platform="livekit", room_url="wss://room.invalid",
                                          room_token="t")


async def started(settings: Settings, cluster: FakeCluster, store: Store) -> Scheduler:
    scheduler = Scheduler(settings, cluster=cluster, store=store)
    await scheduler.ping()  # its first reconcile ran
    return scheduler


def crash(scheduler: Scheduler) -> None:
    """The actor's process dies: its loop and watches stop, nothing is ended or released."""
    scheduler._loop_task.cancel()
    for task in scheduler._watches.values():
        task.cancel()


def test_create_runs_the_worker_and_end_bills_and_releases(store, tmp_path):
    account_id, avatar_id = tenant(store)

    async def main():
        cluster = FakeCluster(settings_for(store, tmp_path))
        scheduler = await started(cluster.settings, cluster, store)
        out = await create(scheduler, account_id, avatar_id)
        sid = out["session"]["session_id"]
        assert out["session"]["status"] == "started" and out["session_token"]
        worker = cluster.workers[sid]
        assert worker.spec.session_id == sid and worker.spec.room_url == "wss://room.invalid"
        row = store.sessions.get_session(sid)
        assert row.status == "started" and row.node_id == NODE_ID
        assert (await scheduler.ping())["running"] == 1 and (await scheduler.stats())["starts"] == 1

        ended = await scheduler.end_session(sid)
        assert ended["status"] == "ended" and ended["end_reason"] == "user_requested"
        await cluster.wait_for(lambda: sid in cluster.released)  # the release follows the answer
        assert worker.stopped == "user_requested" and sid not in cluster.groups
        assert store.sessions.get_session(sid).billed_minutes == 1
        assert (await scheduler.end_session(sid))["end_reason"] == "user_requested"  # idempotent
        assert (await scheduler.ping())["running"] == 0
        await scheduler.shutdown()

    asyncio.run(main())


def test_the_end_route_checks_the_owner_in_the_same_call(store, tmp_path):
    account_id, avatar_id = tenant(store)
    stranger, _ = tenant(store)

    async def main():
        cluster = FakeCluster(settings_for(store, tmp_path))
        scheduler = await started(cluster.settings, cluster, store)
        out = await create(scheduler, account_id, avatar_id)
        sid = out["session"]["session_id"]
        assert out["usage"]["concurrency"]["current"] == 1  # the create answer's usage, from the same call
        with pytest.raises(errors.SessionNotFound):
            await scheduler.end_for_account(sid, stranger)
        assert store.sessions.get_session(sid).status == "started" and sid not in cluster.released
        view, ended_now = await scheduler.end_for_account(sid, account_id)
        assert ended_now and view["status"] == "ended" and view["end_reason"] == "user_requested"
        view, ended_now = await scheduler.end_for_account(sid, account_id)
        assert not ended_now and view["end_reason"] == "user_requested"  # idempotent: "already ended"
        await scheduler.shutdown()

    asyncio.run(main())


def test_a_worker_that_dies_or_ends_ends_its_session(store, tmp_path):
    account_id, avatar_id = tenant(store)

    async def main():
        cluster = FakeCluster(settings_for(store, tmp_path))
        scheduler = await started(cluster.settings, cluster, store)
        dying = (await create(scheduler, account_id, avatar_id))["session"]["session_id"]
        leaving = (await create(scheduler, account_id, avatar_id))["session"]["session_id"]
        cluster.workers[dying].die()
        cluster.workers[leaving].end(EndReason.ROOM_EMPTY.value)  # the worker reports the room emptied
        await cluster.wait_for(lambda: {dying, leaving} <= set(cluster.released))
        assert store.sessions.get_session(dying).status == "failed"
        assert store.sessions.get_session(dying).end_reason == "worker_failed"
        assert (store.sessions.get_session(leaving).status, store.sessions.get_session(leaving).end_reason) == (
            "ended", "room_empty")
        assert (await scheduler.ping()) == {"pool": 0, "running": 0, "watches": 0}
        await scheduler.shutdown()

    asyncio.run(main())


def test_no_capacity_refuses_the_create_and_bills_nothing(store, tmp_path):
    account_id, avatar_id = tenant(store)

    async def main():
        cluster = FakeCluster(settings_for(store, tmp_path), slots=0)
        scheduler = await started(cluster.settings, cluster, store)
        with pytest.raises(errors.CapacityUnavailable):
            await create(scheduler, account_id, avatar_id)
        (row,), _ = store.sessions.list_sessions(account_id)
        assert (row.status, row.end_reason, row.billed_minutes) == ("failed", "capacity_unavailable", 0)
        assert (await scheduler.stats())["refusals"] == {"capacity_unavailable": 1}
        await scheduler.shutdown()

    asyncio.run(main())


def test_a_worker_that_cannot_join_the_room_fails_the_create_and_frees_its_slot(store, tmp_path):
    account_id, avatar_id = tenant(store)

    async def main():
        cluster = FakeCluster(settings_for(store, tmp_path, warm_pool_size=1))
        scheduler = await started(cluster.settings, cluster, store)
        await cluster.wait_for(lambda: len(cluster.workers) == 1)
        (warm,) = cluster.workers.values()
        warm.start_error = errors.RoomConnectFailed()
        with pytest.raises(errors.RoomConnectFailed):
            await create(scheduler, account_id, avatar_id)
        row = store.sessions.get_session(warm.session_id)  # the warm slot's id became the session's
        assert (row.status, row.end_reason) == ("failed", "room_connect_failed")
        assert cluster.released[warm.session_id] == "room_connect_failed"
        await scheduler.shutdown()

    asyncio.run(main())


def test_the_warm_pool_serves_creates_refills_and_is_replaced_on_reconfigure(store, tmp_path):
    account_id, avatar_id = tenant(store)

    async def main():
        cluster = FakeCluster(settings_for(store, tmp_path, warm_pool_size=2), slots=3)
        scheduler = await started(cluster.settings, cluster, store)
        await cluster.wait_for(lambda: len(cluster.workers) == 2)
        warm = set(cluster.workers)
        sid = (await create(scheduler, account_id, avatar_id))["session"]["session_id"]
        assert sid in warm  # a warm worker, not a new one
        await cluster.wait_for(lambda: len(cluster.workers) == 3)  # refilled up to the cluster's size
        stats = await scheduler.stats()
        assert stats["warm_pool"] == 2 and stats["capacity"]["slots_free"] == 0
        old_pool = set(stats["warm_pool_ids"])

        assert await scheduler.reconfigure(settings_for(store, tmp_path, warm_pool_size=1))
        await cluster.wait_for(lambda: len(cluster.workers) == 2)  # the running one and one new warm worker
        assert all(cluster.released[s] == "reconfigured" for s in old_pool)
        assert sid in cluster.workers and not old_pool & set(cluster.workers)
        assert (await scheduler.stats())["warm_pool"] == 1
        await scheduler.shutdown()

    asyncio.run(main())


def test_a_dead_warm_worker_is_dropped_never_handed_to_a_create(store, tmp_path):
    account_id, avatar_id = tenant(store)

    async def main():
        cluster = FakeCluster(settings_for(store, tmp_path, warm_pool_size=1))
        scheduler = await started(cluster.settings, cluster, store)
        await cluster.wait_for(lambda: len(cluster.workers) == 1)
        (dead,) = cluster.workers
        cluster.vanish(dead)
        assert await scheduler.sweep() == {"ended": 0, "attached": 0, "orphans": 0}
        assert cluster.released[dead] == "warm worker died" and (await scheduler.stats())["warm_pool"] == 0
        sid = (await create(scheduler, account_id, avatar_id))["session"]["session_id"]
        assert sid != dead and store.sessions.get_session(sid).status == "started"  # a cold start instead
        await scheduler.shutdown()

    asyncio.run(main())


def test_a_restarted_scheduler_reconciles_database_and_cluster(store, tmp_path):
    account_id, avatar_id = tenant(store)

    async def main():
        cluster = FakeCluster(settings_for(store, tmp_path))
        first = await started(cluster.settings, cluster, store)
        alive = (await create(first, account_id, avatar_id))["session"]["session_id"]
        lost = (await create(first, account_id, avatar_id))["session"]["session_id"]
        crash(first)
        # While no scheduler runs: one worker vanishes, a create that had only admitted its row died,
        # and a worker and group nobody recorded are left behind.
        cluster.vanish(lost)
        half = ids.new_id(ids.SESSION)
        store.sessions.admit_session(NewSession(half, account_id, avatar_id, "16:9", {}, "livekit", "h",
                                                ids.worker_name(half), f"pg-{half}"))
        orphan = ids.new_id(ids.SESSION)
        cluster.leave_orphan(orphan)

        second = await started(cluster.settings, cluster, store)  # its first sweep is the reconcile
        assert store.sessions.get_session(lost).end_reason == "worker_failed"
        assert store.sessions.get_session(half).end_reason == "worker_failed"
        assert cluster.removed_orphans == [orphan] and orphan not in cluster.groups
        assert store.sessions.get_session(alive).status == "started"
        assert await second.ping() == {"pool": 0, "running": 1, "watches": 1}  # re-attached
        assert await second.sweep() == {"ended": 0, "attached": 0, "orphans": 0}  # nothing left to do

        cluster.workers[alive].die()  # the new watch sees it
        await cluster.wait_for(lambda: alive in cluster.released)
        assert store.sessions.get_session(alive).end_reason == "worker_failed"
        await second.shutdown()

    asyncio.run(main())


def test_shutdown_ends_every_session_and_drains_the_pool(store, tmp_path):
    account_id, avatar_id = tenant(store)

    async def main():
        cluster = FakeCluster(settings_for(store, tmp_path, warm_pool_size=1))
        scheduler = await started(cluster.settings, cluster, store)
        sid = (await create(scheduler, account_id, avatar_id))["session"]["session_id"]
        await cluster.wait_for(lambda: len(cluster.workers) == 2)
        assert await scheduler.shutdown() == 1
        assert store.sessions.get_session(sid).end_reason == "cluster_restart"
        assert cluster.workers == {} and cluster.groups == set()

    asyncio.run(main())


def test_ray_cluster_ops_never_block_the_event_loop_on_the_gcs(monkeypatch, tmp_path):
    """Every blocking GCS call of RayClusterOps runs in a thread (Ray's own functions replaced by ones
    that record whether an event loop runs where they are called)."""
    import ray
    from ray.util.placement_group import PlacementGroup

    from actors import cluster_ops
    from actors.cluster_ops import RayClusterOps
    from tests.support.fake_cluster import FakeWorker

    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'unused.db'}", ray_namespace="ns",
                        slot_resource="avatar_slot")
    sid = ids.new_id(ids.SESSION)
    pg_id = ray.PlacementGroupID.from_random().hex()
    calls: list[tuple[str, bool]] = []

    def gcs(name, result):
        def call(*args, **kwargs):
            try:
                asyncio.get_running_loop()
                calls.append((name, True))
            except RuntimeError:
                calls.append((name, False))
            return result() if callable(result) else result
        return call

    table = {pg_id: {"name": ids.placement_group_name(sid, "ns"), "state": "CREATED",
                     "bundles_to_node_id": {0: "node1"}}}
    monkeypatch.setattr(ray.util, "placement_group_table", gcs("placement_group_table", table))
    monkeypatch.setattr(ray.util, "list_named_actors",
                        gcs("list_named_actors", [{"name": ids.worker_name(sid), "namespace": "ns"}]))
    monkeypatch.setattr(ray, "nodes", gcs("nodes", [{"NodeID": "node1", "Alive": True,
                                                     "Resources": {"avatar_slot": 4.0}}]))
    monkeypatch.setattr(ray, "kill", gcs("kill", None))
    monkeypatch.setattr(cluster_ops, "remove_placement_group", gcs("remove_placement_group", None))

    async def main():
        monkeypatch.setattr(ray, "get_actor", gcs("get_actor", FakeWorker(sid)))
        ops = RayClusterOps(settings)
        assert await ops.session_workers() == {sid}
        assert set(await ops.session_placement_groups()) == {sid}
        assert isinstance(await ops.find_placement_group(sid), PlacementGroup)
        assert isinstance(await ops.find_worker(sid), FakeWorker)
        assert (await ops.capacity())["slots_used"] == 1
        await ops.remove_orphan(sid, None)
        await ops.release(sid, None, "admin")

    asyncio.run(main())
    names = {name for name, _ in calls}
    assert {"placement_group_table", "list_named_actors", "nodes", "get_actor", "kill",
            "remove_placement_group"} <= names
    assert [name for name, on_loop in calls if on_loop] == []
