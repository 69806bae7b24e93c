"""The cluster-wide singleton actors: their names, and where they run (the session resources are named
in core.ids)."""
from __future__ import annotations

from typing import Any

SCHEDULER = "avatar-scheduler"
RATE_LIMITER = "avatar-rate-limiter"
WEBHOOKS = "avatar-webhooks"

HEAD_RESOURCE = "node:__internal_head__"  # Ray gives this resource to the head node only (1.0)


def singleton_options(name: str, namespace: str) -> dict[str, Any]:
    """Options for a control-plane singleton: named, detached, created once (``get_if_exists``), and run on
    the head node whoever creates it (an API replica on a GPU node, say): losing a GPU node never takes
    the control plane with it (a scheduler lost with its node is restarted only once Ray has declared
    the node dead, and meanwhile nobody ends that node's sessions), and a SQLite file on the head stays
    reachable. A resource, not an affinity to the head's node id: after a head restart (GCS fault
    tolerance) the new head has another id, and the restarted actor must go there."""
    return {"name": name, "namespace": namespace, "lifetime": "detached", "get_if_exists": True,
            "resources": {HEAD_RESOURCE: 0.001}}
