"""The scheduler's decisions in plain Python: no Ray, no database, no clock of their own.

The scheduler reads (the database's active sessions, the cluster's listing, what it holds itself), asks
these functions what to do, and does it. Node choice is ``core.policy.placement``.
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from core.policy.minutes import Deadline
from core.status import EndReason, SessionStatus


@dataclass(frozen=True)
class ActiveRow:
    """What reconciling needs of an active session's database row."""

    session_id: str
    status: str
    last_heartbeat_at: datetime | None


@dataclass(frozen=True)
class EndSession:
    session_id: str
    reason: EndReason
    # Re-read the row first and end it only if it is still ``created`` and no create of ours started
    # meanwhile (the database snapshot may predate a create that finished since).
    only_if_still_created: bool = False


@dataclass(frozen=True)
class AttachWorker:
    """A running session nobody watches (its scheduler restarted): find its worker by name and watch
    it; no worker means it died, and the session ends as worker_failed."""

    session_id: str


SessionAction = EndSession | AttachWorker


def reconcile_session(row: ActiveRow, *, now: datetime, starting: bool, watched: bool, last_beat: datetime | None,
                      deadline: Deadline | None, dead_after_s: float) -> SessionAction | None:
    """What one active session needs at ``now``, or None.

    ``starting``: its create (or pool fill) is in flight here: left alone. ``watched``: a watch waits on
    its worker. ``last_beat``: the last heartbeat heard here (in memory, newer than the row's).
    ``deadline``: when it must end (plan maximum or minutes)."""
    sid = row.session_id
    if starting:
        return None
    if row.status == SessionStatus.CREATED.value:
        # Created, yet no create call of ours is starting it: that call died with a previous scheduler.
        return EndSession(sid, EndReason.WORKER_FAILED, only_if_still_created=True)
    if deadline is not None and deadline.at <= now:
        return EndSession(sid, deadline.reason)
    if watched:
        last = last_beat or row.last_heartbeat_at or now
    else:  # once attached its heartbeats count from now, whatever the database last saw unwatched
        last = last_beat or now
    if (now - last).total_seconds() > dead_after_s:
        return EndSession(sid, EndReason.WORKER_FAILED)
    return None if watched else AttachWorker(sid)


def dead_warm_slots(warm_before: Collection[str], workers: Collection[str]) -> frozenset[str]:
    """Warm slots whose worker is gone from the cluster's listing: drop them so no create takes one.

    ``warm_before``: the warm pool as it was before the listing (a slot added while listing may be
    missing from it without being dead)."""
    return frozenset(warm_before) - frozenset(workers)


def orphans(workers: Collection[str], groups: Collection[str], owned: Collection[str]) -> frozenset[str]:
    """Session ids whose named worker or placement group nothing owns: remove them.

    ``workers`` / ``groups``: the cluster's listing (session ids with a live named worker, with a live
    group). ``owned``: every session id something holds, read *after* the listing (active rows, running
    slots, creates in flight, the warm pool without its dead slots), so anything created while listing
    is owned, never taken for an orphan."""
    return (frozenset(workers) | frozenset(groups)) - frozenset(owned)


@dataclass(frozen=True)
class PoolPlan:
    start: int  # warm workers to start
    stop: int  # surplus warm workers to stop


def warm_pool_plan(warm: int, target: int) -> PoolPlan:
    """Keep ``target`` warm workers: start what is missing, stop what is beyond it (a create refused by
    admission gives its warm slot back, maybe after a refill)."""
    return PoolPlan(start=max(0, target - warm), stop=max(0, warm - target))
