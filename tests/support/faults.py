"""Fault cases and the invariants every fault must leave intact, shared by tests/test_faults.py and
``python -m bench.faults``.

A case takes a ``Target`` (a deployment: settings, HTTP client, store), injects one real fault (a
process killed or paused by its pid) while sessions run or creates arrive, and returns the accounts it
used. ``settle`` then waits until the system is quiet and counts what is wrong: sessions still active,
placement groups or workers nobody owns, sessions billed twice, ledgers that disagree with balances.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import httpx
import ray

from core import ids
from core.clock import utcnow
from core.db.models import Avatar
from core.db.store import Store
from core.settings import Settings
from tests.support.cluster import live_session_groups, live_session_workers, scheduler_handle, worker_handle
from tests.support.ledger import money_problems
from tests.support.locks import warm_workers_paused
from tests.support.waiting import wait_for


@dataclass
class Target:
    settings: Settings
    http: httpx.Client
    store: Store

    def account(self, plan: str = "explorer") -> tuple[str, dict[str, str]]:
        acct = self.store.accounts.create_account("faults", plan)
        _, key = self.store.accounts.create_api_key(acct.id, "faults")
        return acct.id, {"x-api-key": key}

    def avatar(self) -> str:
        row = Avatar(id=ids.new_id(ids.AVATAR), is_public=True, name="faults", created_at=utcnow())
        self.store.avatars.add_avatar(row)
        return row.id

    def create(self, headers: dict[str, str], avatar: str, **kw: Any) -> httpx.Response:
        body = {"avatar": avatar, "room": {"platform": "livekit", "url": "wss://lk.example.com", "token": "t"}}
        return self.http.post("/v1/sessions", json=body, headers=headers, **kw)

    def stats(self) -> dict[str, Any]:
        return ray.get(scheduler_handle(self.settings.ray_namespace).stats.remote(), timeout=30)


def _in_background(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except Exception as exc:  # noqa: BLE001 - reported to the case
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def _wait_create_in_flight(t: Target) -> None:
    wait_for(lambda: t.stats()["creates_in_flight"] > 0, timeout=60, what="a create in flight")


def worker_killed_during_start(t: Target) -> list[str]:
    """The worker a create took dies (SIGKILL) while it is joining the room."""
    acct, headers = t.account()
    avatar = t.avatar()
    with warm_workers_paused(t) as pool:
        thread, out = _in_background(lambda: t.create(headers, avatar))
        _wait_create_in_flight(t)
        os.kill(pool[-1][1], signal.SIGKILL)  # the create took the last warm worker
        thread.join(timeout=120)
    r = out.get("result")
    assert r is not None and r.status_code == 503, (r.text if r is not None else out)
    return [acct]


def worker_killed_while_running(t: Target) -> list[str]:
    """Two sessions run; one worker dies (SIGKILL); the other keeps running until ended."""
    acct, headers = t.account()
    avatar = t.avatar()
    sids = [t.create(headers, avatar).json()["session"]["session_id"] for _ in range(2)]
    pid = ray.get(worker_handle(t.settings.ray_namespace, sids[0]).ready.remote(), timeout=30)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: t.http.get(f"/v1/sessions/{sids[0]}", headers=headers).json()["session"]["status"] == "failed",
             timeout=90, what="worker_failed")
    assert t.http.get(f"/v1/sessions/{sids[1]}", headers=headers).json()["session"]["status"] == "started"
    t.http.post(f"/v1/sessions/{sids[1]}/end", headers=headers)
    return [acct]


def scheduler_killed_during_create(t: Target) -> list[str]:
    """The scheduler dies (SIGKILL) while a create is inside it; Ray restarts it, it reconciles."""
    acct, headers = t.account()
    avatar = t.avatar()
    ns = t.settings.ray_namespace
    with warm_workers_paused(t):
        thread, out = _in_background(lambda: t.create(headers, avatar))
        _wait_create_in_flight(t)
        pid = ray.get(scheduler_handle(ns).__ray_call__.remote(lambda self: os.getpid()), timeout=30)
        os.kill(pid, signal.SIGKILL)
        thread.join(timeout=150)
    r = out.get("result")
    assert r is not None and r.status_code == 503, (r.text if r is not None else out)
    wait_for(lambda: _ping(ns), timeout=120, what="the scheduler back")
    return [acct]


def _pg_cluster() -> tuple[str, str]:
    """The local PostgreSQL cluster as ``.ci/run`` starts it: the newest installed version, ``main``."""
    versions = sorted(os.listdir("/etc/postgresql"), key=lambda v: [int(x) for x in v.split(".") if x.isdigit()]) \
        if os.path.isdir("/etc/postgresql") else []
    return (versions[-1] if versions else "15", "main")


def pg_ctl(action: str, *extra: str) -> list[str]:
    return ["pg_ctlcluster", "--skip-systemctl-redirect", *_pg_cluster(), action, *extra]


def postgres_outage(t: Target, outage_s: float = 20.0) -> list[str]:
    """PostgreSQL stops (fast shutdown) for ``outage_s`` while two sessions run and creates keep
    arriving; it is started again in a finally. Creates get 503 with Retry-After and leave no row; the
    running sessions keep running and are billed once when they end afterwards."""
    import subprocess

    acct, headers = t.account()
    avatar = t.avatar()
    sids = [t.create(headers, avatar).json()["session"]["session_id"] for _ in range(2)]
    refused: list[tuple[int, str | None, str]] = []
    try:
        subprocess.run(pg_ctl("stop", "-m", "fast"), check=True, timeout=60)
        t0 = time.monotonic()
        while time.monotonic() - t0 < outage_s:
            r = t.create(headers, avatar, timeout=60)
            refused.append((r.status_code, r.headers.get("Retry-After"), r.json().get("error", {}).get("code")))
            time.sleep(1.0)  # creates keep arriving, one a second, for the whole outage
    finally:
        subprocess.run(pg_ctl("start"), timeout=120)
        wait_for(lambda: subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432"]).returncode == 0,
                 timeout=120, what="PostgreSQL back")
    assert refused and all(code == 503 and retry for code, retry, _ in refused), refused

    def running():
        try:
            rows = [t.http.get(f"/v1/sessions/{sid}", headers=headers).json()["session"] for sid in sids]
        except Exception:  # noqa: BLE001 - replicas reconnecting
            return None
        return rows if all(r["status"] == "started" for r in rows) else None

    wait_for(running, timeout=60, what="the sessions still running after the outage")
    listed = t.http.get("/v1/sessions", params={"limit": 100}, headers=headers).json()["sessions"]
    assert sorted(x["session_id"] for x in listed) == sorted(sids)  # the refused creates left no row
    for sid in sids:
        ended = t.http.post(f"/v1/sessions/{sid}/end", headers=headers).json()["session"]
        assert ended["end_reason"] == "user_requested" and ended["billing"]["minutes"] >= 1
    return [acct]


CASES: dict[str, Callable[[Target], list[str]]] = {
    "worker_killed_during_start": worker_killed_during_start,
    "worker_killed_while_running": worker_killed_while_running,
    "scheduler_killed_during_create": scheduler_killed_during_create,
}


def _ping(ns: str) -> bool:
    try:
        ray.get(scheduler_handle(ns).ping.remote(), timeout=10)
        return True
    except Exception:  # noqa: BLE001 - restarting
        return False


def problems(t: Target, accounts: list[str]) -> dict[str, int]:
    """What is wrong now: active sessions of these accounts, groups/workers nobody owns, money."""
    ns = t.settings.ray_namespace
    stats = t.stats()
    active = {r.id for r in t.store.sessions.active_sessions()}
    owned = active | set(stats["warm_pool_ids"])
    money = money_problems(t.store, accounts)
    mine = {r.id for r in t.store.sessions.active_sessions() if r.account_id in accounts}
    return {
        "leaked_sessions": len(mine),
        "leaked_placement_groups": len(live_session_groups(ns) - owned),
        "leaked_workers": len(live_session_workers(ns) - owned),
        "double_billed": len(money["double_billed"]),
        "ledger_mismatches": len(money["ledger_mismatches"]) + len(money["negative"]) + len(money["unbilled"]),
    }


def settle(t: Target, accounts: list[str], timeout: float = 120.0) -> dict[str, Any]:
    """Wait (bounded) until nothing is wrong; the counts when it settled or gave up, and how long."""
    t0 = time.monotonic()
    found: dict[str, int] = {}
    while time.monotonic() - t0 < timeout:
        try:
            found = problems(t, accounts)
        except Exception:  # noqa: BLE001 - the scheduler may still be restarting
            found = {}
        if found and not any(found.values()):
            break
        time.sleep(0.5)
    return {**found, "settle_s": round(time.monotonic() - t0, 2)}
