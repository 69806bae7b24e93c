"""Minutes during a session: when sessions of one account must end so that billing never exceeds what
remained (plain policy, no Ray)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from core.clock import minutes_rounded_up
from core.policy.minutes import ENDING_NOTICE_S, Deadline, RunningSession, ending_notice_due, minute_deadlines
from core.status import EndReason

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)


def running(sid: str, started: datetime, max_minutes: float = 180) -> RunningSession:
    return RunningSession(sid, started, started + timedelta(minutes=max_minutes))


def test_one_session_with_three_minutes_left_ends_after_three_minutes():
    d = minute_deadlines(3, [running("a", T0)], T0)
    assert d["a"].at == T0 + timedelta(minutes=3) and d["a"].reason is EndReason.MINUTES_EXHAUSTED


def test_the_plan_maximum_wins_when_it_comes_first():
    d = minute_deadlines(1000, [running("a", T0, max_minutes=5)], T0)
    assert d["a"].at == T0 + timedelta(minutes=5) and d["a"].reason is EndReason.EXPIRED
    # exactly as many minutes as the plan allows: still the plan's expiry
    d = minute_deadlines(5, [running("a", T0, max_minutes=5)], T0)
    assert d["a"].reason is EndReason.EXPIRED


def test_sessions_share_what_remains_and_never_bill_more():
    # 5 minutes for three sessions started 10 s apart: the crossings are granted in time order.
    starts = {"a": T0, "b": T0 + timedelta(seconds=10), "c": T0 + timedelta(seconds=20)}
    now = T0 + timedelta(seconds=30)
    d = minute_deadlines(5, [running(k, v) for k, v in starts.items()], now)
    assert all(x.reason is EndReason.MINUTES_EXHAUSTED for x in d.values())
    billed = {k: minutes_rounded_up((d[k].at - starts[k]).total_seconds()) for k in starts}
    assert sum(billed.values()) == 5
    assert billed == {"a": 2, "b": 2, "c": 1}  # a and b crossed their first minute before c did


def test_a_session_not_started_yet_holds_one_minute():
    d = minute_deadlines(2, [running("a", T0), RunningSession("b", None, None)], T0)
    assert d["a"].at == T0 + timedelta(minutes=1) and "b" not in d


def test_deadlines_follow_time_already_used():
    # a ran 150 s (holds 3) with 4 available: one more crossing at 180 s, then it ends at 240 s.
    d = minute_deadlines(4, [running("a", T0)], T0 + timedelta(seconds=150))
    assert d["a"].at == T0 + timedelta(minutes=4)
    # nothing spare: it ends at its next whole minute, billing exactly what it holds
    d = minute_deadlines(3, [running("a", T0)], T0 + timedelta(seconds=150))
    assert d["a"].at == T0 + timedelta(minutes=3)


def test_large_balances_are_cheap():
    sessions = [running(f"s{i}", T0, max_minutes=24 * 60) for i in range(200)]
    d = minute_deadlines(10_000_000, sessions, T0)
    assert {x.reason for x in d.values()} == {EndReason.EXPIRED}


def test_the_ending_notice_is_given_once_per_end():
    at = T0 + timedelta(minutes=5)
    exhausted = Deadline(at, EndReason.MINUTES_EXHAUSTED)
    assert not ending_notice_due(None, exhausted, ENDING_NOTICE_S + 5)  # too early
    assert ending_notice_due(None, exhausted, ENDING_NOTICE_S - 1)
    # another session of the account started or ended: the end moved by a few seconds, the notice stands
    nudged = Deadline(at + timedelta(seconds=3), EndReason.MINUTES_EXHAUSTED)
    assert not ending_notice_due(exhausted, nudged, 40)
    # the end moved a lot (minutes bought, then used up again) or its reason changed: told again
    assert ending_notice_due(exhausted, Deadline(at + timedelta(seconds=45), EndReason.MINUTES_EXHAUSTED), 50)
    assert ending_notice_due(exhausted, Deadline(at, EndReason.EXPIRED), 30)


def test_a_session_running_past_its_last_minute_is_overdue_not_given_the_next():
    # b's sibling ended and was billed; b holds the last minute and was not ended on time (a loaded
    # machine): 65 s in, its deadline stays at its first whole minute, in the past, and it is not given
    # a second minute that nobody pays for
    d = minute_deadlines(1, [running("b", T0)], T0 + timedelta(seconds=65))
    assert d["b"] == Deadline(T0 + timedelta(minutes=1), EndReason.MINUTES_EXHAUSTED)
    # two running: the later crossing is the one that finds nothing spare, even once both are past it
    d = minute_deadlines(3, [running("a", T0), running("b", T0 + timedelta(seconds=10))], T0 + timedelta(seconds=75))
    assert d["a"].at == T0 + timedelta(minutes=2) and d["b"].at == T0 + timedelta(seconds=70)
