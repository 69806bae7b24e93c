"""Identifiers: ``<prefix>_<ULID>`` (SPEC), and the deterministic Ray names derived from a session id."""
from __future__ import annotations

from ulid import ULID

SESSION = "sess"
AVATAR = "avat"
ACCOUNT = "acct"
API_KEY = "key"
PACK = "pack"
WEBHOOK = "whk"
WEBHOOK_MESSAGE = "msg"
WEBHOOK_DELIVERY = "dlv"


def new_id(prefix: str) -> str:
    return f"{prefix}_{ULID()}"


def has_prefix(value: str, prefix: str) -> bool:
    """True when ``value`` looks like ``<prefix>_<26-char ULID>``."""
    head, sep, tail = value.partition("_")
    return bool(sep) and head == prefix and len(tail) == 26 and tail.isalnum()


# Deterministic names of a session's long-lived Ray resources, so a restarted scheduler can diff
# "should exist" (the database) against "exists" (the cluster) and remove leaks. Actor names are
# namespaced by Ray; placement group names are cluster-wide, so they carry the namespace themselves
# (two deployments sharing a cluster must never take each other's groups for orphans).
WORKER_PREFIX = "worker-"
PLACEMENT_PREFIX = "sess-"


def worker_name(session_id: str) -> str:
    return f"{WORKER_PREFIX}{session_id}"


def placement_group_name(session_id: str, namespace: str) -> str:
    return f"{namespace}:{PLACEMENT_PREFIX}{session_id}"


def session_of_worker(name: str) -> str | None:
    """The session id in a worker actor's name; None for names that are not ours."""
    return _after(name, WORKER_PREFIX)


def session_of_placement_group(name: str, namespace: str | None) -> str | None:
    """The session id in a placement group's name, if the group belongs to ``namespace`` (any
    deployment's when ``namespace`` is None); None for other names."""
    ns, sep, rest = name.rpartition(":")
    if not sep or (namespace is not None and ns != namespace):
        return None
    return _after(rest, PLACEMENT_PREFIX)


def _after(name: str, prefix: str) -> str | None:
    if name.startswith(prefix) and has_prefix(name[len(prefix):], SESSION):
        return name[len(prefix):]
    return None
