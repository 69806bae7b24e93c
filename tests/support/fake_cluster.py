"""A fake ``ClusterOps``, in memory, for scheduler tests without Ray: slots are counted, workers are
``FakeWorker`` objects answering the calls the scheduler makes (``handle.method.remote(...)``), and the
test can make a worker die or vanish, or leave an orphan behind, the way a real cluster would."""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from ray.exceptions import RayActorError

from actors.cluster_ops import Slot
from core import errors
from core.settings import Settings

NODE_ID = "fake-node"


class _Method:
    """``handle.method.remote(...)``: here a coroutine, awaited like an ObjectRef."""

    def __init__(self, fn: Callable[..., Awaitable[Any]]) -> None:
        self._fn = fn

    def remote(self, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        return self._fn(*args, **kwargs)


class FakeWorker:
    """A session worker: records its spec, notices and stop; ends (or dies) when the test says so."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.spec: Any = None
        self.notices: list[tuple[str, int]] = []
        self.stopped: str | None = None
        self.start_error: BaseException | None = None  # raised by start (a room that cannot be joined)
        self._ended: asyncio.Future = asyncio.get_running_loop().create_future()
        self.ready = _Method(self._ready)
        self.start = _Method(self._start)
        self.wait_ended = _Method(self._wait_ended)
        self.notify_ending = _Method(self._notify_ending)
        self.stop = _Method(self._stop)

    async def _ready(self) -> dict[str, Any]:
        return {"pid": 0, "node_id": NODE_ID}

    async def _start(self, spec: Any) -> dict[str, Any]:
        if self.start_error is not None:
            raise self.start_error
        self.spec = spec
        return {"session_id": spec.session_id}

    async def _wait_ended(self) -> dict[str, str | None]:
        return await asyncio.shield(self._ended)

    async def _notify_ending(self, reason: str, in_s: int) -> None:
        self.notices.append((reason, in_s))

    async def _stop(self, reason: str) -> None:
        self.stopped = reason
        self.end(reason)

    def end(self, reason: str, detail: str | None = None) -> None:
        """The session ended by itself (the room closed, the user left...)."""
        if not self._ended.done():
            self._ended.set_result({"reason": reason, "detail": detail})

    def die(self) -> None:
        """The actor died: its pending calls fail as Ray's do."""
        if not self._ended.done():
            self._ended.set_exception(RayActorError())


class FakeCluster:
    """``ClusterOps`` in memory with ``slots`` session slots on one node. Groups stand in as session ids."""

    def __init__(self, settings: Settings, slots: int = 4) -> None:
        self.settings = settings
        self.slots = slots
        self.workers: dict[str, FakeWorker] = {}
        self.groups: set[str] = set()
        self.released: dict[str, str] = {}  # session id → the reason its slot was released
        self.removed_orphans: list[str] = []
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ ClusterOps
    async def create_slot(self, session_id: str, placement_timeout_s: float | None = None) -> Slot:
        if len(self.groups) >= self.slots:
            raise errors.CapacityUnavailable(details={"placement_timeout_s": placement_timeout_s}, retry_after_s=10)
        worker = FakeWorker(session_id)
        self.groups.add(session_id)
        self.workers[session_id] = worker
        self._notify()
        return Slot(session_id=session_id, placement_group=session_id, worker=worker, node_id=NODE_ID)

    async def release(self, session_id: str, slot: Slot | None, reason: str) -> None:
        worker = slot.worker if slot else self.workers.get(session_id)
        if worker is not None:
            await worker.stop.remote(reason)
        self.workers.pop(session_id, None)
        self.groups.discard(session_id)
        self.released.setdefault(session_id, reason)
        self._notify()

    async def find_worker(self, session_id: str) -> FakeWorker | None:
        return self.workers.get(session_id)

    async def find_placement_group(self, session_id: str) -> str | None:
        return session_id if session_id in self.groups else None

    async def session_workers(self) -> set[str]:
        return set(self.workers)

    async def session_placement_groups(self) -> dict[str, str]:
        return {sid: sid for sid in self.groups}

    async def remove_orphan(self, session_id: str, pg: Any | None) -> None:
        worker = self.workers.pop(session_id, None)
        if worker is not None:
            worker.die()
        self.groups.discard(session_id)
        self.removed_orphans.append(session_id)
        self._notify()

    async def capacity(self) -> dict[str, Any]:
        used = len(self.groups)
        node = {"node_id": NODE_ID, "slots_total": self.slots, "slots_used": used,
                "slots_free": max(0, self.slots - used)}
        return {"slots_total": node["slots_total"], "slots_used": used, "slots_free": node["slots_free"],
                "nodes": [node]}

    # ------------------------------------------------------------------ what a test does to the cluster
    def vanish(self, session_id: str) -> None:
        """The worker and its group disappear with no word to anyone (node lost while no scheduler ran)."""
        worker = self.workers.pop(session_id)
        worker.die()
        self.groups.discard(session_id)
        self._notify()

    def leave_orphan(self, session_id: str) -> FakeWorker:
        """A named worker and group that no session owns (a scheduler died between making and recording it)."""
        worker = FakeWorker(session_id)
        self.workers[session_id] = worker
        self.groups.add(session_id)
        self._notify()
        return worker

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        """Wait until ``predicate()`` holds, re-checked at every change of the cluster; bounded."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
