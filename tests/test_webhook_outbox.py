"""Webhook policy (plain Python) and the outbox/deliveries repositories on real SQLite and PostgreSQL,
without Ray: the event is written with the change or not at all, one session's events leave in order,
failures back off, give up after the window and disable the endpoint."""
from __future__ import annotations

import random
from datetime import timedelta

import pytest

from core import errors, ids
from core.clock import utcnow
from core.db.engine import Database
from core.db.models import Avatar, WebhookEvent
from core.db.outbox import record_event
from core.db.store import NewSession, Store
from core.db.webhook_store import WebhookStore
from core.policy.webhooks import RetryPolicy, succeeded, wants
from core.status import EndReason
from tests.support.databases import temporary_database


def test_backoff_is_exponential_with_jitter_and_gives_up_after_the_window():
    policy = RetryPolicy(base_s=5, cap_s=3600, jitter=0.2)
    rng = random.Random(1)
    for attempts, raw in ((1, 5), (2, 10), (3, 20), (10, 2560), (11, 3600), (30, 3600)):
        delays = [policy.delay_s(attempts, rng) for _ in range(50)]
        assert all(raw * 0.8 <= d <= raw * 1.2 for d in delays) and len(set(delays)) > 1
    created = utcnow()
    at, attempts = created, 0
    while (nxt := policy.next_attempt_at(created, attempts + 1, at, rng)) is not None:
        at, attempts = nxt, attempts + 1
    assert at - created >= timedelta(hours=23) and at - created <= timedelta(hours=24)  # retried for ~24 h
    assert attempts < 40
    assert policy.disables(100) and not policy.disables(99)
    assert wants([], "session.ended") and wants(["session.ended"], "session.ended")
    assert not wants(["session.started"], "session.ended")
    assert succeeded(204) and not succeeded(307) and not succeeded(500)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def stores(request, tmp_path):
    with temporary_database(request.param, tmp_path) as url:
        db = Database(url)
        yield Store(db), WebhookStore(db)
        db.dispose()


def _session(store: Store, account_id: str) -> str:
    sid = ids.new_id(ids.SESSION)
    avatar = Avatar(id=ids.new_id(ids.AVATAR), account_id=None, is_public=True, created_at=utcnow())
    store.avatars.add_avatar(avatar)
    store.sessions.admit_session(NewSession(sid, account_id, avatar.id, "4:3", {}, "livekit", "h", f"w-{sid}", f"p-{sid}"))
    return sid


def test_events_are_written_with_the_change_or_not_at_all(stores):
    store, hooks = stores
    account = store.accounts.create_account("a", "explorer")
    endpoint = hooks.create_endpoint(account.id, "https://example.com/hook")
    only_ended = hooks.create_endpoint(account.id, "https://example.com/ended", ["session.ended"])
    sid = _session(store, account.id)
    store.sessions.mark_started(sid, None)
    store.sessions.end_session(sid, EndReason.USER_REQUESTED)
    store.sessions.end_session(sid, EndReason.USER_REQUESTED)  # no change, no event
    types = [d["type"] for d in reversed(hooks.list_deliveries(endpoint.id))]
    assert types == ["session.started", "session.ended"]
    assert [d["type"] for d in hooks.list_deliveries(only_ended.id)] == ["session.ended"]

    with pytest.raises(RuntimeError), store.db.write() as s:  # the change fails: its event never existed
        record_event(s, account.id, "session.ending", {"session_id": sid}, utcnow(), order_key=sid)
        raise RuntimeError("rolled back")
    with store.db.read() as s:
        assert s.query(WebhookEvent).filter_by(type="session.ending").count() == 0
    assert not store.sessions.session_ending(sid, EndReason.EXPIRED, 60)  # ended: nothing to announce

    hooks.delete_endpoint(endpoint.id, account.id)
    with pytest.raises(errors.WebhookNotFound):
        hooks.list_deliveries(endpoint.id, account.id)


def test_one_sessions_events_leave_in_order_and_failures_back_off_then_disable(stores):
    store, hooks = stores
    account = store.accounts.create_account("a", "explorer")
    endpoint = hooks.create_endpoint(account.id, "https://example.com/hook")
    a, b = _session(store, account.id), _session(store, account.id)
    for sid in (a, b):
        store.sessions.mark_started(sid, None)
        store.sessions.end_session(sid, EndReason.USER_REQUESTED)
    now = utcnow()
    due = hooks.due_deliveries(now, set())
    assert [d.payload["type"] for d in due] == ["session.started", "session.started"]  # one per session
    assert {d.order_key for d in due} == {a, b}
    assert hooks.due_deliveries(now, {due[0].delivery_id, due[1].delivery_id}) == []  # in flight: nothing else

    policy = RetryPolicy(base_s=60, jitter=0.0, disable_after=3)
    first_a = next(d for d in due if d.order_key == a)
    assert hooks.record_attempt(first_a.delivery_id, 503, "HTTP 503", policy, now) == "pending"
    after = hooks.due_deliveries(now, set())
    assert [d.order_key for d in after] == [b]  # a's next event waits behind its failed first one
    later = hooks.due_deliveries(now + timedelta(seconds=61), set())
    assert first_a.delivery_id in {d.delivery_id for d in later}

    first_b = next(d for d in due if d.order_key == b)
    assert hooks.record_attempt(first_b.delivery_id, 200, None, policy, now) == "succeeded"
    assert [d.payload["type"] for d in hooks.due_deliveries(now, set()) if d.order_key == b] == ["session.ended"]

    assert hooks.record_attempt(first_a.delivery_id, None, "timed out", policy, now) == "pending"
    assert hooks.record_attempt(first_a.delivery_id, 307, "HTTP 307", policy, now) == "pending"
    assert hooks.get_endpoint(endpoint.id).enabled  # b's success reset the count: 2 in a row so far
    assert hooks.record_attempt(first_a.delivery_id, 500, "HTTP 500", policy, now) == "pending"
    row = hooks.get_endpoint(endpoint.id)
    assert row.enabled is False and "3 consecutive failed attempts" in row.disabled_reason
    assert hooks.due_deliveries(now + timedelta(days=1), set()) == []  # disabled: nothing goes out
    retried = hooks.retry_delivery(endpoint.id, first_a.delivery_id, account.id)
    assert retried["status"] == "pending" and hooks.get_endpoint(endpoint.id).enabled

    give_up = RetryPolicy(window=timedelta(seconds=0))
    assert hooks.record_attempt(first_a.delivery_id, 500, "HTTP 500", give_up, now) == "failed"
