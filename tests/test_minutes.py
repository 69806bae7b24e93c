"""Minutes during a session, for real (Ray, Serve, SQLite and PostgreSQL): expiration capped by what
remains, sessions of one account sharing it, the ``ending`` notice, and billing never taking more."""
from __future__ import annotations

from datetime import datetime, timedelta

import ray
from sqlalchemy import select, update

from core.clock import utcnow
from core.db.models import Session, WebhookEndpoint, WebhookEvent
from tests.support.cluster import worker_handle
from tests.support.ledger import assert_money_consistent
from tests.support.waiting import wait_for


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def create(api, tenant, avatar):
    return api.http.post("/v1/sessions", json=api.create_body(avatar), headers=tenant.headers)


def test_expiration_is_capped_by_the_minutes_that_remain(api):
    tenant = api.tenant("growth", included_minutes=3)  # growth allows 180 minutes; 3 remain
    r = create(api, tenant, api.public_avatar())
    assert r.status_code == 201, r.text
    s = r.json()["session"]
    assert when(s["expiration"]) - when(s["started_at"]) == timedelta(minutes=3)
    ended = api.http.post(f"/v1/sessions/{s['session_id']}/end", headers=tenant.headers).json()["session"]
    assert ended["billing"] == {"minutes": 1, "from_included": 1, "from_purchased": 0}


def test_sessions_of_one_account_share_what_remains_and_end_minutes_exhausted(api):
    tenant = api.tenant("explorer", included_minutes=1)
    api.store.sessions.add_minutes(tenant.account_id, 1, note="one purchased minute")  # 2 minutes in all
    with api.store.db.write() as s:  # an endpoint for session.ending (loopback: refused unsent, never contacted)
        s.add(WebhookEndpoint(id="whk_minutes_test_" + tenant.account_id[-8:], account_id=tenant.account_id,
                              url="http://127.0.0.1:9/hook", events=["session.ending"], description="",
                              secret="whsec_test", enabled=True, consecutive_failures=0, created_at=utcnow()))
    avatar = api.public_avatar()
    first, second = (create(api, tenant, avatar) for _ in range(2))
    assert first.status_code == 201 and second.status_code == 201, (first.text, second.text)
    third = create(api, tenant, avatar)  # each running session holds a minute: nothing left
    assert third.status_code == 403 and third.json()["error"]["code"] == "INSUFFICIENT_MINUTES"
    sids = [first.json()["session"]["session_id"], second.json()["session"]["session_id"]]

    # Each holds one minute and none is spare: each must end at its first whole minute. Nobody waits a
    # minute here: the sessions are made to have started 50 s and 40 s ago.
    with api.store.db.write() as s:
        for sid, ago in zip(sids, (50, 40)):
            row = s.get(Session, sid)
            s.execute(update(Session).where(Session.id == sid)
                      .values(started_at=row.started_at - timedelta(seconds=ago)))
    ns = api.settings.ray_namespace
    for sid in sids:  # the room hears "ending" before the end
        notices = wait_for(lambda: ray.get(worker_handle(ns, sid).info.remote(), timeout=10)["notices"],
                           timeout=30, what="ending notice")
        assert notices[0]["state"] == "ending" and notices[0]["reason"] == "minutes_exhausted"
        assert 0 < notices[0]["in_s"] <= 60
    with api.store.db.read() as s:  # and the account's webhooks got session.ending for each
        events = s.scalars(select(WebhookEvent).where(WebhookEvent.account_id == tenant.account_id,
                                                      WebhookEvent.type == "session.ending")).all()
        # (one per deadline: a moved deadline is announced again)
        assert {e.payload["data"]["session_id"] for e in events} == set(sids)
        assert all(e.payload["data"]["reason"] == "minutes_exhausted" for e in events)

    def all_ended():
        rows = [api.http.get(f"/v1/sessions/{sid}", headers=tenant.headers).json()["session"] for sid in sids]
        return rows if all(r["status"] == "ended" for r in rows) else None

    rows = wait_for(all_ended, timeout=60, what="minutes_exhausted")
    for r in rows:
        assert r["end_reason"] == "minutes_exhausted"
        assert when(r["ended_at"]) >= when(r["expiration"])  # never early
        assert r["billing"]["minutes"] == 1
        assert when(r["expiration"]) - when(r["started_at"]) == timedelta(minutes=1)
    assert sorted(r["billing"]["from_purchased"] for r in rows) == [0, 1]
    usage = api.http.get("/v1/usage", headers=tenant.headers).json()["usage"]
    assert usage["included_minutes"] == {"total": 1, "used": 1, "remaining": 0}  # never over-used
    assert usage["purchased_minutes"] == {"total": 1, "remaining": 0}  # never negative
    assert usage["total_remaining"] == 0
    assert_money_consistent(api.store, [tenant.account_id])
