"""Deployments with their own settings: a cluster without capacity, and a tight rate limit on two replicas."""
from __future__ import annotations

import time

import httpx

from tests.support.cluster import live_session_groups


def test_no_capacity_gives_503_releases_the_slot_and_removes_the_group(special_api):
    # Sessions ask for a resource no node advertises: placement can never succeed.
    api = special_api("api-nocap", slot_resource="no_such_slot", warm_pool_size=0, placement_timeout_s=1.0)
    tenant = api.tenant("explorer", max_concurrent_sessions=1)
    before = live_session_groups(api.settings.ray_namespace)
    r = api.http.post("/v1/sessions", json=api.create_body(api.public_avatar()), headers=tenant.headers)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "CAPACITY_UNAVAILABLE" and int(r.headers["Retry-After"]) > 0
    sessions = api.http.get("/v1/sessions", headers=tenant.headers).json()["sessions"]
    assert len(sessions) == 1
    assert sessions[0]["status"] == "failed" and sessions[0]["end_reason"] == "capacity_unavailable"
    assert sessions[0]["billing"]["minutes"] == 0
    assert live_session_groups(api.settings.ray_namespace) == before  # the pending group was removed
    usage = api.http.get("/v1/usage", headers=tenant.headers).json()["usage"]
    assert usage["concurrency"]["current"] == 0  # the slot (concurrency) was released
    # ... so a second attempt is admitted again (and refused for capacity again, not for concurrency).
    r = api.http.post("/v1/sessions", json=api.create_body(api.public_avatar()), headers=tenant.headers)
    assert r.json()["error"]["code"] == "CAPACITY_UNAVAILABLE"


def test_rate_limit_holds_across_two_replicas(special_api):
    api = special_api("api-ratelimit", rate_limit_per_minute=5, api_replicas=2, warm_pool_size=0)
    tenant = api.tenant()
    if 60 - time.time() % 60 < 5:  # don't straddle a window boundary
        time.sleep(60 - time.time() % 60 + 0.1)
    responses = [api.http.get("/v1/usage", headers=tenant.headers) for _ in range(12)]
    codes = [r.status_code for r in responses]
    assert codes == [200] * 5 + [429] * 7, codes
    limited = responses[-1]
    assert limited.json()["error"]["code"] == "RATE_LIMITED"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.headers["X-RateLimit-Remaining"] == "0" and limited.headers["X-RateLimit-Limit"] == "5"
    # Another key has its own budget.
    other = api.tenant()
    assert api.http.get("/v1/usage", headers=other.headers).status_code == 200


def test_leased_rate_limit_never_admits_more_than_the_limit_across_two_replicas(special_api):
    """Leases of 5 (5 % of 100): the replicas spend them locally; together they admit at most 100 in the
    window, and lose at most one unspent lease each (4 requests)."""
    from concurrent.futures import ThreadPoolExecutor

    api = special_api("api-ratelimit-lease", rate_limit_per_minute=100, api_replicas=2, warm_pool_size=0)
    tenant = api.tenant()
    if 60 - time.time() % 60 < 40:  # all 140 requests in one window
        time.sleep(60 - time.time() % 60 + 0.1)

    def some(_):
        with httpx.Client(base_url=api.base_url, timeout=60) as c:
            return [c.get("/v1/usage", headers=tenant.headers) for _ in range(20)]

    with ThreadPoolExecutor(max_workers=7) as pool:  # concurrent clients: both replicas serve
        responses = [r for batch in pool.map(some, range(7)) for r in batch]
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429}
    assert 100 - 2 * 4 <= codes.count(200) <= 100, codes.count(200)
    limited = [r for r in responses if r.status_code == 429]
    assert limited and all(r.headers["X-RateLimit-Remaining"] == "0" for r in limited)
    assert all(r.json()["error"]["code"] == "RATE_LIMITED" for r in limited)
