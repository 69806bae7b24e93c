"""Ray at the edge: placement groups, worker actors and what exists in the cluster.

The scheduler asks a ``ClusterOps`` for slots and listings; nothing here decides anything.
``RayClusterOps`` is the real one: every wait is bounded, a placement group that did not become ready
in time is removed before the error leaves, and every blocking GCS call (group table, named actors,
kill, removal) runs in a thread, off the scheduler's event loop. Tests use an in-memory fake
(tests/support/fake_cluster.py).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from actors.results import Capacity
from actors.worker import SessionWorker
from core import errors, ids
from core.policy.placement import NodeSlots, choose_node
from core.settings import Settings

log = logging.getLogger("avatars.cluster")


@dataclass
class Slot:
    """A session's placement group and the worker started inside it."""

    session_id: str
    placement_group: Any  # PlacementGroup (RayClusterOps) or the fake's stand-in
    worker: Any  # ActorHandle of SessionWorker
    node_id: str | None = None


class ClusterOps(Protocol):
    """What the scheduler needs of the cluster. Every method may block on the cluster, never on the
    caller's event loop."""

    settings: Settings

    async def create_slot(self, session_id: str, placement_timeout_s: float | None = None) -> Slot:
        """Reserve a slot and start a worker in it; CAPACITY_UNAVAILABLE when none frees up in time."""
        ...

    async def release(self, session_id: str, slot: Slot | None, reason: str) -> None:
        """Stop the worker (bounded), kill it, free its slot; found by name when ``slot`` is None. Idempotent."""
        ...

    async def find_worker(self, session_id: str) -> Any | None: ...

    async def find_placement_group(self, session_id: str) -> Any | None: ...

    async def session_workers(self) -> set[str]:
        """Session ids that have a live named worker in our namespace."""
        ...

    async def session_placement_groups(self) -> dict[str, Any]:
        """Session id → its live placement group."""
        ...

    async def remove_orphan(self, session_id: str, pg: Any | None) -> None:
        """Kill a worker and remove a group that no session owns."""
        ...

    async def capacity(self) -> Capacity:
        """Slots total/used/free per node and in all."""
        ...


