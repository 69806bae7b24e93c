"""Ray at the edge: placement groups, worker actors and what exists in the cluster.

The scheduler asks this module for slots and listings; nothing here decides anything. Every wait is
bounded, and a placement group that did not become ready in time is removed before the error leaves.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

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
    placement_group: PlacementGroup | None  # None: a re-attached worker whose group is gone
    worker: Any  # ActorHandle of SessionWorker
    node_id: str | None = None


class ClusterOps:
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
        target = choose_node(self.node_slots(), s.placement_strategy)
        pg = placement_group(
            [s.slot_bundle], strategy="STRICT_PACK", name=ids.placement_group_name(session_id, s.ray_namespace),
            lifetime="detached", _soft_target_node_id=target,
        )
        try:
            await asyncio.wait_for(pg.ready(), timeout=placement_timeout_s or s.placement_timeout_s)
        except (asyncio.TimeoutError, Exception) as exc:
            remove_placement_group(pg)
            if isinstance(exc, asyncio.TimeoutError):
                raise errors.CapacityUnavailable(
                    details={"placement_timeout_s": placement_timeout_s or s.placement_timeout_s},
                    retry_after_s=10,
                ) from None
            raise
        worker: Any = None  # ActorHandle of SessionWorker
        try:
            # (@ray.remote on a class hides its ActorClass type from mypy)
            worker = SessionWorker.options(  # type: ignore[attr-defined]
                **self._worker_options(session_id, pg)).remote(s)
            info = await asyncio.wait_for(worker.ready.remote(), timeout=s.worker_start_timeout_s)
        except BaseException:
            if worker is not None:
                ray.kill(worker, no_restart=True)
            remove_placement_group(pg)
            raise
        return Slot(session_id=session_id, placement_group=pg, worker=worker, node_id=info["node_id"])

    async def release(self, session_id: str, slot: Slot | None, reason: str) -> None:
        """Stop the worker gracefully (bounded), kill it, remove its placement group. Idempotent."""
        worker = slot.worker if slot else self.find_worker(session_id)
        if worker is not None:
            try:
                await asyncio.wait_for(worker.stop.remote(reason), timeout=self.settings.worker_stop_timeout_s)
            except Exception:
                pass  # dead or hung: the kill below is the cleanup path
            try:
                ray.kill(worker, no_restart=True)
            except Exception:
                pass
        pg = slot.placement_group if slot else self.find_placement_group(session_id)
        if pg is not None:
            try:
                remove_placement_group(pg)
            except Exception:
                pass

    # ------------------------------------------------------------------ what exists
    def find_worker(self, session_id: str):
        try:
            return ray.get_actor(ids.worker_name(session_id), namespace=self.settings.ray_namespace)
        except ValueError:
            return None

    def find_placement_group(self, session_id: str) -> PlacementGroup | None:
        name = ids.placement_group_name(session_id, self.settings.ray_namespace)
        for pg_id, info in ray.util.placement_group_table().items():
            if info.get("name") == name and info.get("state") != "REMOVED":
                return PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id)))
        return None

    def session_workers(self) -> set[str]:
        """Session ids that have a live named worker actor in our namespace."""
        found = set()
        for entry in ray.util.list_named_actors(all_namespaces=True):
            if entry.get("namespace") != self.settings.ray_namespace:
                continue
            sid = ids.session_of_worker(entry["name"])
            if sid:
                found.add(sid)
        return found

    def session_placement_groups(self) -> dict[str, PlacementGroup]:
        """Session id → placement group, for every live group named after a session."""
        found = {}
        for pg_id, info in ray.util.placement_group_table().items():
            if info.get("state") == "REMOVED":
                continue
            sid = ids.session_of_placement_group(info.get("name") or "", self.settings.ray_namespace)
            if sid:
                found[sid] = PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id)))
        return found

    def remove_orphan(self, session_id: str, pg: PlacementGroup | None) -> None:
        worker = self.find_worker(session_id)
        if worker is not None:
            ray.kill(worker, no_restart=True)
        pg = pg or self.find_placement_group(session_id)
        if pg is not None:
            remove_placement_group(pg)

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

    def capacity(self) -> Capacity:
        """Slots total/used/free per node and in all (the admin endpoint and metrics show this)."""
        nodes = self.node_slots()
        return {
            "slots_total": sum(n.slots_total for n in nodes),
            "slots_used": sum(n.slots_used for n in nodes),
            "slots_free": sum(n.slots_free for n in nodes),
            "nodes": [{"node_id": n.node_id, "slots_total": n.slots_total, "slots_used": n.slots_used,
                       "slots_free": n.slots_free} for n in nodes],
        }
