"""Policy as plain Python: no Ray, no database."""
from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from core import errors, ids
from core.clock import minutes_rounded_up
from core.policy.minutes import Balance, check_admission, split_charge
from core.policy.plans import billing_period, effective_limits
from core.policy.rate_limit import FixedWindowLimiter, LeasedLimiter, lease_size
from core.status import EndReason, SessionStatus

PLAN = SimpleNamespace(key="explorer", name="Explorer", max_concurrent_sessions=5, max_session_seconds=3600,
                       included_minutes=300, avatar_uploads=20, allows_url_avatars=True)


def account(**overrides):
    base = dict(max_concurrent_sessions=None, max_session_seconds=None, included_minutes=None, avatar_uploads=None)
    base.update(overrides)
    return SimpleNamespace(**base)


def test_overrides_replace_plan_values_only_where_set():
    limits = effective_limits(PLAN, account(max_concurrent_sessions=50))
    assert limits.max_concurrent_sessions == 50 and limits.included_minutes == 300
    assert effective_limits(PLAN, account()).max_concurrent_sessions == 5


@pytest.mark.parametrize("seconds, minutes", [(0, 0), (0.001, 1), (59.9, 1), (60, 1), (60.01, 2), (3600, 60)])
def test_minutes_round_up(seconds, minutes):
    assert minutes_rounded_up(seconds) == minutes


def test_charge_takes_included_first_then_packs_oldest_first():
    c = split_charge(10, included_remaining=3, packs=[("old", 4), ("new", 100)])
    assert (c.from_included, c.from_purchased, c.packs) == (3, 7, [("old", 4), ("new", 3)])
    c = split_charge(2, included_remaining=5, packs=[("p", 9)])
    assert (c.from_included, c.from_purchased, c.packs) == (2, 0, [])


def test_billing_never_takes_more_than_remained():
    c = split_charge(10, included_remaining=2, packs=[("p", 3)])
    assert (c.minutes, c.from_included, c.from_purchased, c.unpaid) == (5, 2, 3, 5)
    assert split_charge(4, included_remaining=-3, packs=[]).from_included == 0  # an over-used period stays put


def test_admission_refuses_on_minutes_then_concurrency():
    limits = effective_limits(PLAN, account())
    empty = Balance(included_total=300, included_used=300, purchased_total=0, purchased_remaining=0, active_minutes=0)
    with pytest.raises(errors.InsufficientMinutes):
        check_admission(limits, 0, empty)
    held = Balance(300, 299, 0, 0, active_minutes=1)  # the last minute is held by a running session
    assert held.total_remaining == 0
    with pytest.raises(errors.InsufficientMinutes):
        check_admission(limits, 1, held)
    ok = Balance(300, 0, 10, 10, 2)
    assert ok.total_remaining == 308
    with pytest.raises(errors.ConcurrencyLimitReached) as exc:
        check_admission(limits, 5, ok)
    assert exc.value.details == {"current": 5, "max": 5}
    check_admission(limits, 4, ok)


def test_billing_period_is_the_calendar_month():
    p = billing_period(datetime(2026, 12, 31, 23, 59, tzinfo=timezone.utc))
    assert p.start == datetime(2026, 12, 1, tzinfo=timezone.utc)
    assert p.end == datetime(2027, 1, 1, tzinfo=timezone.utc)


def test_fixed_window_limiter():
    lim = FixedWindowLimiter(3, 60)
    decisions = [lim.hit("k", 120.0 + i) for i in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0, 0]
    assert decisions[0].reset_at == 180 and decisions[-1].retry_after(124.0) == 56
    assert lim.hit("other", 121.0).allowed  # per key
    assert lim.hit("k", 180.0).allowed  # next window


def _leased_hit(ledger: FixedWindowLimiter, replica: LeasedLimiter, key: str, now: float, limit: int, want: int):
    """What a replica does per request (serve_app.deps.Services.rate_limit, without Ray)."""
    decision = replica.decide(key, now, limit)
    if decision is None:
        replica.add(key, ledger.lease(key, now, want, limit))
        decision = replica.decide(key, now, limit)
    return decision


