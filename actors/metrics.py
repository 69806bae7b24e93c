"""Prometheus metrics through Ray's metrics API (exported by every node's metrics agent)."""
from __future__ import annotations

from ray.util.metrics import Counter, Gauge, Histogram

_WAIT_BOUNDARIES_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]


class SchedulerMetrics:
    def __init__(self) -> None:
        self.sessions = Gauge("avatar_sessions", "Active sessions by status", tag_keys=("status",))
        self.admissions = Counter(
            "avatar_admissions_total", "Create attempts by outcome (admitted or the refusal code)",
            tag_keys=("outcome",),
        )
        self.ended = Counter("avatar_sessions_ended_total", "Sessions ended, by reason", tag_keys=("reason",))
        self.placement_wait = Histogram(
            "avatar_placement_wait_seconds", "Wait for a session's slot (0 when the warm pool had one)",
            boundaries=_WAIT_BOUNDARIES_S,
        )
        self.worker_starts = Counter(
            "avatar_worker_starts_total", "Workers started, warm (pool) or cold", tag_keys=("kind",)
        )
        self.warm_pool = Gauge("avatar_warm_pool_size", "Pre-started workers ready for new sessions")
        self.slots = Gauge("avatar_slots", "Session slots per node", tag_keys=("node_id", "state"))

    def observe_capacity(self, capacity: dict) -> None:
        for node in capacity["nodes"]:
            for state in ("total", "used", "free"):
                self.slots.set(node[f"slots_{state}"], tags={"node_id": node["node_id"], "state": state})
