"""Prometheus metrics through Ray's metrics API (exported by every node's metrics agent)."""
from __future__ import annotations

from ray.util.metrics import Counter, Gauge, Histogram

from actors.results import Capacity

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

    def observe_capacity(self, capacity: Capacity) -> None:
        for node in capacity["nodes"]:
            for state, slots in (("total", node["slots_total"]), ("used", node["slots_used"]),
                                 ("free", node["slots_free"])):
                self.slots.set(slots, tags={"node_id": node["node_id"], "state": state})


class SessionMetrics:
    """One session worker's media figures, tagged with its session id (bounded by running sessions)."""

    def __init__(self, session_id: str) -> None:
        tags = ("session_id",)
        self._tags = {"session_id": session_id}
        self.fps = Gauge("avatar_session_fps", "Frames per second a session delivers", tag_keys=tags)
        self.first_frame = Gauge("avatar_session_first_frame_seconds", "Start call to first frame", tag_keys=tags)
        self.dropped = Gauge("avatar_session_dropped_frames", "Frames dropped so far", tag_keys=tags)
        self.audio_to_mouth = Histogram(
            "avatar_audio_to_mouth_seconds", "Speech in to the first mouth-moving frame",
            boundaries=[0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0],
        )

    def update(self, metrics: dict, new_audio_to_mouth_ms: list[float]) -> None:
        self.fps.set(metrics.get("fps", 0.0), tags=self._tags)
        self.dropped.set(metrics.get("dropped_frames", 0), tags=self._tags)
        if metrics.get("first_frame_ms") is not None:
            self.first_frame.set(metrics["first_frame_ms"] / 1000, tags=self._tags)
        for ms in new_audio_to_mouth_ms:
            self.audio_to_mouth.observe(ms / 1000)
