"""Which node a new session's slot should go to: pack sessions onto busy nodes or spread them out.

Each session has its own single-bundle placement group, so Ray's group strategy cannot pack or spread
*sessions*; this policy picks a target node and the group is created with it as a (soft) hint.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NodeSlots:
    node_id: str
    slots_total: int
    slots_used: int
    alive: bool = True

    @property
    def slots_free(self) -> int:
        return max(0, self.slots_total - self.slots_used)


def choose_node(nodes: list[NodeSlots], strategy: str) -> str | None:
    """PACK: the busiest node that still has room (fill GPUs before waking others);
    SPREAD: the node with the most free slots. None when no live node has room."""
    candidates = [n for n in nodes if n.alive and n.slots_free > 0]
    if not candidates:
        return None
    if strategy.endswith("SPREAD"):
        return max(candidates, key=lambda n: (n.slots_free, n.node_id)).node_id
    return min(candidates, key=lambda n: (n.slots_free, n.node_id)).node_id