def test_leases_never_admit_more_than_the_limit_per_window_across_replicas():
    import random

    rng = random.Random(7)
    for limit, replicas, want in [(5, 2, 1), (100, 3, 7), (1000, 4, 50), (60, 8, 3), (10, 3, 4)]:
        ledger = FixedWindowLimiter(limit, 60)
        shares = [LeasedLimiter(60) for _ in range(replicas)]
        admitted: dict[int, int] = {}
        asks = 0
        for i in range(limit * 6):  # three windows, each offered twice the limit, to random replicas
            now = 600.0 + i * (180.0 / (limit * 6))
            d = _leased_hit(ledger, shares[rng.randrange(replicas)], "k", now, limit, want)
            asks += 1
            if d.allowed:
                admitted[int(now // 60)] = admitted.get(int(now // 60), 0) + 1
                assert 0 <= d.remaining < limit
            else:
                assert d.remaining == 0 and d.reset_at == (int(now // 60) + 1) * 60
        assert max(admitted.values()) <= limit, (limit, replicas, admitted)
        # Under-admission is bounded: at most one unspent lease per replica per window.
        assert min(admitted.values()) >= limit - replicas * (want - 1), (limit, replicas, admitted)


def test_lease_with_size_one_is_exact_and_a_spent_window_is_refused_locally():
    ledger, a, b = FixedWindowLimiter(5, 60), LeasedLimiter(60), LeasedLimiter(60)
    allowed = [_leased_hit(ledger, (a, b)[i % 2], "k", 120.0 + i, 5, 1).allowed for i in range(8)]
    assert allowed == [True] * 5 + [False] * 3
    calls = []
    real = ledger.lease
    ledger.lease = lambda *args: calls.append(args) or real(*args)  # type: ignore[method-assign]
    assert not _leased_hit(ledger, a, "k", 130.0, 5, 1).allowed and calls == []  # no ledger call
    assert _leased_hit(ledger, a, "k", 180.0, 5, 1).allowed and len(calls) == 1  # next window: new lease


def test_a_lease_spends_locally_and_remaining_counts_down():
    ledger, replica = FixedWindowLimiter(1000, 60), LeasedLimiter(60)
    calls = []
    real = ledger.lease
    ledger.lease = lambda *args: calls.append(args) or real(*args)  # type: ignore[method-assign]
    decisions = [_leased_hit(ledger, replica, "k", 60.0 + i * 0.1, 1000, 50) for i in range(120)]
    assert all(d.allowed for d in decisions) and len(calls) == 3  # 120 requests, leases of 50
    assert [d.remaining for d in decisions] == list(range(999, 879, -1))
    # A changed limit (a redeploy, a plan change) is not served from the old lease.
    assert _leased_hit(ledger, replica, "k", 75.0, 900, 50).limit == 900 and len(calls) == 4


def test_lease_size():
    assert lease_size(5, 0.05, 100) == 1 and lease_size(60, 0.05, 100) == 3
    assert lease_size(1_000_000, 0.05, 100) == 100 and lease_size(60, 0.0, 100) == 1


def test_end_reasons_map_to_final_status():
    assert EndReason.WORKER_FAILED.final_status is SessionStatus.FAILED
    assert EndReason.CAPACITY_UNAVAILABLE.final_status is SessionStatus.FAILED
    assert EndReason.USER_REQUESTED.final_status is SessionStatus.ENDED
    assert SessionStatus.active() == {SessionStatus.CREATED, SessionStatus.STARTED}


def test_resource_names_round_trip():
    sid = ids.new_id(ids.SESSION)
    assert ids.session_of_worker(ids.worker_name(sid)) == sid
    assert ids.session_of_placement_group(ids.placement_group_name(sid, "prod"), "prod") == sid
    assert ids.session_of_placement_group(ids.placement_group_name(sid, "prod"), None) == sid
    # Another deployment's group on the same cluster is not ours (not an orphan to remove).
    assert ids.session_of_placement_group(ids.placement_group_name(sid, "staging"), "prod") is None
    assert ids.session_of_worker("worker-something-else") is None


def test_api_errors_survive_pickling_through_ray():
    import pickle

    err = errors.ConcurrencyLimitReached(details={"current": 1, "max": 1}, retry_after_s=5)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is errors.ConcurrencyLimitReached and back.envelope() == err.envelope()
    assert back.retry_after_s == 5


def test_rate_limit_in_force_is_the_accounts_then_the_plans():
    lim = FixedWindowLimiter(60, 60)
    assert [lim.hit("k", 120.0, limit=2).allowed for _ in range(3)] == [True, True, False]
    assert lim.hit("other", 120.0).limit == 60
    plan = PLAN
    assert effective_limits(plan, account()).rate_limit_per_minute is None
    assert effective_limits(plan, account(rate_limit_per_minute=500)).rate_limit_per_minute == 500
