"""Session status and end reasons, with the named sets policy code asks about (SkyPilot style)."""
from __future__ import annotations

from enum import StrEnum


class SessionStatus(StrEnum):
    CREATED = "created"  # admitted, worker being placed/started
    STARTED = "started"  # worker running in the room
    ENDED = "ended"
    FAILED = "failed"  # worker could not start or died (ours)

    @classmethod
    def active(cls) -> frozenset["SessionStatus"]:
        return frozenset({cls.CREATED, cls.STARTED})

    @classmethod
    def terminal(cls) -> frozenset["SessionStatus"]:
        return frozenset({cls.ENDED, cls.FAILED})

    @property
    def is_active(self) -> bool:
        return self in SessionStatus.active()


class EndReason(StrEnum):
    USER_REQUESTED = "user_requested"
    EXPIRED = "expired"
    MINUTES_EXHAUSTED = "minutes_exhausted"  # the account's remaining minutes ran out mid-session
    ROOM_EMPTY = "room_empty"
    AGENT_LEFT = "agent_left"
    IDLE_TIMEOUT = "idle_timeout"
    WS_CLOSED = "ws_closed"
    WORKER_FAILED = "worker_failed"
    MEDIA_FAILED = "media_failed"  # the renderer or the room's media path failed
    CAPACITY_UNAVAILABLE = "capacity_unavailable"
    ROOM_CONNECT_FAILED = "room_connect_failed"
    CONNECTION_LOST = "connection_lost"  # joined, then lost the room and did not get it back
    CLIENT_GONE = "client_gone"  # the create's caller went away before the response
    CLUSTER_RESTART = "cluster_restart"
    ADMIN = "admin"

    @property
    def final_status(self) -> SessionStatus:
        """Reasons that mean the platform failed the session end it as ``failed``."""
        if self in _FAILURES:
            return SessionStatus.FAILED
        return SessionStatus.ENDED


_FAILURES = frozenset({EndReason.WORKER_FAILED, EndReason.MEDIA_FAILED, EndReason.CAPACITY_UNAVAILABLE,
                       EndReason.ROOM_CONNECT_FAILED, EndReason.CONNECTION_LOST})

#: ``GET /v1/sessions?status=``: AgentHuman's groups (``all``, ``active`` = created or started,
#: ``completed`` = ended or failed) and, ours, each session status itself.
SESSION_LIST_FILTERS = ("all", "active", "completed", *(s.value for s in SessionStatus))

ASPECT_RATIOS = ("4:3", "3:4", "1:1")
AUTO_ASPECT_RATIO = "auto"  # the orientation the avatar was aligned to
ROOM_PLATFORMS = ("daily", "livekit")
PROXY_PLATFORM = "proxy"  # the deployment provides the LiveKit room
PREVIEW_PLATFORM = "preview"
