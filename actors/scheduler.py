"""The scheduler: one named, detached actor per cluster, the only place that starts and stops workers.

It admits sessions (atomically, in the database), gives each one a placement group and a worker (from
a warm pool when it can), watches every worker, ends sessions on expiry, death or request, bills them,
and reconciles the database against the cluster whenever it (re)starts and on every sweep:
active sessions whose worker vanished are ended, named actors and groups nobody owns are removed.

All state that must survive a restart is in the database or in the cluster's names; the in-memory
state (pool, watches, heartbeats) is rebuilt by the reconcile. What to do is decided by
``core.policy.scheduling`` (plain Python); this actor reads, asks it, and acts through its ``Store`` and
``ClusterOps`` (both injected: tests/test_scheduler.py runs it on a fake cluster).
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import datetime
from typing import Any, cast

import ray
from ray.exceptions import RayActorError

from actors import names
from actors.cluster_ops import ClusterOps, RayClusterOps, Slot
from actors.metrics import SchedulerMetrics
from actors.results import CreatedSession, SchedulerStats
from media.rooms.proxy import ProxyRooms
from media.rooms.base import WorkerSpec
from core import errors, ids, logs
from core.logs import redact
from core.clock import utcnow
from core.db.engine import Database
from core.db.store import NewSession, Store
from core.policy.minutes import ENDING_NOTICE_S, Deadline, ending_notice_due
from core.policy.scheduling import (ActiveRow, AttachWorker, EndSession, dead_warm_slots, orphans, reconcile_session,
                                    warm_pool_plan)
from core.security import hash_secret, new_session_token
from core.settings import Settings
from core.status import PROXY_PLATFORM, EndReason, SessionStatus
from core.views import SessionView, session_view

log = logging.getLogger("avatars.scheduler")


class Scheduler:
    def __init__(self, settings: Settings, cluster: ClusterOps | None = None, store: Store | None = None) -> None:
        logs.configure()
        self.settings = settings
        self.store = store or Store(Database(settings.database_url))
        self.cluster: ClusterOps = cluster or RayClusterOps(settings)
        self.proxy_rooms = ProxyRooms(settings)
        self._pool: list[Slot] = []  # warm, unassigned slots
        self._pool_filling = False
        self._slots: dict[str, Slot] = {}  # session id → its slot, for running sessions
        self._watches: dict[str, asyncio.Task] = {}
        self._releases: set[asyncio.Task] = set()  # workers of ended sessions being stopped (end_session)
        self._deadlines: dict[str, Deadline] = {}  # session id → when and why it must end (minutes policy)
        self._wake: dict[str, asyncio.Event] = {}  # set when a session's deadline moved
        self._starting: set[str] = set()  # ids whose create call is in flight (pool fills included)
        self._abandoned: dict[str, float] = {}  # create keys whose caller went away → when we heard
        self._creating: set[str] = set()  # create keys in flight
        self._beats: dict[str, tuple[datetime, dict[str, Any]]] = {}
        self._unflushed: set[str] = set()
        self._stats: dict[str, Any] = {"starts": 0, "refusals": {}, "placement_wait_ms": []}
        self.metrics = SchedulerMetrics()
        self._reconciled = asyncio.Event()
        self._loop_task = asyncio.get_running_loop().create_task(self._run_forever())

    # ================================================================ public surface
    async def ping(self) -> dict[str, Any]:
        await asyncio.wait_for(self._reconciled.wait(), timeout=60)
        return {"pool": len(self._pool), "running": len(self._slots), "watches": len(self._watches)}

    async def create_session(
        self,
        *,
        account_id: str,
        avatar_id: str,
        aspect_ratio: str,
        metadata: dict[str, Any],
        room_platform: str,
        room_url: str | None,
        room_token: str | None,
        room_options: dict[str, Any] | None = None,
        background: str = "original",
        video: dict[str, int] | None = None,
        create_key: str | None = None,
    ) -> CreatedSession:
        """Admit, place and start a session. Returns ``{"session": ..., "session_token": ...}``.

        ``create_key`` names this call: if ``abandon_create(create_key)`` comes, or the call is cancelled
        (Ray cancels it when the awaiting HTTP request is cancelled), the caller went away: the session
        ends as client_gone, bills nothing, and CLIENT_GONE is raised. The work itself is shielded so a
        cancellation never leaves a half-made session behind."""
        create_key = create_key or uuid.uuid4().hex
        task = asyncio.get_running_loop().create_task(self._create(
            account_id=account_id, avatar_id=avatar_id, aspect_ratio=aspect_ratio, metadata=metadata,
            room_platform=room_platform, room_url=room_url, room_token=room_token, room_options=room_options,
            background=background, video=video, create_key=create_key))
        self._creating.add(create_key)
        task.add_done_callback(lambda _: self._creating.discard(create_key))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            self._abandoned[create_key] = time.monotonic()
            raise

    async def _create(self, *, account_id: str, avatar_id: str, aspect_ratio: str, metadata: dict[str, Any],
                      room_platform: str, room_url: str | None, room_token: str | None,
                      room_options: dict[str, Any] | None, background: str, video: dict[str, int] | None,
                      create_key: str) -> CreatedSession:
        await asyncio.wait_for(self._reconciled.wait(), timeout=60)
        if create_key in self._abandoned:
            raise errors.ClientGone()
        slot = self._pool.pop() if self._pool else None
        session_id = slot.session_id if slot else ids.new_id(ids.SESSION)
        token = new_session_token()
        proxy_room = None
        self._starting.add(session_id)
        try:
            try:
                row = await asyncio.to_thread(
                    self.store.sessions.admit_session,
                    NewSession(session_id=session_id, account_id=account_id, avatar_id=avatar_id,
                               aspect_ratio=aspect_ratio, metadata=metadata, room_platform=room_platform,
                               session_token_hash=hash_secret(token), worker_name=ids.worker_name(session_id),
                               placement_group_name=ids.placement_group_name(session_id,
                                                                             self.settings.ray_namespace),
                               create_key=create_key),
                )
            except errors.ApiError as exc:
                self._count_refusal(exc.code)
                if slot is not None:
                    self._pool.append(slot)  # not used: back to the pool
                raise
            try:
                if create_key in self._abandoned:
                    raise errors.ClientGone()
                if slot is None:
                    t0 = time.monotonic()
                    slot = await self.cluster.create_slot(session_id)
                    self._record_wait(time.monotonic() - t0, "cold")
                else:
                    self._record_wait(0.0, "warm")
                avatar = await asyncio.to_thread(self.store.avatars.get_avatar, avatar_id)
                if room_platform == PROXY_PLATFORM:  # the platform provides the room
                    proxy_room = await self.proxy_rooms.provision(session_id, row.expiration)
                    room_url, room_token = proxy_room.url, proxy_room.avatar_token
                spec = WorkerSpec(session_id=session_id, account_id=account_id, avatar_id=avatar_id,
                                  aspect_ratio=aspect_ratio, room_platform=room_platform,
                                  expiration=None, room_url=room_url, room_token=room_token,
                                  avatar_image_key=avatar.image_path if avatar else None,
                                  avatar_rig_key=avatar.rig_path if avatar else None,
                                  room_options=room_options or {}, background=background,
                                  video=video)
                await asyncio.wait_for(slot.worker.start.remote(spec), timeout=self.settings.worker_start_timeout_s)
            except BaseException as exc:
                reason = _start_failure_reason(exc)
                if create_key in self._abandoned:
                    reason = EndReason.CLIENT_GONE
                self._count_refusal(reason.value)
                ended, _ = await asyncio.to_thread(self.store.sessions.end_session, session_id, reason, None, _describe(exc))
                await self.cluster.release(session_id, slot, reason.value)
                await self._release_room(ended)
                if isinstance(exc, errors.ApiError):
                    raise
                if reason is EndReason.ROOM_CONNECT_FAILED:
                    raise errors.RoomConnectFailed() from None
                raise errors.ServiceUnavailable("The session worker could not be started") from None
            started = await asyncio.to_thread(self.store.sessions.mark_started, session_id, slot.node_id)
            row = started.row
            if row.status != SessionStatus.STARTED.value:  # ended while starting (e.g. by an end call)
                await self.cluster.release(session_id, slot, row.end_reason or EndReason.ADMIN.value)
                await self._release_room(row)
                return {"session": session_view(row), "session_token": token}
            self._slots[session_id] = slot
            self._beats[session_id] = (cast(datetime, row.started_at), {})  # (set by mark_started)
            if create_key in self._abandoned:  # the caller left while the worker started
                await self._end(session_id, EndReason.CLIENT_GONE)
                raise errors.ClientGone()
            self._apply_deadlines(started.deadlines)  # this session's and its siblings' (they share the minutes)
            self._watch(row.id, slot.worker)
            self._stats["starts"] += 1
            self.metrics.admissions.inc(tags={"outcome": "admitted"})
            log.info("session admitted and started", extra={"session_id": session_id, "account_id": account_id,
                                                            "room_platform": room_platform, "node_id": slot.node_id})
            return {"session": session_view(row), "session_token": token, "usage": started.usage,
                    "room": proxy_room.for_caller() if proxy_room else None}
        finally:
            self._starting.discard(session_id)
            self._refill_pool_soon()

    async def abandon_create(self, create_key: str) -> str | None:
        """The caller of create ``create_key`` went away before the response (and gave no idempotency
        key): whatever that create made ends as client_gone and bills nothing. A create still in flight
        stops at its next step. Returns the session id it ended, if any."""
        now = time.monotonic()
        self._abandoned = {k: t for k, t in self._abandoned.items() if now - t < 3600}
        self._abandoned[create_key] = now
        row = await asyncio.to_thread(self.store.sessions.find_session_by_create_key, create_key)
        if row is None or row.id in self._starting or row.status not in SessionStatus.active():
            return None  # not admitted yet, being started (the create ends it itself), or already over
        log.info("create abandoned by its caller", extra={"session_id": row.id, "account_id": row.account_id})
        await self._end(row.id, EndReason.CLIENT_GONE)
        return row.id

    async def end_session(self, session_id: str, reason: str = EndReason.USER_REQUESTED.value) -> SessionView:
        """End a session (idempotent) and return its view."""
        # The caller gets the ended, billed session at once; the worker's graceful stop (it leaves the
        # room) and the group's removal follow in the background (self._releases, awaited by shutdown).
        row, _ = await self._end(session_id, EndReason(reason), wait_release=False)
        return session_view(row)

    async def end_for_account(self, session_id: str, account_id: str) -> tuple[SessionView, bool]:
        """The end route: ``end_session`` in one database round trip with the ownership check (another
        account's session is SESSION_NOT_FOUND). Returns the view and whether this call ended it."""
        row, changed = await self._end(session_id, EndReason.USER_REQUESTED, wait_release=False,
                                       account_id=account_id)
        return session_view(row), changed

    async def reconfigure(self, settings: Settings) -> bool:
        """Adopt a redeployment's settings (every ingress replica sends its own at start, and again after
        this actor restarted, since Ray restarts it with its first constructor arguments). Running
        sessions keep their workers; warm workers, made with the old settings, are replaced. Returns
        whether anything changed."""
        if settings.model_dump() == self.settings.model_dump():
            return False
        if settings.database_url != self.settings.database_url:
            self.store = Store(Database(settings.database_url))
        self.settings = settings
        self.cluster.settings = settings
        pool, self._pool = self._pool, []
        for slot in pool:
            await self.cluster.release(slot.session_id, slot, "reconfigured")
        self._refill_pool_soon()
        log.info("settings changed: warm pool replaced", extra={"drained": len(pool)})
        return True

    async def heartbeat(self, session_id: str, metrics: dict[str, Any]) -> None:
        self._beats[session_id] = (utcnow(), metrics)
        self._unflushed.add(session_id)

    async def stats(self) -> SchedulerStats:
        waits = sorted(self._stats["placement_wait_ms"])
        return {
            "warm_pool": len(self._pool),
            "warm_pool_ids": [slot.session_id for slot in self._pool],
            "running": len(self._slots),
            "starts": self._stats["starts"],
            "refusals": dict(self._stats["refusals"]),
            "abandoned_creates": len(self._abandoned),
            "creates_in_flight": len(self._creating),
            "placement_wait_ms": waits[-1000:],
            "capacity": await self.cluster.capacity(),
            "warm_pool_size": self.settings.warm_pool_size,
        }

    async def sweep(self) -> dict[str, int]:
        """One reconcile pass (also run periodically); returns what it did."""
        return await self._sweep()

    async def shutdown(self, reason: str = EndReason.CLUSTER_RESTART.value) -> int:
        """End every active session and drain the pool (used by `avatarctl run` on Ctrl-C)."""
        self._loop_task.cancel()
        ended = 0
        for row in await asyncio.to_thread(self.store.sessions.active_sessions):
            await self._end(row.id, EndReason(reason))
            ended += 1
        pool, self._pool = self._pool, []
        for slot in pool:
            await self.cluster.release(slot.session_id, slot, reason)
        if self._releases:  # each is bounded by worker_stop_timeout_s
            await asyncio.gather(*self._releases, return_exceptions=True)
        return ended

    # ================================================================ ending and watching
    async def _end(self, session_id: str, reason: EndReason, detail: str | None = None, *,
                   wait_release: bool = True, account_id: str | None = None) -> tuple[Any, bool]:
        row, changed = await asyncio.to_thread(self.store.sessions.end_session, session_id, reason, None, detail,
                                               account_id)
        watch = self._watches.pop(session_id, None)
        if watch is not None and watch is not asyncio.current_task():
            watch.cancel()
        slot = self._slots.pop(session_id, None)
        self._beats.pop(session_id, None)
        self._deadlines.pop(session_id, None)
        self._wake.pop(session_id, None)
        if changed or slot is not None:
            release = self._release(session_id, slot, row, row.end_reason or reason.value)
            if wait_release:
                await release
            else:
                task = asyncio.get_running_loop().create_task(release, name=f"release-{session_id}")
                self._releases.add(task)
                task.add_done_callback(self._release_done)
            log.info("session ended", extra={"session_id": session_id, "account_id": row.account_id,
                                             "reason": row.end_reason})
        if changed:
            self.metrics.ended.inc(tags={"reason": cast(str, row.end_reason)})  # (set by end_session)
        return row, changed

    def _release_done(self, task: asyncio.Task) -> None:
        self._releases.discard(task)
        if not task.cancelled() and task.exception() is not None:  # the sweep removes what is left
            log.warning("releasing an ended session failed", extra={"task": task.get_name(),
                                                                  "error": type(task.exception()).__name__})

    async def _release(self, session_id: str, slot: Slot | None, row: Any, reason: str) -> None:
        await self.cluster.release(session_id, slot, reason)
        await self._release_room(row)

    async def _release_room(self, row: Any) -> None:
        """Delete the room the platform provided for an ended ``proxy`` session (after its worker left)."""
        if row is not None and row.room_platform == PROXY_PLATFORM:
            await self.proxy_rooms.delete(row.id)

    async def _refresh_deadlines(self) -> None:
        """Recompute every session's deadline (plan maximum or the account's shared minutes) and wake the
        watches whose deadline moved."""
        fresh = await asyncio.to_thread(self.store.sessions.session_deadlines)
        for sid in set(self._deadlines) - set(fresh):  # ended sessions' deadlines (also dropped by _end)
            del self._deadlines[sid]
        self._apply_deadlines(fresh)

    def _apply_deadlines(self, fresh: dict[str, Deadline]) -> None:
        """Take the deadlines given, waking the watches whose deadline moved."""
        for sid, deadline in fresh.items():
            if self._deadlines.get(sid) != deadline:
                self._deadlines[sid] = deadline
                if sid in self._wake:
                    self._wake[sid].set()

    def _watch(self, session_id: str, worker: Any) -> None:
        """Wait for the worker to report its end, or for the session's deadline (which may move); one
        minute before the deadline the worker is told, so the room hears ``ending``."""
        wake = self._wake.setdefault(session_id, asyncio.Event())

        async def watch() -> None:
            ended = asyncio.ensure_future(worker.wait_ended.remote())
            noticed: Deadline | None = None
            detail = None
            try:
                while True:
                    deadline = self._deadlines.get(session_id)
                    timeout = None
                    if deadline is not None:
                        left = (deadline.at - utcnow()).total_seconds()
                        if left <= 0:
                            reason = deadline.reason
                            break
                        if ending_notice_due(noticed, deadline, left):
                            noticed = deadline
                            self._notify_ending(session_id, worker, deadline.reason, left)
                        timeout = left if left <= ENDING_NOTICE_S + 0.5 else left - ENDING_NOTICE_S
                    wake.clear()
                    woken = asyncio.ensure_future(wake.wait())
                    done, _ = await asyncio.wait({ended, woken}, timeout=timeout,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    woken.cancel()
                    if ended in done:
                        try:
                            outcome = ended.result()
                            reason, detail = EndReason(outcome["reason"]), outcome.get("detail")
                        except Exception as exc:  # died (RayActorError) or answered nonsense
                            reason, detail = EndReason.WORKER_FAILED, _describe(exc) if not isinstance(
                                exc, RayActorError) else None
                        break
            finally:
                if not ended.done():
                    ended.cancel()
            await self._end(session_id, reason, detail)

        old = self._watches.pop(session_id, None)
        if old is not None:
            old.cancel()
        self._watches[session_id] = asyncio.get_running_loop().create_task(watch(), name=f"watch-{session_id}")

    def _notify_ending(self, session_id: str, worker: Any, reason: EndReason, left_s: float) -> None:
        """One minute before a minutes_exhausted/expired end: the room hears ``ending`` and the account's
        webhooks get ``session.ending``."""
        async def notify() -> None:
            try:
                await asyncio.to_thread(self.store.sessions.session_ending, session_id, reason, max(1, round(left_s)))
            except Exception as exc:
                log.warning("session.ending not recorded: %s", type(exc).__name__, extra={"session_id": session_id})
            try:
                await asyncio.wait_for(worker.notify_ending.remote(reason.value, max(1, round(left_s))), timeout=5)
            except Exception as exc:  # the end itself does not depend on the notice
                log.warning("ending notice not delivered: %s", type(exc).__name__, extra={"session_id": session_id})

        asyncio.get_running_loop().create_task(notify())

    # ================================================================ reconcile, sweep, pool
    async def _run_forever(self) -> None:
        purged_at = 0.0
        while True:
            try:
                await self._sweep()
                if time.monotonic() - purged_at > 600:  # expired Idempotency-Key records
                    purged_at = time.monotonic()
                    await asyncio.to_thread(self.store.idempotency.purge_expired)
            except Exception:
                log.exception("sweep failed")
            self._reconciled.set()
            self._refill_pool_soon()
            await asyncio.sleep(self.settings.sweep_interval_s)

    async def _sweep(self) -> dict[str, int]:
        now = utcnow()
        done = {"ended": 0, "attached": 0, "orphans": 0}
        if self._unflushed:
            beats = {sid: self._beats[sid] for sid in self._unflushed if sid in self._beats}
            self._unflushed.clear()
            await asyncio.to_thread(self.store.sessions.record_heartbeats, beats)
        active = await asyncio.to_thread(self.store.sessions.active_sessions)
        await self._refresh_deadlines()
        for row in active:
            action = reconcile_session(
                ActiveRow(row.id, row.status, row.last_heartbeat_at), now=now, starting=row.id in self._starting,
                watched=row.id in self._watches, last_beat=self._beats.get(row.id, (None,))[0],
                deadline=self._deadlines.get(row.id), dead_after_s=self.settings.worker_dead_after_s)
            if isinstance(action, AttachWorker):
                worker = await self.cluster.find_worker(row.id)
                if worker is not None:
                    pg = await self.cluster.find_placement_group(row.id)
                    self._slots.setdefault(row.id, Slot(row.id, pg, worker, row.node_id))
                    self._beats.setdefault(row.id, (now, {}))
                    self._watch(row.id, worker)
                    done["attached"] += 1
                    continue
                action = EndSession(row.id, EndReason.WORKER_FAILED)
            if action is None:
                continue
            if action.only_if_still_created:  # re-read: a create may have finished since the snapshot
                current = await asyncio.to_thread(self.store.sessions.get_session, row.id)
                if current.status != SessionStatus.CREATED.value or row.id in self._starting:
                    continue
            await self._end(row.id, action.reason)
            done["ended"] += 1
        for status in ("created", "started"):
            self.metrics.sessions.set(sum(1 for r in active if r.status == status), tags={"status": status})
        self.metrics.warm_pool.set(len(self._pool))
        self.metrics.observe_capacity(await self.cluster.capacity())
        # Orphans: named workers and groups that no active session, pool slot or start owns. The cluster
        # is listed first and ownership read afterwards, without the dead warm slots (see orphans).
        warm_before = {slot.session_id for slot in self._pool}
        groups = await self.cluster.session_placement_groups()
        workers = await self.cluster.session_workers()
        dead = dead_warm_slots(warm_before, workers)
        for slot in [slot for slot in self._pool if slot.session_id in dead]:
            self._pool.remove(slot)  # a warm worker died: no create may take it (its group goes below)
            await self.cluster.release(slot.session_id, slot, "warm worker died")
        owned: set[str] = set()
        if workers or groups:
            owned = {row.id for row in await asyncio.to_thread(self.store.sessions.active_sessions)}
            owned |= set(self._slots) | self._starting | {slot.session_id for slot in self._pool}
        for sid in orphans(workers, groups, owned):
            await self.cluster.remove_orphan(sid, groups.get(sid))
            done["orphans"] += 1
        return done

    def _refill_pool_soon(self) -> None:
        plan = warm_pool_plan(len(self._pool), self.settings.warm_pool_size)
        for _ in range(plan.stop):  # a refused create gave its warm slot back after a refill: stop the surplus
            slot = self._pool.pop()
            task = asyncio.get_running_loop().create_task(self.cluster.release(slot.session_id, slot, "pool surplus"),
                                                          name=f"release-{slot.session_id}")
            self._releases.add(task)
            task.add_done_callback(self._release_done)
        if not self._pool_filling and plan.start:
            self._pool_filling = True
            asyncio.get_running_loop().create_task(self._refill_pool())

    async def _refill_pool(self) -> None:
        try:
            while warm_pool_plan(len(self._pool), self.settings.warm_pool_size).start:
                sid = ids.new_id(ids.SESSION)
                self._starting.add(sid)
                settings = self.settings
                try:
                    slot = await self.cluster.create_slot(sid, placement_timeout_s=2.0)
                    if settings is not self.settings:  # reconfigured meanwhile: made with the old settings
                        await self.cluster.release(sid, slot, "reconfigured")
                        continue
                    self._pool.append(slot)
                except errors.CapacityUnavailable:
                    return  # cluster full: the next sweep tries again
                except Exception:
                    log.exception("warm pool fill failed")
                    return
                finally:
                    self._starting.discard(sid)
        finally:
            self._pool_filling = False

    # ================================================================ stats
    def _record_wait(self, seconds: float, kind: str) -> None:
        self.metrics.placement_wait.observe(seconds)
        self.metrics.worker_starts.inc(tags={"kind": kind})
        waits = self._stats["placement_wait_ms"]
        waits.append(round(seconds * 1000, 2))
        del waits[:-1000]

    def _count_refusal(self, code: str) -> None:
        self._stats["refusals"][code] = self._stats["refusals"].get(code, 0) + 1
        self.metrics.admissions.inc(tags={"outcome": code})


def _start_failure_reason(exc: BaseException) -> EndReason:
    if isinstance(exc, errors.CapacityUnavailable):
        return EndReason.CAPACITY_UNAVAILABLE
    if isinstance(exc, errors.RoomConnectFailed):
        return EndReason.ROOM_CONNECT_FAILED
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(exc.cause, errors.RoomConnectFailed):
        return EndReason.ROOM_CONNECT_FAILED
    return EndReason.WORKER_FAILED


def _describe(exc: BaseException) -> str:
    return redact(f"{type(exc).__name__}: {exc}")[:500]


SchedulerActor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)(Scheduler)


def get_or_create_scheduler(settings: Settings) -> Any:
    """The cluster's scheduler actor, created (detached) on first use (its handle; called through
    ``actors.clients.SchedulerClient``)."""
    return SchedulerActor.options(**names.singleton_options(names.SCHEDULER, settings.ray_namespace)).remote(settings)
