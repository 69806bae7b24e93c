"""Creates are safe to abandon or retry (real Serve over HTTP, real Ray, SQLite and PostgreSQL).

A create is held inside the scheduler's admission by holding the account's lock from the test, so the
caller can go away mid-create deterministically. Without an Idempotency-Key an abandoned create ends as
client_gone and bills nothing; with one, the create finishes and a retry gets its response."""
from __future__ import annotations

import json
import socket
from urllib.parse import urlparse

import httpx
import pytest
import ray
from sqlalchemy import select

from core.db.models import IdempotencyRecord
from tests.support.cluster import live_session_groups, live_session_workers, scheduler_handle
from tests.support.ledger import assert_money_consistent
from tests.support.locks import account_lock, warm_workers_paused
from tests.support.waiting import wait_for


def scheduler_stat(api, name: str) -> int:
    return ray.get(scheduler_handle(api.settings.ray_namespace).stats.remote(), timeout=10)[name]


def abandoned_count(api) -> int:
    return scheduler_stat(api, "abandoned_creates")


def sessions(api, tenant) -> list[dict]:
    return api.http.get("/v1/sessions", params={"limit": 100}, headers=tenant.headers).json()["sessions"]


def assert_nothing_runs_and_nothing_billed(api, tenant):
    def settled():
        rows = sessions(api, tenant)
        return rows if rows and all(r["status"] in ("ended", "failed") for r in rows) else None

    rows = wait_for(settled, timeout=60, what="the abandoned create to end")
    assert [(r["end_reason"], r["billing"]["minutes"]) for r in rows] == [("client_gone", 0)], [r.get("end_detail") for r in rows]
    ns = api.settings.ray_namespace
    sid = rows[0]["session_id"]
    wait_for(lambda: sid not in live_session_groups(ns) and sid not in live_session_workers(ns), timeout=30,
             what="its worker and group removed")
    usage = api.http.get("/v1/usage", headers=tenant.headers).json()["usage"]
    assert usage["concurrency"]["current"] == 0 and usage["included_minutes"]["used"] == 0
    assert_money_consistent(api.store, [tenant.account_id])


def send_and_disconnect(api, tenant, body: dict, headers: dict | None = None) -> None:
    """A raw HTTP client that sends the create and hangs up, once the create is in the scheduler,
    without reading the answer."""
    url = urlparse(api.base_url)
    raw = json.dumps(body).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    request = (f"POST {url.path}/v1/sessions HTTP/1.1\r\nHost: {url.netloc}\r\nx-api-key: {tenant.api_key}\r\n"
               f"{extra}content-type: application/json\r\ncontent-length: {len(raw)}\r\n\r\n").encode() + raw
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(request)
        wait_for(lambda: scheduler_stat(api, "creates_in_flight") > 0, timeout=30, what="the create in flight")


@pytest.mark.parametrize("how", ["client_timeout", "disconnect"])
def test_a_create_whose_caller_goes_away_leaves_nothing_running_and_bills_nothing(api, how):
    tenant = api.tenant("explorer")
    body = api.create_body(api.public_avatar())
    before = abandoned_count(api)
    with account_lock(api.store, tenant.account_id):
        if how == "client_timeout":
            with pytest.raises(httpx.TimeoutException):
                api.http.post("/v1/sessions", json=body, headers=tenant.headers, timeout=8.0)
        else:
            send_and_disconnect(api, tenant, body)
        wait_for(lambda: abandoned_count(api) > before, timeout=30, what="the scheduler to hear of it")
    assert_nothing_runs_and_nothing_billed(api, tenant)


def test_idempotency_key_replays_the_first_response_and_refuses_reuse(api):
    tenant = api.tenant("explorer")
    body = api.create_body(api.public_avatar(), metadata={"try": 1})
    key = {"Idempotency-Key": "order-42/attempt"}
    first = api.http.post("/v1/sessions", json=body, headers={**tenant.headers, **key})
    assert first.status_code == 201, first.text
    again = api.http.post("/v1/sessions", json=body, headers={**tenant.headers, **key})
    assert again.status_code == 201 and again.json() == first.json()  # session_token included
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(sessions(api, tenant)) == 1
    other = api.http.post("/v1/sessions", json={**body, "metadata": {"try": 2}}, headers={**tenant.headers, **key})
    assert other.status_code == 409 and other.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    bad = api.http.post("/v1/sessions", json=body, headers={**tenant.headers, "Idempotency-Key": "k" * 256})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "INVALID_IDEMPOTENCY_KEY"
    # Another account's identical key is its own.
    stranger = api.tenant("explorer")
    assert api.http.post("/v1/sessions", json=body, headers={**stranger.headers, **key}).status_code == 201
    # The stored replay is encrypted at rest: the session token is not in the database in clear.
    token = first.json()["session"]["session_token"].encode()
    with api.store.db.read() as s:
        stored = [r.response_body for r in s.scalars(select(IdempotencyRecord))]
    assert stored and not any(token in b for b in stored)
    for t in (tenant, stranger):
        for s in sessions(api, t):
            api.http.post(f"/v1/sessions/{s['session_id']}/end", headers=t.headers)


def test_with_a_key_a_create_whose_caller_left_finishes_and_the_retry_gets_it(api):
    tenant = api.tenant("explorer")
    body = api.create_body(api.public_avatar())
    key = {"Idempotency-Key": "retry-me"}
    in_flight = {}
    with warm_workers_paused(api):  # the create hangs in the worker's start
        send_and_disconnect(api, tenant, body, headers=key)
        # still running: a retry is told to wait
        busy = api.http.post("/v1/sessions", json=body, headers={**tenant.headers, **key})
        in_flight.update(status=busy.status_code, body=busy.json(), retry=busy.headers.get("Retry-After"))
    assert in_flight["status"] == 409 and in_flight["body"]["error"]["code"] == "IDEMPOTENCY_IN_PROGRESS", in_flight
    assert int(in_flight["retry"]) >= 1

    def replayed():
        r = api.http.post("/v1/sessions", json=body, headers={**tenant.headers, **key})
        return r if r.status_code == 201 else None

    r = wait_for(replayed, timeout=60, what="the first create to finish")
    s = r.json()["session"]
    assert s["status"] == "started" and s["session_token"].startswith("st_")
    rows = sessions(api, tenant)
    assert [x["session_id"] for x in rows] == [s["session_id"]] and rows[0]["status"] == "started"
    ended = api.http.post(f"/v1/sessions/{s['session_id']}/end", headers=tenant.headers).json()["session"]
    assert ended["billing"]["minutes"] == 1
    assert_money_consistent(api.store, [tenant.account_id])
