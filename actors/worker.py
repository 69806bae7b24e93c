"""The session worker actor: one per session, detached, named ``worker-<session id>``, inside the
session's placement group. It joins the room, drives the media (rooms/renderer plug in through
``RoomConnection``), heartbeats to the scheduler and reports how the session ended.

Lifecycle: created warm (``ready``) → ``start(spec)`` joins the room → runs until the room ends the
session (``wait_ended`` returns the reason) or the scheduler calls ``stop`` → the scheduler kills the
actor and removes its placement group.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import ray

from actors import names
from actors.rooms.base import RoomConnection, WorkerSpec, open_room
from core.status import EndReason

log = logging.getLogger("avatars.worker")


@ray.remote(max_restarts=0, max_task_retries=0)
class SessionWorker:
    def __init__(self, namespace: str, heartbeat_interval_s: float) -> None:
        self._namespace = namespace
        self._heartbeat_interval_s = heartbeat_interval_s
        self._spec: WorkerSpec | None = None
        self._room: RoomConnection | None = None
        self._ended = asyncio.Event()
        self._end_reason: EndReason | None = None
        self._tasks: list[asyncio.Task] = []
        self._started_monotonic: float | None = None

    # ------------------------------------------------------------------ control surface
    async def ready(self) -> dict[str, Any]:
        """Answered once the process is up (the warm pool waits on this)."""
        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}

    async def start(self, spec: WorkerSpec) -> dict[str, Any]:
        """Join the session's room. Raises core.errors.RoomConnectFailed when the join fails."""
        if self._spec is not None:
            raise RuntimeError(f"worker already runs session {self._spec.session_id}")
        self._spec = spec
        self._room = open_room(spec)
        await self._room.connect()
        self._started_monotonic = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._watch_room(), name="watch-room"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
        ]
        log.info("session started", extra={"session_id": spec.session_id, "account_id": spec.account_id})
        return await self.ready()

    async def wait_ended(self) -> str:
        """Returns the end reason once the session ended by itself (the scheduler watches this)."""
        await self._ended.wait()
        return self._end_reason.value

    async def stop(self, reason: str) -> None:
        """Leave the room and stop the session's tasks (the scheduler kills the actor afterwards)."""
        self._finish(EndReason(reason))
        if self._room is not None:
            await self._room.close()
        for task in self._tasks:
            task.cancel()

    async def info(self) -> dict[str, Any]:
        return {
            "session_id": self._spec.session_id if self._spec else None,
            "ended": self._ended.is_set(),
            "end_reason": self._end_reason.value if self._end_reason else None,
            "uptime_s": time.monotonic() - self._started_monotonic if self._started_monotonic else 0.0,
            **(await self.ready()),
        }

    # ------------------------------------------------------------------ internals
    def _finish(self, reason: EndReason) -> None:
        if self._end_reason is None:
            self._end_reason = reason
            self._ended.set()

    async def _watch_room(self) -> None:
        reason = await self._room.wait_closed()
        self._finish(reason)

    def _metrics(self) -> dict[str, Any]:
        return {"uptime_s": round(time.monotonic() - self._started_monotonic, 3)}

    async def _heartbeat_loop(self) -> None:
        scheduler = None
        while not self._ended.is_set():
            await asyncio.sleep(self._heartbeat_interval_s)
            try:
                if scheduler is None:  # a blocking GCS lookup: keep it off the event loop
                    scheduler = await asyncio.to_thread(ray.get_actor, names.SCHEDULER, namespace=self._namespace)
                await asyncio.wait_for(
                    scheduler.heartbeat.remote(self._spec.session_id, self._metrics()),
                    timeout=self._heartbeat_interval_s,
                )
            except Exception as exc:  # the scheduler may be restarting: look it up again next time
                log.warning("heartbeat failed: %s", type(exc).__name__, extra={"session_id": self._spec.session_id})
                scheduler = None