class RayClusterOps:
    """ClusterOps on Ray: one STRICT_PACK single-bundle placement group per session, a detached named
    worker actor inside it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _worker_options(self, session_id: str, pg: PlacementGroup) -> dict[str, Any]:
        bundle = dict(self.settings.slot_bundle)
        opts: dict[str, Any] = {
            "name": ids.worker_name(session_id),
            "namespace": self.settings.ray_namespace,
            "lifetime": "detached",
            "scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0),
            "num_cpus": bundle.pop("CPU", 0),
            "num_gpus": bundle.pop("GPU", 0),
        }
        if bundle:
            opts["resources"] = bundle
        return opts

    async def create_slot(self, session_id: str, placement_timeout_s: float | None = None) -> Slot:
        """Reserve a slot (placement group) and start a worker in it; CAPACITY_UNAVAILABLE on timeout.

        The group is hinted to the node the placement policy picks (pack or spread across nodes)."""
        s = self.settings
        target = choose_node(await asyncio.to_thread(self.node_slots), s.placement_strategy)
        pg = await asyncio.to_thread(
            placement_group, [s.slot_bundle], strategy="STRICT_PACK",
            name=ids.placement_group_name(session_id, s.ray_namespace), lifetime="detached",
            _soft_target_node_id=target,
        )
        try:
            await asyncio.wait_for(pg.ready(), timeout=placement_timeout_s or s.placement_timeout_s)
        except (asyncio.TimeoutError, Exception) as exc:
            await asyncio.to_thread(remove_placement_group, pg)
            if isinstance(exc, asyncio.TimeoutError):
                raise errors.CapacityUnavailable(
                    details={"placement_timeout_s": placement_timeout_s or s.placement_timeout_s},
                    retry_after_s=10,
                ) from None
            raise
        worker: Any = None  # ActorHandle of SessionWorker
        try:
            worker = await asyncio.to_thread(  # (@ray.remote on a class hides its ActorClass type from mypy)
                lambda: SessionWorker.options(**self._worker_options(session_id, pg)).remote(s))  # type: ignore[attr-defined]
            info = await asyncio.wait_for(worker.ready.remote(), timeout=s.worker_start_timeout_s)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(_kill_and_remove, worker, pg))
            raise
        return Slot(session_id=session_id, placement_group=pg, worker=worker, node_id=info["node_id"])

    async def release(self, session_id: str, slot: Slot | None, reason: str) -> None:
        """Stop the worker gracefully (bounded), kill it, remove its placement group. Idempotent."""
        worker = slot.worker if slot else await self.find_worker(session_id)
        if worker is not None:
            try:
                await asyncio.wait_for(worker.stop.remote(reason), timeout=self.settings.worker_stop_timeout_s)
            except Exception:
                pass  # dead or hung: the kill below is the cleanup path
        pg = slot.placement_group if slot else await self.find_placement_group(session_id)
        await asyncio.to_thread(_kill_and_remove, worker, pg, quiet=True)

    # ------------------------------------------------------------------ what exists
    async def find_worker(self, session_id: str) -> Any | None:
        return await asyncio.to_thread(self._find_worker, session_id)

    async def find_placement_group(self, session_id: str) -> PlacementGroup | None:
        return await asyncio.to_thread(self._find_placement_group, session_id)

    async def session_workers(self) -> set[str]:
        return await asyncio.to_thread(self._session_workers)

    async def session_placement_groups(self) -> dict[str, PlacementGroup]:
        return await asyncio.to_thread(self._session_placement_groups)

    async def remove_orphan(self, session_id: str, pg: PlacementGroup | None) -> None:
        def remove() -> None:
            _kill_and_remove(self._find_worker(session_id), pg or self._find_placement_group(session_id))

        await asyncio.to_thread(remove)

    async def capacity(self) -> Capacity:
        """Slots total/used/free per node and in all (the admin endpoint and metrics show this)."""
        nodes = await asyncio.to_thread(self.node_slots)
        return {
            "slots_total": sum(n.slots_total for n in nodes),
            "slots_used": sum(n.slots_used for n in nodes),
            "slots_free": sum(n.slots_free for n in nodes),
            "nodes": [{"node_id": n.node_id, "slots_total": n.slots_total, "slots_used": n.slots_used,
                       "slots_free": n.slots_free} for n in nodes],
        }

    # ------------------------------------------------------------------ blocking GCS reads (run in a thread)
    def _find_worker(self, session_id: str) -> Any | None:
        try:
            return ray.get_actor(ids.worker_name(session_id), namespace=self.settings.ray_namespace)
        except ValueError:
            return None

    def _find_placement_group(self, session_id: str) -> PlacementGroup | None:
        name = ids.placement_group_name(session_id, self.settings.ray_namespace)
        for pg_id, info in ray.util.placement_group_table().items():
            if info.get("name") == name and info.get("state") != "REMOVED":
                return PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id)))
        return None

    def _session_workers(self) -> set[str]:
        found = set()
        for entry in ray.util.list_named_actors(all_namespaces=True):
            if entry.get("namespace") != self.settings.ray_namespace:
                continue
            sid = ids.session_of_worker(entry["name"])
            if sid:
                found.add(sid)
        return found

    def _session_placement_groups(self) -> dict[str, PlacementGroup]:
        found = {}
        for pg_id, info in ray.util.placement_group_table().items():
            if info.get("state") == "REMOVED":
                continue
            sid = ids.session_of_placement_group(info.get("name") or "", self.settings.ray_namespace)
            if sid:
                found[sid] = PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id)))
        return found

    def node_slots(self) -> list[NodeSlots]:
        """Session slots per live node: what the node advertises, and what session groups (of any
        deployment sharing the cluster) hold on it."""
        key = "GPU" if self.settings.gpu_per_session > 0 else self.settings.slot_resource
        per = self.settings.slot_bundle[key]
        used: dict[str, int] = {}
        for info in ray.util.placement_group_table().values():
            if info.get("state") != "CREATED" or not ids.session_of_placement_group(info.get("name") or "", None):
                continue
            for node_id in info.get("bundles_to_node_id", {}).values():
                used[node_id] = used.get(node_id, 0) + 1
        out = []
        for node in ray.nodes():
            total = int(node.get("Resources", {}).get(key, 0.0) / per + 1e-9)
            if node.get("Alive") and total > 0:
                out.append(NodeSlots(node["NodeID"], total, used.get(node["NodeID"], 0)))
        return out


def _kill_and_remove(worker: Any | None, pg: PlacementGroup | None, *, quiet: bool = False) -> None:
    """Kill the worker, then remove the group (blocking GCS calls: run it in a thread). ``quiet``: a
    worker or group already gone is no error (release is idempotent)."""
    for target, remove in ((worker, lambda w: ray.kill(w, no_restart=True)), (pg, remove_placement_group)):
        if target is None:
            continue
        try:
            remove(target)
        except Exception:
            if not quiet:
                raise
