"""What the singleton actors answer, typed (Ray-free: the actors and their callers share it)."""
from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from core.views import SessionView


class CreatedSession(TypedDict):
    """The scheduler's answer to a create."""

    session: SessionView
    session_token: str  # shown once: only its hash is stored
    # proxy platform: the room's URL and the caller's token (None for other platforms; absent when the
    # session ended while it started)
    room: NotRequired[dict[str, str] | None]
    # the create response's usage block, from the transaction that started it (absent when it ended meanwhile)
    usage: NotRequired[dict[str, Any] | None]


class NodeCapacity(TypedDict):
    node_id: str
    slots_total: int
    slots_used: int
    slots_free: int


class Capacity(TypedDict):
    """Session slots in all and per node."""

    slots_total: int
    slots_used: int
    slots_free: int
    nodes: list[NodeCapacity]


class SchedulerStats(TypedDict):
    warm_pool: int
    warm_pool_ids: list[str]
    running: int
    starts: int
    refusals: dict[str, int]  # error code or end reason → count
    abandoned_creates: int
    creates_in_flight: int
    placement_wait_ms: list[float]  # the last 1000
    capacity: Capacity
    warm_pool_size: int
