"""The worker's view of a room: join, learn how the room ended the session, leave.

Platform adapters (LiveKit, Daily, preview) implement ``RoomConnection``; the worker only sees this.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from core.status import EndReason


@dataclass
class WorkerSpec:
    """Everything a worker needs to run one session. Travels in the start call; never stored at rest."""

    session_id: str
    account_id: str
    avatar_id: str
    aspect_ratio: str
    room_platform: str
    expiration: datetime | None
    room_url: str | None = field(default=None, repr=False)
    room_token: str | None = field(default=None, repr=False)  # secret: kept out of repr and logs
    avatar_image_key: str | None = None  # blob keys of the avatar's aligned image and rig
    avatar_rig_key: str | None = None
    room_options: dict = field(default_factory=dict)  # platform extras, e.g. Daily's audio_participant


class RoomConnection(Protocol):
    async def connect(self) -> None:
        """Join the room; raise core.errors.RoomConnectFailed when the first join fails."""

    async def wait_closed(self) -> EndReason:
        """Return when the room ends the session by itself (agent left, room empty, connection lost)."""

    async def close(self, reason: str | None = None) -> None:
        """Leave the room (telling it why, where the platform can); idempotent."""


class NoMediaRoom:
    """A room connection that carries no media: it 'joins' at once and ends only when told to.

    Used until the platform adapters (LiveKit, Daily) plug in, and by tests of the control plane, so
    that the worker's lifecycle (start, heartbeats, stop, kill, reporting) is exercised for real.
    """

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self._closed = asyncio.Event()
        self._reason = EndReason.ADMIN

    async def connect(self) -> None:
        return None

    async def wait_closed(self) -> EndReason:
        await self._closed.wait()
        return self._reason

    async def close(self, reason: str | None = None) -> None:
        self._closed.set()


