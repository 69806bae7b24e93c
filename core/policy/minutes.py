"""Minutes: what remains, whether a session may be admitted, and how a finished session is charged."""
from __future__ import annotations

from dataclasses import dataclass, field

from core import errors
from core.policy.plans import Limits


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


def split_charge(minutes: int, included_remaining: int, packs: list[tuple[str, int]]) -> Charge:
    """Charge ``minutes``: included first, then purchased packs oldest first.

    ``packs`` is [(pack id, remaining)] oldest first. Minutes beyond both (a session that ran past what
    remained) are charged to the included allowance, which then shows as over-used.
    """
    from_included = min(minutes, included_remaining)
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
    return Charge(minutes, minutes - from_purchased, from_purchased, taken)
