"""Minutes: what remains, whether a session may be admitted, and how a finished session is charged."""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from core import errors
from core.policy.plans import Limits
from core.status import EndReason

ENDING_NOTICE_S = 60.0  # the room hears ``ending`` this long before a planned end


@dataclass(frozen=True)
class Balance:
    included_total: int
    included_used: int
    purchased_total: int
    purchased_remaining: int
    active_minutes: int  # running sessions' elapsed minutes, rounded up (at least 1 each)

    @property
    def included_remaining(self) -> int:
        return max(0, self.included_total - self.included_used)

    @property
    def unbilled_remaining(self) -> int:
        """What remains before running sessions are billed: what they share."""
        return self.included_remaining + self.purchased_remaining

    @property
    def total_remaining(self) -> int:
        return max(0, self.included_remaining + self.purchased_remaining - self.active_minutes)


def check_admission(limits: Limits, active_sessions: int, balance: Balance) -> None:
    """Raise the SPEC's error when a new session may not start; return when it may."""
    if balance.total_remaining <= 0:
        raise errors.InsufficientMinutes(
            suggestion="Buy a minute pack or wait for the next period",
            details={"total_remaining": 0},
        )
    if active_sessions >= limits.max_concurrent_sessions:
        raise errors.ConcurrencyLimitReached(
            details={"current": active_sessions, "max": limits.max_concurrent_sessions},
            suggestion="End a running session or upgrade the plan",
            retry_after_s=5,
        )


@dataclass(frozen=True)
class Charge:
    minutes: int
    from_included: int
    from_purchased: int
    packs: list[tuple[str, int]] = field(default_factory=list)  # (pack id, minutes taken), FIFO
    unpaid: int = 0  # minutes used beyond what remained: never charged (a platform-side overrun)


def split_charge(minutes: int, included_remaining: int, packs: list[tuple[str, int]]) -> Charge:
    """Charge ``minutes``: included first, then purchased packs oldest first.

    ``packs`` is [(pack id, remaining)] oldest first. Billing never takes more than remained: minutes
    beyond both are ``unpaid`` (sessions are ended before that can happen; this is the last guard).
    """
    from_included = min(minutes, max(0, included_remaining))
    rest = minutes - from_included
    taken: list[tuple[str, int]] = []
    for pack_id, remaining in packs:
        if rest <= 0:
            break
        n = min(rest, remaining)
        if n > 0:
            taken.append((pack_id, n))
            rest -= n
    from_purchased = sum(n for _, n in taken)
    return Charge(from_included + from_purchased, from_included, from_purchased, taken, unpaid=rest)


# ---------------------------------------------------------------------- minutes during a session
@dataclass(frozen=True)
class RunningSession:
    """One active session of an account, as the minutes policy sees it."""

    session_id: str
    started_at: datetime | None  # None: admitted, not started yet (holds one minute)
    plan_expiration: datetime | None  # started_at + the plan's maximum duration


@dataclass(frozen=True)
class Deadline:
    at: datetime
    reason: EndReason  # EXPIRED (the plan's maximum) or MINUTES_EXHAUSTED


ENDING_MOVE_TOLERANCE_S = 10.0  # a notice stands while its deadline moves less than this


def ending_notice_due(noticed: Deadline | None, deadline: Deadline, left_s: float) -> bool:
    """Whether the room should hear ``ending`` now: within ``ENDING_NOTICE_S`` of ``deadline`` and
    not already told about this end. Deadlines of sessions sharing an account's minutes move a little
    whenever another session starts or ends; the notice already given stands unless the reason changed
    or the end moved by more than ``ENDING_MOVE_TOLERANCE_S``."""
    if left_s > ENDING_NOTICE_S + 0.5:
        return False
    if noticed is None or noticed.reason != deadline.reason:
        return True
    return abs((deadline.at - noticed.at).total_seconds()) > ENDING_MOVE_TOLERANCE_S


def minute_deadlines(available: int, sessions: list[RunningSession], now: datetime) -> dict[str, Deadline]:
    """When each started session must end so that the account's sessions together never use more
    than ``available`` minutes (included + purchased remaining, before any running session is billed).

    A session is billed its elapsed time rounded up: it holds one minute from its start and takes one
    more each time it crosses a whole minute. Crossings are granted in time order, from each session's
    start (past ones too: what ran is not billed yet), while minutes are spare; a session whose next
    crossing finds none left ends exactly at that crossing (billing what it held), unless its plan
    expiration comes first. So a deadline never moves past a crossing that found nothing spare — also
    for a session still running after it (its end late under load): it is overdue, not given the next
    minute. Sessions not yet started hold one minute and get no deadline here. (``now`` does not change
    the answer; it is kept for the callers' symmetry with the other policies.)
    """
    del now
    spare = available
    heap: list[tuple[datetime, str]] = []
    limit = {s.session_id: s.plan_expiration for s in sessions}
    out: dict[str, Deadline] = {}
    for s in sessions:
        spare -= 1  # its first minute, held from admission
        if s.started_at is not None:
            heapq.heappush(heap, (s.started_at + timedelta(minutes=1), s.session_id))
    if spare >= sum(_crossings_before(at, limit[sid]) for at, sid in heap):  # enough for every session
        return {sid: Deadline(expires, EndReason.EXPIRED) for _, sid in heap if (expires := limit[sid]) is not None}
    while heap:
        at, sid = heapq.heappop(heap)
        expires = limit[sid]
        if expires is not None and expires <= at:
            out[sid] = Deadline(expires, EndReason.EXPIRED)
            continue
        if spare > 0:
            spare -= 1
            heapq.heappush(heap, (at + timedelta(minutes=1), sid))
        else:
            out[sid] = Deadline(at, EndReason.MINUTES_EXHAUSTED)
    return out


def _crossings_before(at: datetime, expires: datetime | None) -> float:
    if expires is None:
        return float("inf")
    return max(0, -int(-(expires - at).total_seconds() // 60))  # ceil: crossings at at, at+1m, ... < expires
