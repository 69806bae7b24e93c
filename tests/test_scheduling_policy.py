"""The scheduler's decisions as plain Python: no Ray, no database."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from core.policy.minutes import Deadline
from core.policy.placement import NodeSlots, choose_node
from core.policy.scheduling import (ActiveRow, AttachWorker, EndSession, PoolPlan, dead_warm_slots, orphans,
                                    reconcile_session, warm_pool_plan)
from core.status import EndReason

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
DEAD_AFTER_S = 10.0


def decide(status="started", *, starting=False, watched=True, last_beat=None, row_beat=None, deadline=None):
    return reconcile_session(ActiveRow("sess_a", status, row_beat), now=NOW, starting=starting, watched=watched,
                             last_beat=last_beat, deadline=deadline, dead_after_s=DEAD_AFTER_S)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def test_a_healthy_watched_session_is_left_alone():
    assert decide(last_beat=ago(1)) is None
    assert decide(row_beat=ago(DEAD_AFTER_S - 1)) is None  # no beat heard here yet: the row's counts


def test_a_session_being_started_here_is_never_touched():
    # even created, past its deadline and silent: its create call decides
    assert decide("created", starting=True, last_beat=ago(999), deadline=Deadline(ago(5), EndReason.EXPIRED)) is None


def test_a_created_session_nobody_starts_fails_after_a_reread():
    assert decide("created", watched=False) == EndSession("sess_a", EndReason.WORKER_FAILED,
                                                          only_if_still_created=True)


@pytest.mark.parametrize("reason", [EndReason.EXPIRED, EndReason.MINUTES_EXHAUSTED])
def test_a_passed_deadline_ends_with_its_reason(reason):
    assert decide(last_beat=ago(1), deadline=Deadline(ago(0.001), reason)) == EndSession("sess_a", reason)
    assert decide(last_beat=ago(1), deadline=Deadline(NOW, reason)) == EndSession("sess_a", reason)
    assert decide(last_beat=ago(1), deadline=Deadline(NOW + timedelta(seconds=1), reason)) is None
    # the deadline wins over a missing watch: no worker is looked up for a session that must end
    assert decide(watched=False, deadline=Deadline(ago(1), reason)) == EndSession("sess_a", reason)


def test_silence_longer_than_dead_after_fails_the_session():
    assert decide(last_beat=ago(DEAD_AFTER_S + 0.5)) == EndSession("sess_a", EndReason.WORKER_FAILED)
    assert decide(row_beat=ago(DEAD_AFTER_S + 0.5)) == EndSession("sess_a", EndReason.WORKER_FAILED)
    # a beat heard here is newer than the row's (written at the last sweep)
    assert decide(last_beat=ago(1), row_beat=ago(DEAD_AFTER_S * 5)) is None


def test_an_unwatched_running_session_is_attached_and_its_old_row_beat_forgiven():
    # the scheduler restarted: the database's last beat is from before; the worker, if found, beats from now
    assert decide(watched=False, row_beat=ago(DEAD_AFTER_S * 5)) == AttachWorker("sess_a")
    assert decide(watched=False, last_beat=ago(DEAD_AFTER_S + 1)) == EndSession("sess_a", EndReason.WORKER_FAILED)


def test_orphans_are_what_nobody_owns():
    assert orphans(workers={"run", "warm", "orphan_w", "starting"}, groups={"run", "warm", "orphan_g", "dead"},
                   owned={"run", "warm", "starting"}) == {"orphan_w", "orphan_g", "dead"}
    assert orphans(workers=set(), groups=set(), owned={"run"}) == frozenset()


def test_dead_warm_slots_are_those_missing_from_the_listing():
    assert dead_warm_slots(warm_before={"alive", "dead"}, workers={"alive", "run"}) == {"dead"}
    # a slot that joined the pool after the warm set was taken is not judged (the listing may miss it)
    assert dead_warm_slots(warm_before=set(), workers=set()) == frozenset()


@pytest.mark.parametrize("warm, target, plan", [(0, 2, PoolPlan(2, 0)), (1, 2, PoolPlan(1, 0)), (2, 2, PoolPlan(0, 0)),
                                                (3, 2, PoolPlan(0, 1)), (2, 0, PoolPlan(0, 2))])
def test_warm_pool_plan(warm, target, plan):
    assert warm_pool_plan(warm, target) == plan


def test_node_choice_packs_or_spreads():
    nodes = [NodeSlots("a", 4, 3), NodeSlots("b", 4, 1), NodeSlots("c", 4, 4), NodeSlots("d", 4, 0, alive=False)]
    assert choose_node(nodes, "PACK") == "a"
    assert choose_node(nodes, "SPREAD") == "b"
    assert choose_node([NodeSlots("c", 4, 4)], "PACK") is None
