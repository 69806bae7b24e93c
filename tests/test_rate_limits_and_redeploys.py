"""Rate limits per plan with a per-account override set by avatarctl, and redeploys that change
settings while a session runs (real Serve, real Ray, SQLite)."""
from __future__ import annotations

import json
import time

import ray

from ctl.main import main as avatarctl
from tests.support.cluster import live_session_workers, scheduler_handle
from tests.support.waiting import wait_for


def ctl(capsys, monkeypatch, api, *argv):
    monkeypatch.setenv("AVATAR_DATABASE_URL", api.settings.database_url)
    monkeypatch.setenv("AVATAR_DATA_DIR", str(api.settings.data_dir))
    assert avatarctl(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def limits_seen(api, tenant, n: int) -> list[tuple[int, str]]:
    if 60 - time.time() % 60 < 5:  # don't straddle a window boundary
        time.sleep(60 - time.time() % 60 + 0.1)
    out = []
    for _ in range(n):
        r = api.http.get("/v1/usage", headers=tenant.headers)
        out.append((r.status_code, r.headers["X-RateLimit-Limit"]))
    return out


def test_rate_limit_per_plan_and_per_account_override(special_api, capsys, monkeypatch):
    api = special_api("api-plans-rl", rate_limit_per_minute=4, warm_pool_size=0)
    ctl(capsys, monkeypatch, api, "plans", "set", "pro", "--rate-limit", "6")
    assert {p["key"]: p["rate_limit_per_minute"] for p in ctl(capsys, monkeypatch, api, "plans", "list")}["pro"] == 6
    default, pro, vip = api.tenant("explorer"), api.tenant("pro"), api.tenant("explorer")
    ctl(capsys, monkeypatch, api, "accounts", "set-plan", vip.account_id, "explorer", "--rate-limit", "2")
    assert limits_seen(api, default, 5) == [(200, "4")] * 4 + [(429, "4")]  # the deployment's default
    assert limits_seen(api, pro, 7) == [(200, "6")] * 6 + [(429, "6")]  # the plan's
    assert limits_seen(api, vip, 3) == [(200, "2")] * 2 + [(429, "2")]  # the account's override


def test_redeploy_with_changed_settings_reaches_the_scheduler_and_limiter(special_api, ray_cluster):
    from tests.conftest import deploy

    api = special_api("api-redeploy", warm_pool_size=1, rate_limit_per_minute=1000)
    tenant = api.tenant("explorer")
    r = api.http.post("/v1/sessions", json=api.create_body(api.public_avatar()), headers=tenant.headers)
    assert r.status_code == 201 and r.headers["X-RateLimit-Limit"] == "1000"
    sid = r.json()["session"]["session_id"]
    ns = api.settings.ray_namespace
    scheduler = scheduler_handle(ns)

    changed = api.settings.model_copy(update={"warm_pool_size": 3, "rate_limit_per_minute": 900})
    deploy(ray_cluster, changed, "api-redeploy")  # serve.run again: new replicas, same detached actors

    wait_for(lambda: ray.get(scheduler.stats.remote(), timeout=10)["warm_pool"] == 3, timeout=90,
             what="the scheduler to fill the new warm pool")
    assert ray.get(scheduler.stats.remote(), timeout=10)["warm_pool_size"] == 3
    wait_for(lambda: api.http.get("/v1/usage", headers=tenant.headers).headers["X-RateLimit-Limit"] == "900",
             timeout=60, what="the new rate limit")
    # The session kept running through the redeploy, on the same worker.
    s = api.http.get(f"/v1/sessions/{sid}", headers=tenant.headers).json()["session"]
    assert s["status"] == "started" and sid in live_session_workers(ns)
    ended = api.http.post(f"/v1/sessions/{sid}/end", headers=tenant.headers).json()["session"]
    assert ended["end_reason"] == "user_requested" and ended["billing"]["minutes"] == 1


def test_idempotency_keys_hold_across_replicas(special_api):
    api = special_api("api-idem-replicas", api_replicas=2, warm_pool_size=1)
    tenant = api.tenant("explorer")
    body = api.create_body(api.public_avatar())
    key = {**tenant.headers, "Idempotency-Key": "across-replicas"}
    answers = [api.http.post("/v1/sessions", json=body, headers=key) for _ in range(8)]  # Serve spreads them
    assert {r.status_code for r in answers} == {201}
    assert len({r.json()["session"]["session_token"] for r in answers}) == 1
    listed = api.http.get("/v1/sessions", headers=tenant.headers).json()["sessions"]
    assert len(listed) == 1
    api.http.post(f"/v1/sessions/{listed[0]['session_id']}/end", headers=tenant.headers)
