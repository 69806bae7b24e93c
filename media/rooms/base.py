"""The worker's view of a room: join, learn how the room ended the session, leave.

Platform adapters (LiveKit, Daily, preview) implement ``RoomConnection``; the worker only sees this.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from core.status import EndReason

if TYPE_CHECKING:
    from media.session import MediaSession

_log = logging.getLogger("avatars.rooms")


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
    background: str = "original"  # "original" | "blur" | "#RRGGBB" (media.renderer.background)
    video: dict | None = None  # {width, height, fps} asked for in the create body (core.look.validate_video)


class RoomConnection(Protocol):
    # the session's media once connected (speech in, playback events, frames out, its own failure);
    # None for a room without media
    media: MediaSession | None

    async def connect(self) -> None:
        """Join the room; raise core.errors.RoomConnectFailed when the first join fails."""

    async def wait_closed(self) -> EndReason:
        """Return when the room ends the session by itself (agent left, room empty, connection lost)."""

    @property
    def end_detail(self) -> str | None:
        """Why the room ended the session, in words, beyond the end reason (None: nothing to add)."""

    async def send_state(self, state: str, reason: str = "", **extra: Any) -> None:
        """Tell the room's participants the session's state (``session.state``: connected, speaking,
        idle, ending, disconnected); a no-op where the platform has no participants to tell."""

    def metrics(self) -> dict[str, Any]:
        """What the platform measures itself (e.g. LiveKit's A/V offset); may be empty."""

    async def close(self, reason: str | None = None) -> None:
        """Leave the room (telling it why, where the platform can); idempotent."""


class NoMediaRoom:
    """A room connection that carries no media: it 'joins' at once and ends only when told to.

    Used until the platform adapters (LiveKit, Daily) plug in, and by tests of the control plane, so
    that the worker's lifecycle (start, heartbeats, stop, kill, reporting) is exercised for real.
    """

    media: MediaSession | None = None
    end_detail: str | None = None

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self._closed = asyncio.Event()
        self._reason = EndReason.ADMIN

    async def send_state(self, state: str, reason: str = "", **extra: Any) -> None:
        return None

    def metrics(self) -> dict[str, Any]:
        return {}

    async def connect(self) -> None:
        return None

    async def wait_closed(self) -> EndReason:
        await self._closed.wait()
        return self._reason

    async def close(self, reason: str | None = None) -> None:
        self._closed.set()




# Joined, then lost the room and did not get it back within the retry budget.
CONNECTION_LOST = EndReason.CONNECTION_LOST


class EndedByRoomEndings:
    """``wait_closed`` and ``end_detail`` of an adapter whose room events go through ``self.endings``."""

    endings: RoomEndings

    async def wait_closed(self) -> EndReason:
        return await self.endings.wait()

    @property
    def end_detail(self) -> str | None:
        return self.endings.detail or None


class RoomEndings:
    """When a room ends its session, shared by the platform adapters.

    The first reason wins (``finish``); an empty room ends the session after ``empty_grace_s`` unless
    somebody comes back (``check_empty``); a lost connection ends it unless regained within
    ``reconnect_timeout_s`` (``connection_lost`` / ``connection_regained``). ``closed`` is set once an
    end reason is known; ``wait`` returns it.
    """

    def __init__(self, session_id: str, *, empty_grace_s: float, reconnect_timeout_s: float) -> None:
        self.session_id = session_id
        self.empty_grace_s = empty_grace_s
        self.reconnect_timeout_s = reconnect_timeout_s
        self.closed = asyncio.Event()
        self.closing = False  # the adapter is leaving: room events no longer change the outcome
        self.reason: EndReason | None = None
        self.detail = ""
        self._empty_task: asyncio.Task | None = None
        self._lost_task: asyncio.Task | None = None

    def finish(self, reason: EndReason, detail: str = "") -> None:
        if self.reason is None:
            self.reason = reason
            self.detail = detail or reason.value
            _log.info("room ends the session: %s", self.detail, extra={"session_id": self.session_id})
        self.closed.set()

    async def wait(self) -> EndReason:
        await self.closed.wait()
        return self.reason or EndReason.ADMIN

    def describe(self, reason: str | EndReason | None = None) -> str:
        """The reason to tell the room when leaving."""
        return str(reason or self.detail or (self.reason.value if self.reason else "closed"))

    async def begin_close(self) -> bool:
        """True for the first close; a later close waits until the first one finished, then gets False."""
        if self.closing:
            await self.closed.wait()
            return False
        self.closing = True
        self.cancel_timers()
        return True

    def closed_with(self, reason: str | EndReason | None) -> None:
        """After leaving: end with the reason the closer gave (an EndReason value), else the room's own."""
        if isinstance(reason, str) and reason in EndReason._value2member_map_:
            self.finish(EndReason(reason))
        else:
            self.finish(self.reason or EndReason.ADMIN)

    def check_empty(self, empty: bool, is_empty: Callable[[], bool], loop: asyncio.AbstractEventLoop) -> None:
        if empty and self._empty_task is None:
            self._empty_task = loop.create_task(self._empty_timer(is_empty))
        elif not empty and self._empty_task is not None:
            self._empty_task.cancel()
            self._empty_task = None

    async def _empty_timer(self, is_empty: Callable[[], bool]) -> None:
        await asyncio.sleep(self.empty_grace_s)
        if is_empty():
            self.finish(EndReason.ROOM_EMPTY, "room_empty")

    def connection_lost(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._lost_task is None:
            self._lost_task = loop.create_task(self._lost_timer())

    def connection_regained(self) -> None:
        if self._lost_task is not None:
            self._lost_task.cancel()
            self._lost_task = None

    async def _lost_timer(self) -> None:
        await asyncio.sleep(self.reconnect_timeout_s)
        self.finish(CONNECTION_LOST, "connection_lost")

    def cancel_timers(self) -> None:
        for task in (self._empty_task, self._lost_task):
            if task is not None:
                task.cancel()
        self._empty_task = self._lost_task = None
