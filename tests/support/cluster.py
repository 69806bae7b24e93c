"""Looking at what exists in the Ray cluster, the way an operator would."""
from __future__ import annotations

import ray

from core import ids


def live_session_groups(namespace: str | None = None) -> set[str]:
    """Session ids that own a placement group that is not removed (of one deployment, or of all)."""
    out = set()
    for info in ray.util.placement_group_table().values():
        sid = ids.session_of_placement_group(info.get("name") or "", namespace)
        if sid and info.get("state") != "REMOVED":
            out.add(sid)
    return out


def live_session_workers(namespace: str) -> set[str]:
    out = set()
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry.get("namespace") == namespace:
            sid = ids.session_of_worker(entry["name"])
            if sid:
                out.add(sid)
    return out


def worker_handle(namespace: str, session_id: str):
    return ray.get_actor(ids.worker_name(session_id), namespace=namespace)


def scheduler_handle(namespace: str):
    from actors import names

    return ray.get_actor(names.SCHEDULER, namespace=namespace)


def log_files_containing(text: str) -> list[str]:
    """The local Ray session's log files (every worker's stdout/stderr) in which ``text`` occurs."""
    import pathlib

    node = ray._private.worker._global_node
    assert node is not None, "not connected to a local Ray"
    logs = pathlib.Path(node.get_logs_dir_path())
    return [p.name for p in logs.glob("*") if p.is_file() and text.encode() in p.read_bytes()]
