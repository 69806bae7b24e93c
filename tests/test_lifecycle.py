"""Admission, failure, restart and expiry of sessions against real Ray actors and placement groups."""
from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import ray

from tests.support.cluster import live_session_groups, live_session_workers, scheduler_handle, worker_handle
from tests.support.waiting import wait_for


def create(api, tenant, avatar):
    return api.http.post("/v1/sessions", json=api.create_body(avatar), headers=tenant.headers)


def end_all(api, tenant):
    for s in api.http.get("/v1/sessions", params={"status": "active", "limit": 100},
                          headers=tenant.headers).json()["sessions"]:
        api.http.post(f"/v1/sessions/{s['session_id']}/end", headers=tenant.headers)


def test_fifty_parallel_creates_admit_exactly_the_limit(api):
    tenant = api.tenant("explorer")  # concurrency limit 5
    avatar = api.public_avatar()
    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(lambda _: create(api, tenant, avatar), range(50)))
    codes = [r.status_code for r in responses]
    rows = api.http.get("/v1/sessions", params={"limit": 100}, headers=tenant.headers).json()["sessions"]
    assert codes.count(201) == 5, (codes, [(s["status"], s["end_reason"], s["created_at"], s["ended_at"])
                                           for s in rows])
    assert codes.count(429) == 45
    assert all(r.json()["error"]["code"] == "CONCURRENCY_LIMIT_REACHED" for r in responses if r.status_code == 429)
    usage = api.http.get("/v1/usage", headers=tenant.headers).json()["usage"]
    assert usage["concurrency"] == {"current": 5, "max": 5, "available": 0}
    # The refused creates left nothing behind: exactly five rows for this account.
    assert len(api.http.get("/v1/sessions", params={"limit": 100}, headers=tenant.headers).json()["sessions"]) == 5
    end_all(api, tenant)


def test_killing_a_worker_ends_its_session_as_worker_failed_frees_the_slot_and_bills(api):
    tenant = api.tenant()
    sid = create(api, tenant, api.public_avatar()).json()["session"]["session_id"]
    ns = api.settings.ray_namespace
    worker = worker_handle(ns, sid)
    pid = ray.get(worker.ready.remote(), timeout=10)["pid"]
    assert sid in live_session_groups()
    os.kill(pid, signal.SIGKILL)

    def ended():
        s = api.http.get(f"/v1/sessions/{sid}", headers=tenant.headers).json()["session"]
        return s if s["status"] == "failed" else None

    s = wait_for(ended, timeout=60, what="worker_failed")
    assert s["end_reason"] == "worker_failed"
    assert s["billing"]["minutes"] == 1
    wait_for(lambda: sid not in live_session_groups(), timeout=30, what="placement group removed")
    assert sid not in live_session_workers(ns)
    usage = api.http.get("/v1/usage", headers=tenant.headers).json()["usage"]
    assert usage["concurrency"]["current"] == 0 and usage["included_minutes"]["used"] == 1


def test_scheduler_restart_loses_no_session_and_leaks_no_placement_group(api):
    tenant = api.tenant()
    avatar = api.public_avatar()
    sids = [create(api, tenant, avatar).json()["session"]["session_id"] for _ in range(2)]
    ns = api.settings.ray_namespace
    old = scheduler_handle(ns)
    old_pool = set(wait_for(lambda: ray.get(old.stats.remote(), timeout=10)["warm_pool_ids"], what="warm pool"))
    old_pid = ray.get(old.__ray_call__.remote(lambda self: os.getpid()), timeout=10)
    os.kill(old_pid, signal.SIGKILL)  # Ray restarts it (max_restarts=-1); the new one reconciles

    def reconciled():
        try:
            return ray.get(scheduler_handle(ns).ping.remote(), timeout=10)
        except Exception:
            return None

    wait_for(reconciled, timeout=90, what="scheduler back")
    for sid in sids:
        s = api.http.get(f"/v1/sessions/{sid}", headers=tenant.headers).json()["session"]
        assert s["status"] == "started", s
    assert set(sids) <= live_session_workers(ns)
    # The old warm pool had no owner after the restart: its groups and workers were removed.
    wait_for(lambda: not (old_pool & (live_session_groups() | live_session_workers(ns))), timeout=30,
             what="old pool removed")

    # The restarted scheduler still ends them, bills them and frees their groups.
    for sid in sids:
        r = api.http.post(f"/v1/sessions/{sid}/end", headers=tenant.headers)
        assert r.status_code == 200 and r.json()["session"]["end_reason"] == "user_requested"
        assert r.json()["session"]["billing"]["minutes"] == 1

    def only_the_pool_holds_groups():
        pool = set(ray.get(scheduler_handle(ns).stats.remote(), timeout=10)["warm_pool_ids"])
        groups = live_session_groups(ns)
        active = {s["session_id"] for s in api.store_active()}
        return (len(pool) == api.settings.warm_pool_size and groups == pool | active) or (pool, groups, active)

    result = wait_for(lambda: only_the_pool_holds_groups() is True, timeout=30, what="no leaked group")
    assert result is True, only_the_pool_holds_groups()


def test_expiry_ends_a_session_on_time(api):
    tenant = api.tenant("explorer", max_session_seconds=3)
    s = create(api, tenant, api.public_avatar()).json()["session"]
    sid = s["session_id"]

    def expired():
        got = api.http.get(f"/v1/sessions/{sid}", headers=tenant.headers).json()["session"]
        return got if got["status"] != "started" else None

    got = wait_for(expired, timeout=30, what="expiry")
    assert got["status"] == "ended" and got["end_reason"] == "expired"
    ended_at = datetime.fromisoformat(got["ended_at"].replace("Z", "+00:00"))
    expiration = datetime.fromisoformat(got["expiration"].replace("Z", "+00:00"))
    assert ended_at >= expiration  # never early
    assert (ended_at - expiration).total_seconds() < 5  # the per-session timer, not a slow sweep
    assert got["billing"]["minutes"] == 1
    wait_for(lambda: sid not in live_session_groups(), timeout=30, what="group removed")


def test_secrets_never_reach_the_logs(api):
    """Room tokens, API keys and session tokens appear in no log file of the cluster."""
    import pathlib

    tenant = api.tenant()
    body = api.create_body(api.public_avatar())
    body["room"]["token"] = "room-token-" + "S3cr3t" * 4
    created = api.http.post("/v1/sessions", json=body, headers=tenant.headers).json()["session"]
    api.http.post(f"/v1/sessions/{created['session_id']}/end", headers=tenant.headers)
    logs_dir = pathlib.Path(ray._private.worker._global_node.get_logs_dir_path())
    secrets = [body["room"]["token"], tenant.api_key, created["session_token"]]
    scanned = 0
    for path in logs_dir.rglob("*"):
        if path.is_file():
            text = path.read_bytes()
            scanned += 1
            assert not any(s.encode() in text for s in secrets), path
    assert scanned > 10
    # ... while the structured logs do carry the session's id.
    assert any(created["session_id"].encode() in p.read_bytes() for p in logs_dir.rglob("*") if p.is_file())
